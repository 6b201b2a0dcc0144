//go:build linux && labbench

package bench

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	cebpf "github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/dataplane/ebpf"
)

// TestEBPFPacketCost measures what the eBPF datapath costs per packet on
// the established path: with the kernel's BPF run-time statistics on, it
// pushes iperf3 traffic from the client pod to the server pod through the
// eBPF backend holding dptest.RulesPolicy(n) and divides the programs' run
// time by their run count. The number does not depend on throughput, so
// it is far less noisy than iperf3 on a loaded machine. It runs only with
// BULKHEAD_BENCH=1.
//
// BULKHEAD_BENCH_RULES (default 10000), BULKHEAD_BENCH_ROUNDS (default
// 5) and BULKHEAD_BENCH_IPERF_SECONDS (default 2) change the run.
func TestEBPFPacketCost(t *testing.T) {
	if os.Getenv("BULKHEAD_BENCH") == "" {
		t.Skip("a benchmark: set BULKHEAD_BENCH=1")
	}
	rules, rounds, seconds := envCount(t, "BULKHEAD_BENCH_RULES", 10000), envCount(t, "BULKHEAD_BENCH_ROUNDS", 5), envCount(t, "BULKHEAD_BENCH_IPERF_SECONDS", 2)
	stats, err := cebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatalf("enabling BPF statistics: %v", err)
	}
	defer stats.Close()
	e := newDPEnv(t, dpConfig{Kind: kindEBPF, Rules: rules})
	if err := e.checkFlows(); err != nil {
		t.Fatal(err)
	}
	read := func() map[string]ebpf.ProgramStats {
		ps, err := e.ebpf.ProgramStats()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]ebpf.ProgramStats{}
		for _, p := range ps {
			m[p.Name] = p
		}
		return m
	}
	names := []string{"from_pod", "to_pod"}
	per := map[string][]float64{}
	var runs []float64
	for r := 0; r < rounds; r++ {
		before := read()
		if _, err := e.iperf(seconds); err != nil {
			t.Fatal(err)
		}
		after := read()
		var n uint64
		for _, name := range names {
			dn := after[name].RunCount - before[name].RunCount
			dt := after[name].Runtime - before[name].Runtime
			if dn == 0 {
				t.Fatalf("round %d: %s did not run (BPF statistics off?)", r, name)
			}
			per[name] = append(per[name], float64(dt.Nanoseconds())/float64(dn))
			n += dn
		}
		runs = append(runs, float64(n))
	}
	commit, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	load, _ := os.ReadFile("/proc/loadavg")
	var b strings.Builder
	fmt.Fprintf(&b, "commit %s, %d rules, %d rounds of iperf3 -t %d, load average at the end: %s\n", strings.TrimSpace(string(commit)), rules, rounds, seconds, strings.TrimSpace(string(load)))
	for _, name := range names {
		s := summarize(per[name])
		fmt.Fprintf(&b, "%-9s ns/run median %.1f (IQR %.1f–%.1f, min–max %.1f–%.1f)\n", name, s.med, s.q1, s.q3, s.min, s.max)
	}
	fmt.Fprintf(&b, "program runs per round: median %s\n", strconv.FormatFloat(summarize(runs).med, 'f', 0, 64))
	t.Logf("\n%s", b.String())
}

//go:build linux && labbench

package bench

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDataplaneThroughput is the dataplane throughput and connection-rate
// benchmark of docs/benchmarks.md. It runs only with BULKHEAD_BENCH=1
// (hack/bench.sh sets it). Configurations: no filter; the nftables and
// eBPF backends and a linear legacy-iptables chain, each with 100, 1k and
// 10k rules of dptest.RulesPolicy. Every round measures each of them in
// turn (the starting configuration rotates): iperf3 throughput, the rate
// of short connections, and for filters the time from a revoking delta
// to refused new connections and to the cut of a busy established one.
// It prints a Markdown table of paired ratios against each round's
// no-filter run.
//
// BULKHEAD_BENCH_ROUNDS (default 10), BULKHEAD_BENCH_RULES (default
// 100,1000,10000), BULKHEAD_BENCH_KINDS (default
// nftables,ebpf,iptables-legacy), BULKHEAD_BENCH_IPERF_SECONDS (default
// 2), BULKHEAD_BENCH_WINDOW (conn-rate window, default 1s) and
// BULKHEAD_BENCH_OUT (also write the table to this file) change the run;
// BULKHEAD_BENCH_TCP_LOOSE=0 (an experiment) sets nf_conntrack_tcp_loose
// in the backends' node namespaces too.
func TestDataplaneThroughput(t *testing.T) {
	if os.Getenv("BULKHEAD_BENCH") == "" {
		t.Skip("a benchmark: set BULKHEAD_BENCH=1 (make bench does)")
	}
	p := dpParams{rounds: 10, iperfSeconds: 2, workers: 16, window: time.Second, enforce: true}
	rules := []int{100, 1000, 10000}
	kinds := []dpKind{kindNFT, kindEBPF, kindIptables}
	var err error
	if s := os.Getenv("BULKHEAD_BENCH_ROUNDS"); s != "" {
		if p.rounds, err = strconv.Atoi(s); err != nil || p.rounds < 1 {
			t.Fatalf("BULKHEAD_BENCH_ROUNDS=%q: want a positive integer", s)
		}
	}
	if s := os.Getenv("BULKHEAD_BENCH_IPERF_SECONDS"); s != "" {
		if p.iperfSeconds, err = strconv.Atoi(s); err != nil || p.iperfSeconds < 1 {
			t.Fatalf("BULKHEAD_BENCH_IPERF_SECONDS=%q: want a positive integer", s)
		}
	}
	if s := os.Getenv("BULKHEAD_BENCH_WINDOW"); s != "" {
		if p.window, err = time.ParseDuration(s); err != nil || p.window <= 0 {
			t.Fatalf("BULKHEAD_BENCH_WINDOW=%q: want a positive duration such as 2s", s)
		}
	}
	if s := os.Getenv("BULKHEAD_BENCH_RULES"); s != "" {
		rules = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 20 {
				t.Fatalf("BULKHEAD_BENCH_RULES=%q: %q is not a rule count of at least 20", s, f)
			}
			rules = append(rules, n)
		}
	}
	if s := os.Getenv("BULKHEAD_BENCH_KINDS"); s != "" {
		kinds = nil
		for _, f := range strings.Split(s, ",") {
			k := dpKind(strings.TrimSpace(f))
			switch k {
			case kindNFT, kindEBPF, kindIptables:
			default:
				t.Fatalf("BULKHEAD_BENCH_KINDS=%q: unknown kind %q (want %s, %s or %s)", s, f, kindNFT, kindEBPF, kindIptables)
			}
			kinds = append(kinds, k)
		}
	}
	commit, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	started := time.Now().UTC()
	var envs []*dpEnv
	for _, c := range dpConfigs(kinds, rules) {
		e := newDPEnv(t, c)
		if err := e.checkFlows(); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: programmed in %s (%s)", c, e.program.Round(time.Millisecond), e.detail)
		envs = append(envs, e)
	}
	run := runRounds(t, envs, p)
	for _, e := range envs {
		if err := e.checkFlows(); err != nil {
			t.Error(err)
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	out := fmt.Sprintf("Commit %s, started %s, took %s, load average at the end: %s\n"+
		"iperf3 %d s per run, conn rate: %d workers, %s window\n\n%s",
		strings.TrimSpace(string(commit)), started.Format(time.RFC3339), time.Since(started).Round(time.Second),
		strings.TrimSpace(string(load)), p.iperfSeconds, p.workers, p.window, run.table())
	t.Logf("\n%s", out)
	if f := os.Getenv("BULKHEAD_BENCH_OUT"); f != "" {
		if err := os.WriteFile(f, []byte(out), 0o644); err != nil {
			t.Errorf("writing %s: %v", f, err)
		}
	}
}

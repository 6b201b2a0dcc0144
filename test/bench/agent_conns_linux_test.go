//go:build linux && labbench

package bench

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/lab"
)

// connsScenario: app/client on node 1, app/server on node 2.
const connsScenario = `apiVersion: v1
kind: Namespace
metadata: {name: app, labels: {team: app}}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: app, labels: {app: client}}
spec:
  containers: [{name: c, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: app, labels: {app: server}}
spec:
  containers: [{name: c, ports: [{containerPort: 80}]}]
`

const holdPort = 7001

// TestAgentConnections measures the agents' CPU and memory while they
// track many concurrent connections of a zone in Learn mode (every flow
// observed and reported). It runs only with BULKHEAD_BENCH=1: a 2-node
// lab on the nftables backend (BULKHEAD_BENCH_BACKEND to change), then
// BULKHEAD_BENCH_CONNS (default 10000) TCP connections from app/client
// to app/server, held for 20s. It reports, per agent, CPU time per
// second of wall clock idle, while opening and while holding, and RSS.
func TestAgentConnections(t *testing.T) {
	requireLabBench(t)
	conns := envCount(t, "BULKHEAD_BENCH_CONNS", 10000)
	// The server end of every connection lives in this process.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if need := uint64(conns + 1000); lim.Cur < need {
		lim.Cur = min(max(need, lim.Cur), lim.Max)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < need {
			t.Fatalf("RLIMIT_NOFILE %d/%d is below the %d descriptors needed (%v)", lim.Cur, lim.Max, need, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	l := upLab(ctx, t, connsScenario, 2, "--controller-arg=--suggest")
	st, c, bulkhead, state := l.State, l.Client, l.Bulkhead, l.Dir
	zone := &v1alpha1.Zone{ObjectMeta: metav1.ObjectMeta{Name: "learning"}, Spec: v1alpha1.ZoneSpec{Mode: v1alpha1.ZoneModeLearn,
		Pods: &v1alpha1.ZonePods{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "app"}}}}}
	if err := c.Create(ctx, zone); err != nil {
		t.Fatal(err)
	}
	client, _ := st.Plan.Pod("app/client")
	server, _ := st.Plan.Pod("app/server")
	hold, err := lab.ServeHold(server.Netns, ":"+strconv.Itoa(holdPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hold.Close() })
	var agents []string
	for _, n := range st.Plan.Nodes {
		agents = append(agents, "agent-"+n.Name)
	}
	sample := func() map[string]procSample {
		m := map[string]procSample{}
		for _, a := range agents {
			s, err := readProc(st.Processes[a].PID)
			if err != nil {
				t.Fatalf("%s: %v", a, err)
			}
			m[a] = s
		}
		return m
	}
	window := func(name string, d time.Duration, f func()) {
		s0, t0 := sample(), time.Now()
		if f != nil {
			f()
		}
		if rest := d - time.Since(t0); rest > 0 {
			time.Sleep(rest)
		}
		s1, wall := sample(), time.Since(t0)
		for _, a := range agents {
			cpu := s1[a].cpu - s0[a].cpu
			t.Logf("%-12s %-28s wall %6.1fs  cpu %6.2fs (%5.1f%% of one core)  RSS %6.1f MiB (peak %6.1f MiB)",
				name, a, wall.Seconds(), cpu.Seconds(), 100*cpu.Seconds()/wall.Seconds(), float64(s1[a].rss)/(1<<20), float64(s1[a].hwm)/(1<<20))
		}
	}
	time.Sleep(5 * time.Second) // first zone refresh and a few idle reports
	window("idle", 10*time.Second, nil)
	// The client end runs in `bulkhead lab connect`, so that this
	// process holds only the server's descriptors.
	var connOut bytes.Buffer
	connect := exec.CommandContext(ctx, bulkhead, "lab", "connect", "--state-dir", state, "--from", client.Key(),
		netip.AddrPortFrom(server.IP, holdPort).String(), "-c", strconv.Itoa(conns), "--hold", "10m", "--timeout", "5s")
	connect.Stdout, connect.Stderr = &connOut, &connOut
	window("opening", 0, func() {
		if err := connect.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(90 * time.Second)
		for hold.Open() < conns && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if got := hold.Open(); got != conns {
			_ = connect.Process.Kill()
			_ = connect.Wait()
			t.Fatalf("server holds %d connections, want %d; lab connect:\n%s", got, conns, connOut.String())
		}
	})
	window(fmt.Sprintf("holding %d", conns), 20*time.Second, nil)
	window("closing", 10*time.Second, func() {
		_ = connect.Process.Signal(syscall.SIGTERM)
		_ = connect.Wait()
	})
	var sets v1alpha1.FlowEdgeSetList
	if err := c.List(ctx, &sets); err != nil {
		t.Fatal(err)
	}
	var conn int64
	for _, s := range sets.Items {
		for _, e := range s.Spec.Edges {
			if e.Port == holdPort && e.Verdict == v1alpha1.VerdictForwarded {
				conn += e.Connections
			}
		}
	}
	t.Logf("FlowEdgeSets count %d connections to the hold port (%d opened)", conn, conns)
}

type procSample struct {
	cpu      time.Duration // utime + stime
	rss, hwm int64         // bytes
}

// readProc reads a process's CPU time and resident memory from /proc.
func readProc(pid int) (procSample, error) {
	var s procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// Fields after the command name in parentheses; utime and stime
	// are fields 14 and 15 (1-based) of the whole line.
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stt, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	s.cpu = time.Duration(ut+stt) * time.Second / hz
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			s.rss = kb << 10
		case "VmHWM":
			s.hwm = kb << 10
		}
	}
	return s, nil
}

package lab

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// demoZonesWant is the matrix docs/policy-model.md gives for
// scenarios/demo-zones.yaml on the default set with 2 nodes and 2 pods per
// node (web/frontend-0, api/api-0, db/postgres-0, web/frontend-1), written
// by hand: web and pci are enforced zones, web may reach pci on TCP/5432
// only, intra-zone traffic is allowed (the default posture), and every
// other flow across a zone boundary, including to and from the unzoned
// api pod, is denied.
func demoZonesWant() []Entry {
	pods := []string{"api/api-0", "db/postgres-0", "web/frontend-0", "web/frontend-1"}
	zone := map[string]string{"db/postgres-0": "pci", "web/frontend-0": "web", "web/frontend-1": "web"}
	probes := []Probe{{"TCP", 80}, {"TCP", 5432}, {"TCP", 8080}, {"UDP", 53}}
	var out []Entry
	for _, s := range pods {
		for _, d := range pods {
			if s == d {
				continue
			}
			for _, p := range probes {
				allowed := false
				switch {
				case zone[s] == zone[d] && zone[s] != "": // same zone
					allowed = true
				case zone[s] == "web" && zone[d] == "pci" && p == (Probe{"TCP", 5432}):
					allowed = true
				}
				v := VerdictDenied
				if allowed {
					v = VerdictAllowed
				}
				out = append(out, Entry{Src: s, Dst: d, Protocol: p.Protocol, Port: p.Port, Allowed: allowed, Verdict: v})
			}
		}
	}
	SortEntries(out)
	return out
}

// TestLabEnforcesDemoZones runs the real controller and agents (built
// from this repository), applies the demo zones, waits for Enforced, and
// requires the probed matrix to equal the hand-written one. It then
// corrupts the agent's nft table on one node behind its back, requires the
// probe check to catch it, and waits for the agent's resync to repair it.
func TestLabEnforcesDemoZones(t *testing.T) {
	requireLabPrereqs(t)
	if _, err := exec.LookPath("go"); err != nil {
		testenv.SkipOrFail(t, "go is not on PATH to build the controller and agents")
	}
	name := uniqueLabName(t)
	dir := filepath.Join(t.TempDir(), "state")
	t.Cleanup(func() {
		if err := Down(name, dir, nil); err != nil {
			t.Errorf("cleanup down: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var progress strings.Builder
	st, err := Up(ctx, Options{StateDir: dir, Name: name, Nodes: 2, PodsPerNode: 2, Daemon: testDaemon, Progress: &progress})
	if err != nil {
		t.Fatalf("up: %v\nprogress:\n%s", err, progress.String())
	}
	if st.NoEnforcement != "" {
		testenv.SkipOrFail(t, "no enforcement: "+st.NoEnforcement)
	}
	c, err := Client(dir)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := LoadScenario(filepath.Join("scenarios", "demo-zones.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Apply(ctx, c, sc.Others)
	if err != nil {
		t.Fatal(err)
	}
	if err := WaitEnforced(ctx, c, res, 60*time.Second, func(string) {}); err != nil {
		t.Fatal(err)
	}
	want := demoZonesWant()
	got, err := ProbeLab(ctx, dir, nil, ProbeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d := CompareMatrices(want, got); d != "" {
		t.Fatalf("enforced demo zones:\n%s", d)
	}

	// Corrupt: flush every rule of the agent's table on node1 (which
	// hosts web/frontend-0 and db/postgres-0).
	node := NodeName(name, 1)
	if out, err := exec.Command("ip", "netns", "exec", node, "nft", "flush", "table", "inet", "bulkhead").CombinedOutput(); err != nil {
		t.Fatalf("corrupting the agent's table: %v\n%s", err, out)
	}
	got, err = ProbeLab(ctx, dir, nil, ProbeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d := CompareMatrices(want, got)
	if !strings.Contains(d, "web/frontend-0 -> db/postgres-0 TCP/80: want denied, got allowed") {
		t.Fatalf("the probe check did not catch the flushed table on %s:\n%s", node, d)
	}
	// The agent's periodic resync (30s by default) repairs the drift.
	deadline := time.Now().Add(90 * time.Second)
	for {
		got, err = ProbeLab(ctx, dir, nil, ProbeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if CompareMatrices(want, got) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not repair its table within 90s:\n%s", CompareMatrices(want, got))
		}
		time.Sleep(2 * time.Second)
	}

	var agents []Proc
	for role, p := range st.Processes {
		if strings.HasPrefix(role, "agent-") || role == "controller" {
			agents = append(agents, p)
		}
	}
	if len(agents) != 3 {
		t.Errorf("recorded %d controller and agent processes, want 3: %v", len(agents), st.Processes)
	}
	if err := Down(name, dir, nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range agents {
		if p.Alive() {
			t.Errorf("pid %d (%v) survived down", p.PID, p.Args)
		}
	}
	if left, _ := LabNetns(name); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
	if pins := LabPins(name); len(pins) > 0 {
		t.Errorf("pins left: %v", pins)
	}
}

package lab

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestProcStopsOnlyTheRecordedProcess(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	p, err := startDetached(cmd, filepath.Join(t.TempDir(), "sleep.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(time.Second) })
	if !p.Alive() {
		t.Fatal("a just-started process is not alive")
	}
	recycled := p
	recycled.StartTime++ // same PID, another process's start time
	if recycled.Alive() {
		t.Error("a PID with another start time counts as alive")
	}
	if err := recycled.Stop(time.Second); err != nil {
		t.Fatal(err)
	}
	if !p.Alive() {
		t.Fatal("stopping a recycled PID killed the process that now has it")
	}
	if err := p.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if p.Alive() {
		t.Error("the process survived Stop")
	}
	if err := p.Stop(time.Second); err != nil {
		t.Errorf("stopping a stopped process: %v", err)
	}
}

func TestStopOrderStopsAgentsFirstAndTheControlPlaneLast(t *testing.T) {
	got := stopOrder(map[string]Proc{
		"controlplane": {}, "probes": {}, "controller": {}, "agent-b": {}, "agent-a": {},
	})
	want := []string{"agent-a", "agent-b", "controller", "probes", "controlplane"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestOptionsValidateReportsEveryProblem(t *testing.T) {
	o := Options{StateDir: "relative", Name: "Bad-Name", Nodes: 0, PodsPerNode: 999, Backend: "iptables"}
	err := o.Validate()
	if err == nil {
		t.Fatal("invalid options passed")
	}
	for _, want := range []string{"lab name", "--nodes", "--pods-per-node", "--backend", "--state-dir"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	ok := Options{StateDir: "/run/x", Name: "lab", Nodes: 3, PodsPerNode: 2, Backend: "ebpf"}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid options refused: %v", err)
	}
}

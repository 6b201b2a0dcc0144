package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/bulkhead-dev/bulkhead/internal/lab"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// TestQuarantineNewPod: a Quarantine with a label selector exists before
// any pod matches; a pod created afterwards with a matching label must be
// isolated from its very first packet (issue 7): lab.AddPod, playing the
// CNI, brings the pod's network up only after the node's agent admitted
// the endpoint with its policy programmed. The first probe out of the pod
// must be refused, isolation must hold in both directions, and a
// non-matching new pod must keep connectivity from its first probe.
func TestQuarantineNewPod(t *testing.T) {
	testenv.RequireRoot(t)
	if m := lab.ControlPlaneAssetsMissing(); m != "" {
		testenv.SkipOrFail(t, "control plane: "+m+"; run hack/controlplane.sh")
	}
	for _, backend := range backends(t) {
		t.Run(backend, func(t *testing.T) { runQuarantineNewPod(t, backend) })
	}
}

func runQuarantineNewPod(t *testing.T, backend string) {
	dir := t.TempDir()
	scenario := filepath.Join(dir, "quarantine.yaml")
	if err := os.WriteFile(scenario, []byte(quarantineScenario), 0o600); err != nil {
		t.Fatal(err)
	}
	labName := uniqueName(t)
	bin := filepath.Join(binDir, "bulkhead")
	state := filepath.Join(dir, "lab")
	kubeconfig := filepath.Join(state, "kubeconfig")
	labDownOnCleanup(t, bin, state, labName)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cli(ctx, t, bin, "lab", "up", "--state-dir", state, "--name", labName, "--nodes", "2", "--backend", backend, "--scenario", scenario)
	st, err := lab.LoadState(state)
	if err != nil {
		t.Fatal(err)
	}
	if st.NoEnforcement != "" {
		t.Fatalf("the lab runs without enforcement: %s", st.NoEnforcement)
	}
	clientPod, _ := st.Plan.Pod(client)
	target := netip.AddrPortFrom(clientPod.IP, 80)

	cli(ctx, t, bin, "quarantine", "-l", "app=compromised", "-n", "app", "--name", "q-new", "--kubeconfig", kubeconfig,
		"--reason", "e2e: new pod window") // no --wait: with no matching pod it stays Pending

	spec := corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{{ContainerPort: 80}}}}}
	start := time.Now()
	bad, err := lab.AddPod(ctx, state, lab.PodInput{Namespace: "app", Name: "newbie",
		Labels: map[string]string{"app": "compromised"}, Spec: spec}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Since(start)
	if id, err := lab.ProbeAddr(bad.Netns, target, 300*time.Millisecond); err == nil {
		t.Fatalf("%s: the first probe out of the new quarantined pod reached %s (AddPod returned after %s)", backend, id, created.Round(time.Millisecond))
	}
	if id, err := lab.ProbeAddr(clientPod.Netns, netip.AddrPortFrom(bad.IP, 80), 300*time.Millisecond); err == nil {
		t.Fatalf("%s: the first probe into the new quarantined pod was answered by %s", backend, id)
	}
	t.Logf("%s: new quarantined pod admitted and running after %s; its first probes were refused", backend, created.Round(time.Millisecond))

	// Isolation must now hold: out of and into the pod, repeatedly.
	time.Sleep(500 * time.Millisecond)
	for i := 0; i < 5; i++ {
		if id, err := lab.ProbeAddr(bad.Netns, target, 300*time.Millisecond); err == nil {
			t.Errorf("probe %d: quarantined new pod reached %s", i, id)
		}
		if id, err := lab.ProbeAddr(clientPod.Netns, netip.AddrPortFrom(bad.IP, 80), 300*time.Millisecond); err == nil {
			t.Errorf("probe %d: client reached the quarantined new pod (%s)", i, id)
		}
	}

	good, err := lab.AddPod(ctx, state, lab.PodInput{Namespace: "app", Name: "fresh",
		Labels: map[string]string{"app": "fresh"}, Spec: spec}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := lab.ProbeAddr(good.Netns, target, 2*time.Second)
	if err != nil {
		t.Errorf("the first probe of a new pod outside the quarantine selector failed: %v", fmt.Errorf("probe: %w", err))
	} else if id != client {
		t.Errorf("the fresh pod's probe was answered by %s, want %s", id, client)
	}

	// Fail closed: with the controller down, no agent can learn a new
	// pod's policy, so AddPod must refuse within its bound and leave the
	// pod's network down.
	st, err = lab.LoadState(state)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Processes["controller"].Stop(5 * time.Second); err != nil {
		t.Fatalf("stopping the controller: %v", err)
	}
	defer func(d time.Duration) { lab.AdmitTimeout = d }(lab.AdmitTimeout)
	lab.AdmitTimeout = 2 * time.Second
	start = time.Now()
	orphan, err := lab.AddPod(ctx, state, lab.PodInput{Namespace: "app", Name: "orphan",
		Labels: map[string]string{"app": "fresh"}, Spec: spec}, 1, nil)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "fail closed") || !strings.Contains(err.Error(), "no controller is connected") {
		t.Fatalf("AddPod with the controller down = %v, want a fail-closed error naming the unreachable controller", err)
	}
	if took > lab.AdmitTimeout+5*time.Second {
		t.Errorf("the refusal took %s, want about %s", took, lab.AdmitTimeout)
	}
	t.Logf("%s: controller down: AddPod refused after %s: %v", backend, took.Round(time.Millisecond), err)
	if id, err := lab.ProbeAddr(orphan.Netns, target, 300*time.Millisecond); err == nil {
		t.Errorf("a pod that was not admitted reached %s", id)
	}
}

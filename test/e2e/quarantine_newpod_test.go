package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/bulkhead-dev/bulkhead/internal/lab"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// TestQuarantineNewPod: a Quarantine with a label selector exists before
// any pod matches; a pod created afterwards with a matching label must be
// isolated (issue 7). The test records the window from the start of the
// pod's creation to the first refused probe out of it, and requires that
// isolation then holds in both directions while a non-matching new pod
// keeps connectivity.
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
	t.Cleanup(func() {
		if out, err := exec.Command(bin, "lab", "down", "--state-dir", state, "--name", labName).CombinedOutput(); err != nil {
			t.Errorf("lab down: %v\n%s", err, out)
		}
		if left, _ := lab.LabNetns(labName); len(left) > 0 {
			t.Errorf("lab down left namespaces: %v", left)
		}
	})
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
	var firstRefused time.Duration
	allowed := 0
	for time.Since(start) < 30*time.Second {
		if _, err := lab.ProbeAddr(bad.Netns, target, 200*time.Millisecond); err != nil {
			firstRefused = time.Since(start)
			break
		}
		allowed++
	}
	if firstRefused == 0 {
		t.Fatalf("the new quarantined pod could still connect 30s after its creation (%d probes allowed)", allowed)
	}
	t.Logf("%s: new pod registered after %s; first refused probe at %s after creation started; %d probes got through before",
		backend, created.Round(time.Millisecond), firstRefused.Round(time.Millisecond), allowed)

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
	var last error
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var id string
		if id, last = lab.ProbeAddr(good.Netns, target, 300*time.Millisecond); last == nil {
			if id != client {
				t.Errorf("the fresh pod's probe was answered by %s, want %s", id, client)
			}
			break
		}
	}
	if last != nil {
		t.Errorf("a new pod outside the quarantine selector cannot connect: %v", fmt.Errorf("probe: %w", last))
	}
}

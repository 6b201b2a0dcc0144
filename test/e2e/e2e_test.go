package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/lab"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// catalog lists the engine scenarios the lab replays, chosen to cover
// every tier and action the datapath implements: NetworkPolicy isolation,
// peers, ports and protocols, zones with their modes, zone policies, and
// quarantine. Set BULKHEAD_E2E_ALL=1 to replay every scenario.
var catalog = []string{
	"default-deny-ingress",
	"default-deny-egress",
	"allow-from-one-namespace",
	"combined-selectors-are-and",
	"ipblock-except",
	"named-port-egress-resolves-per-destination",
	"endport-range",
	"sctp",
	"union-of-policies",
	"zone-boundary",
	"zone-policy-accept",
	"zone-policy-pass-defers-to-networkpolicy",
	"zone-audit-mode",
	"zone-intra-deny-baseline",
	"quarantine-isolates",
	"quarantine-allow-list-is-final",
}

var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		return m.Run() // every test skips (or fails in CI) with its reason
	}
	dir, err := os.MkdirTemp("", "bulkhead-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	root := testenv.RepoRoot()
	build := exec.Command(filepath.Join(root, "hack", "build.sh"), dir)
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building binaries:", err)
		return 1
	}
	binDir = dir
	return m.Run()
}

func TestScenarioMatrices(t *testing.T) {
	testenv.RequireRoot(t)
	if m := lab.ControlPlaneAssetsMissing(); m != "" {
		testenv.SkipOrFail(t, "control plane: "+m+"; run hack/controlplane.sh")
	}
	names := catalog
	if os.Getenv("BULKHEAD_E2E_ALL") != "" {
		names = allScenarios(t)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			for _, backend := range backends(t) {
				t.Run(backend, func(t *testing.T) { runScenario(t, name, backend) })
			}
		})
	}
}

// backends are the dataplane backends the agent offers; each scenario runs
// on every one of them.
func backends(t *testing.T) []string {
	out := []string{"nftables"}
	if _, err := os.Stat(filepath.Join(testenv.RepoRoot(), "dataplane", "ebpf")); err == nil &&
		os.Getenv("BULKHEAD_E2E_BACKENDS") != "nftables" {
		out = append(out, "ebpf")
	}
	return out
}

func runScenario(t *testing.T, name, backend string) {
	files := scenarioFiles(t, name)
	labName := uniqueName(t)
	state := filepath.Join(t.TempDir(), "lab")
	bulkhead := filepath.Join(binDir, "bulkhead")
	labDownOnCleanup(t, bulkhead, state, labName)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	up := []string{"lab", "up", "--state-dir", state, "--name", labName, "--nodes", "2", "--backend", backend}
	for _, f := range files {
		up = append(up, "--scenario", f)
	}
	cli(ctx, t, bulkhead, up...)
	if st, err := lab.LoadState(state); err != nil {
		t.Fatal(err)
	} else if st.NoEnforcement != "" {
		t.Fatalf("the lab runs without enforcement: %s", st.NoEnforcement)
	}
	apply := []string{"lab", "apply", "--state-dir", state, "--wait", "--timeout", "60s"}
	for _, f := range files {
		apply = append(apply, "-f", f)
	}
	cli(ctx, t, bulkhead, apply...)

	kubeconfig := filepath.Join(state, "kubeconfig")
	var want []lab.Entry
	if err := json.Unmarshal(cli(ctx, t, bulkhead, "analyze", "--kubeconfig", kubeconfig, "-o", "json"), &want); err != nil {
		t.Fatalf("analyze output: %v", err)
	}
	if len(want) == 0 {
		t.Fatal("analyze returned an empty matrix")
	}
	// NetworkPolicies carry no status, so convergence is observed: the
	// matrix must match within a bound after the CRDs report Enforced.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got []lab.Entry
		if err := json.Unmarshal(cli(ctx, t, bulkhead, "lab", "probe", "--state-dir", state, "-o", "json"), &got); err != nil {
			t.Fatalf("probe output: %v", err)
		}
		diff := lab.CompareMatrices(want, got)
		if diff == "" {
			denied := 0
			for _, e := range want {
				if !e.Allowed {
					denied++
				}
			}
			t.Logf("%d cells agree (%d denied)", len(want), denied)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("probed matrix (%s backend) differs from bulkhead analyze:\n%s", backend, diff)
		}
		time.Sleep(2 * time.Second)
	}
}

func cli(ctx context.Context, t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("bulkhead %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.Bytes()
}

// scenarioFiles returns the scenario's YAML and the bases its .expected
// file names.
func scenarioFiles(t *testing.T, name string) []string {
	t.Helper()
	dir := filepath.Join(testenv.RepoRoot(), "internal", "policy", "testdata")
	files := []string{}
	exp, err := os.ReadFile(filepath.Join(dir, "scenarios", name+".expected"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(exp), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && f[0] == "base" {
			for _, b := range f[1:] {
				files = append(files, filepath.Join(dir, "bases", b+".yaml"))
			}
		}
	}
	return append(files, filepath.Join(dir, "scenarios", name+".yaml"))
}

func allScenarios(t *testing.T) []string {
	m, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "internal", "policy", "testdata", "scenarios", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range m {
		out = append(out, strings.TrimSuffix(filepath.Base(f), ".yaml"))
	}
	sort.Strings(out)
	return out
}

// labDownOnCleanup registers the lab's teardown: on failure it first logs
// the lab's diagnostics (processes, generation metrics, log tails), then
// runs `lab down` and checks that no namespace of the lab is left.
func labDownOnCleanup(t *testing.T, bulkhead, state, labName string) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("lab diagnostics:\n%s", lab.Diagnostics(state, 40))
		}
		if out, err := exec.Command(bulkhead, "lab", "down", "--state-dir", state, "--name", labName).CombinedOutput(); err != nil {
			t.Errorf("lab down: %v\n%s", err, out)
		}
		if left, _ := lab.LabNetns(labName); len(left) > 0 {
			t.Errorf("lab down left namespaces: %v", left)
		}
	})
}

func uniqueName(t *testing.T) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "e" + hex.EncodeToString(b)
}

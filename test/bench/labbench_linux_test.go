//go:build linux && labbench

package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/bulkhead-dev/bulkhead/internal/lab"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// requireLabBench skips a lab benchmark unless BULKHEAD_BENCH is set
// (hack/bench.sh sets it), and skips (fails in CI) without root or the
// control-plane binaries.
func requireLabBench(t *testing.T) {
	t.Helper()
	if os.Getenv("BULKHEAD_BENCH") == "" {
		t.Skip("a benchmark: set BULKHEAD_BENCH=1 (make bench does)")
	}
	testenv.RequireRoot(t)
	ctrllog.SetLogger(logr.Discard())
	if m := lab.ControlPlaneAssetsMissing(); m != "" {
		testenv.SkipOrFail(t, "control plane: "+m+"; run hack/controlplane.sh")
	}
}

// envCount returns the positive integer in environment variable name, or
// def when it is unset; anything else fails the test naming the variable.
func envCount(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// benchBackend returns BULKHEAD_BENCH_BACKEND: nftables (the default) or
// ebpf; anything else fails the test.
func benchBackend(t *testing.T) string {
	t.Helper()
	switch b := os.Getenv("BULKHEAD_BENCH_BACKEND"); b {
	case "":
		return "nftables"
	case "nftables", "ebpf":
		return b
	default:
		t.Fatalf("BULKHEAD_BENCH_BACKEND=%q: want nftables or ebpf", b)
		return ""
	}
}

// benchLab is a running lab of a benchmark.
type benchLab struct {
	// Bulkhead is the CLI binary the lab was brought up with.
	Bulkhead string
	// Dir is the lab's state directory (--state-dir).
	Dir     string
	Backend string
	State   *lab.State
	Client  client.Client
}

// upLab builds the binaries with hack/build.sh, writes scenario, and
// brings up a lab of nodes nodes with a unique name on the backend of
// BULKHEAD_BENCH_BACKEND, passing extra arguments to `lab up`. The lab
// goes down when the test ends. A lab without enforcement fails the
// test: it would measure nothing.
func upLab(ctx context.Context, t *testing.T, scenario string, nodes int, extra ...string) *benchLab {
	t.Helper()
	backend := benchBackend(t)
	bin := t.TempDir()
	root := testenv.RepoRoot()
	build := exec.CommandContext(ctx, filepath.Join(root, "hack", "build.sh"), bin)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building binaries: %v\n%s", err, out)
	}
	l := &benchLab{Bulkhead: filepath.Join(bin, "bulkhead"), Backend: backend}
	dir := t.TempDir()
	scenarioFile := filepath.Join(dir, "scenario.yaml")
	if err := os.WriteFile(scenarioFile, []byte(scenario), 0o600); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := "b" + hex.EncodeToString(b)
	l.Dir = filepath.Join(dir, "lab")
	t.Cleanup(func() {
		if out, err := exec.Command(l.Bulkhead, "lab", "down", "--state-dir", l.Dir, "--name", name).CombinedOutput(); err != nil {
			t.Errorf("lab down: %v\n%s", err, out)
		}
	})
	args := append([]string{"lab", "up", "--state-dir", l.Dir, "--name", name, "--nodes", strconv.Itoa(nodes),
		"--backend", backend, "--scenario", scenarioFile}, extra...)
	var out bytes.Buffer
	up := exec.CommandContext(ctx, l.Bulkhead, args...)
	up.Stdout, up.Stderr = &out, &out
	if err := up.Run(); err != nil {
		t.Fatalf("bulkhead %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	st, err := lab.LoadState(l.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.NoEnforcement != "" {
		t.Fatalf("the lab runs without enforcement: %s", st.NoEnforcement)
	}
	l.State = st
	if l.Client, err = lab.Client(l.Dir); err != nil {
		t.Fatal(err)
	}
	return l
}

//go:build linux

package ebpf

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	cebpf "github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// The same table with classic clsact filters instead of TCX links.
func TestDataplaneTableClsact(t *testing.T) {
	if testing.Short() {
		t.Skip("the clsact table repeats the TCX one; skipped in -short")
	}
	dptest.Run(t, func(t *testing.T, nsPath string) dataplane.Dataplane {
		b := newBackend(t, nsPath, Options{Attach: AttachClsact})
		return b
	})
}

func TestDriftInTheActiveBufferIsRepaired(t *testing.T) {
	topo := dptest.NewTopology(t, 2)
	a, b := topo.Pods[0], topo.Pods[1]
	be := newBackend(t, topo.NodePath, Options{})
	np := topo.DenyAToB()
	if err := be.Sync(context.Background(), np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	// Someone empties the active policy map behind the backend's back.
	pol := be.buffers(be.active).pol
	var keys [][]byte
	it := pol.Iterate()
	var k, v []byte
	for it.Next(&k, &v) {
		keys = append(keys, append([]byte(nil), k...))
	}
	if err := it.Err(); err != nil || len(keys) == 0 {
		t.Fatalf("reading the active policy map: %d keys, %v", len(keys), err)
	}
	for _, k := range keys {
		if err := pol.Delete(k); err != nil && !errors.Is(err, cebpf.ErrKeyNotExist) {
			t.Fatalf("deleting: %v", err)
		}
	}
	if err := dptest.ProbeTCP(a, b.IP4, 80); err != nil {
		t.Fatalf("drift did not open a -> b (the test does not test anything): %v", err)
	}
	if err := be.Sync(context.Background(), np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if st := be.Stats(); st.DriftRepairs != 1 {
		t.Errorf("DriftRepairs = %d, want 1", st.DriftRepairs)
	}
	if err := dptest.ProbeTCP(a, b.IP4, 80); err == nil {
		t.Error("a -> b still allowed after the repairing Sync")
	}
	// And the same policy once more writes nothing.
	if err := be.Sync(context.Background(), np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if st := be.Stats(); st.LastWrites != 0 || st.DriftRepairs != 1 {
		t.Errorf("a repeated Sync wrote %d entries (drift repairs %d)", st.LastWrites, st.DriftRepairs)
	}
}

func TestMapsOfAnOldLayoutAreRemovedAfterTheFirstSync(t *testing.T) {
	topo := dptest.NewTopology(t, 1)
	pinDir := filepath.Join(DefaultPinRoot, filepath.Base(topo.NodePath)+"-layout")
	old := filepath.Join(pinDir, "v0")
	if err := os.MkdirAll(old, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(pinDir) })
	// A pinned map of the old layout.
	m, err := cebpf.NewMap(&cebpf.MapSpec{Type: cebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Pin(filepath.Join(old, "ct")); err != nil {
		t.Fatal(err)
	}
	m.Close()
	be := newBackend(t, topo.NodePath, Options{PinDir: pinDir})
	if err := be.Sync(context.Background(), topo.Policy()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old layout %s still there: %v", old, err)
	}
	if _, err := os.Stat(filepath.Join(pinDir, LayoutVersion, "ct")); err != nil {
		t.Errorf("current layout's conntrack map not pinned: %v", err)
	}
}

func TestEmptyPolicyAfterRulesAllowsEverything(t *testing.T) {
	topo := dptest.NewTopology(t, 2)
	a, b := topo.Pods[0], topo.Pods[1]
	be := newBackend(t, topo.NodePath, Options{})
	if err := be.Sync(context.Background(), topo.DenyAToB()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if err := be.Sync(context.Background(), &ir.NodePolicy{Node: topo.NodeNS}); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if err := dptest.ProbeTCP(a, b.IP4, 80); err != nil {
		t.Errorf("a -> b refused with no endpoints in the policy: %v", err)
	}
	if st := be.Stats(); st.Attached != 0 {
		t.Errorf("%d interfaces still attached", st.Attached)
	}
}

func TestClsactFiltersAreInstalledAndRemoved(t *testing.T) {
	topo := dptest.NewTopology(t, 2)
	a, b := topo.Pods[0], topo.Pods[1]
	be := newBackend(t, topo.NodePath, Options{Attach: AttachClsact})
	if err := be.Sync(context.Background(), topo.DenyAToB()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if st := be.Stats(); !st.Clsact || st.Attached != 2 {
		t.Errorf("stats %+v: want 2 interfaces on clsact", st)
	}
	if n := dptest.TCXPrograms(t, topo.NodePath, b.HostIf); n != 0 {
		t.Errorf("%d TCX programs on %s in clsact mode", n, b.HostIf)
	}
	for _, dir := range []string{"ingress", "egress"} {
		out := tcFilters(t, topo.NodeNS, b.HostIf, dir)
		if !strings.Contains(out, clsactPrefix+"from_pod") && !strings.Contains(out, clsactPrefix+"to_pod") {
			t.Errorf("no bulkhead filter on %s %s:\n%s", b.HostIf, dir, out)
		}
	}
	if err := dptest.ProbeTCP(a, b.IP4, 80); err == nil {
		t.Error("a -> b allowed while denied")
	}
	if err := be.Uninstall(context.Background()); err != nil {
		t.Fatalf("Uninstall: %v", err)
	}
	for _, dir := range []string{"ingress", "egress"} {
		if out := tcFilters(t, topo.NodeNS, b.HostIf, dir); strings.Contains(out, clsactPrefix) {
			t.Errorf("bulkhead filter left on %s %s after Uninstall:\n%s", b.HostIf, dir, out)
		}
	}
	if err := dptest.ProbeTCP(a, b.IP4, 80); err != nil {
		t.Errorf("a -> b refused after Uninstall: %v", err)
	}
}

func tcFilters(t *testing.T, ns, dev, dir string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "tc", "filter", "show", "dev", dev, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("tc filter show: %v: %s", err, out)
	}
	return string(out)
}

// TestDetachedLinksAreRepairedByTheResync: a policy delta on unchanged
// interfaces does not reconcile links, but the next Sync of an unchanged
// policy (the periodic resync) re-attaches a link someone removed.
func TestDetachedLinksAreRepairedByTheResync(t *testing.T) {
	topo := dptest.NewTopology(t, 2)
	a, b := topo.Pods[0], topo.Pods[1]
	be := newBackend(t, topo.NodePath, Options{Attach: AttachTCX})
	np := topo.DenyAToB()
	ctx := context.Background()
	if err := be.Sync(ctx, np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if err := dptest.ProbeTCP(a, b.IP4, 80); err == nil {
		t.Fatal("a -> b allowed while denied")
	}
	// Someone removes b's ingress link.
	pin := filepath.Join(be.linksDir(), pinName(be.ifindex[b.Name], "to_pod"))
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		t.Fatalf("loading %s: %v", pin, err)
	}
	if err := l.Unpin(); err != nil {
		t.Fatalf("unpinning: %v", err)
	}
	l.Close()
	if err := dptest.ProbeTCP(a, b.IP4, 80); err != nil {
		t.Fatalf("a -> b still denied without the link (the test tests nothing): %v", err)
	}
	// A delta: one more address in the set.
	np.Sets[0].Prefixes = append(np.Sets[0].Prefixes, netip.MustParsePrefix("10.244.0.250/32"))
	if err := be.Sync(ctx, np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	// The resync.
	if err := be.Sync(ctx, np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if err := dptest.ProbeTCP(a, b.IP4, 80); err == nil {
		t.Error("a -> b allowed after the resync: the link was not repaired")
	}
	if _, err := os.Stat(pin); err != nil {
		t.Errorf("pin %s not re-created: %v", pin, err)
	}
}

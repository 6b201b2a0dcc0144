//go:build linux

package ebpf

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
)

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// TestRouteLookupsAreCachedAndFollowARecreatedVeth checks that a Sync
// looks up only the endpoints whose host route changed, and that a pod
// whose veth was re-created is found on its new interface, attached and
// enforced at once.
func TestRouteLookupsAreCachedAndFollowARecreatedVeth(t *testing.T) {
	topo := dptest.NewTopology(t, 3)
	be := newBackend(t, topo.NodePath, Options{})
	np := topo.DenyAToB()
	ctx := context.Background()
	if err := be.Sync(ctx, np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if got := be.Stats().LastRouteLookups; got != 6 {
		t.Errorf("first Sync: %d route lookups, want 6 (3 pods, 2 IPs each)", got)
	}
	if err := be.Sync(ctx, np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if got := be.Stats().LastRouteLookups; got != 0 {
		t.Errorf("second Sync: %d route lookups, want 0", got)
	}
	a, b := topo.Pods[0], topo.Pods[1]
	old := be.ifindex[b.Name]
	// Re-create pod b's veth: a new interface and new host routes.
	node := topo.NodeNS
	ipCmd(t, "-n", node, "link", "del", b.HostIf)
	ipCmd(t, "-n", node, "link", "add", b.HostIf, "type", "veth", "peer", "name", "eth0", "netns", b.NSName)
	ipCmd(t, "-n", node, "link", "set", b.HostIf, "up")
	ipCmd(t, "-n", b.NSName, "link", "set", "eth0", "up")
	ipCmd(t, "-n", b.NSName, "addr", "add", b.IP4.String()+"/32", "dev", "eth0")
	ipCmd(t, "-n", b.NSName, "-6", "addr", "add", b.IP6.String()+"/128", "dev", "eth0", "nodad")
	ipCmd(t, "-n", b.NSName, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
	ipCmd(t, "-n", b.NSName, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
	ipCmd(t, "-n", node, "route", "add", b.IP4.String()+"/32", "dev", b.HostIf)
	ipCmd(t, "-n", node, "-6", "addr", "add", "fe80::1/64", "dev", b.HostIf, "nodad")
	ipCmd(t, "-n", b.NSName, "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")
	ipCmd(t, "-n", node, "-6", "route", "add", b.IP6.String()+"/128", "dev", b.HostIf)
	if err := be.Sync(ctx, np); err != nil {
		t.Fatalf("Sync after re-creating %s: %v", b.HostIf, err)
	}
	if got := be.Stats().LastRouteLookups; got != 2 {
		t.Errorf("Sync after re-creating b's veth: %d route lookups, want 2 (b's IPs)", got)
	}
	if now := be.ifindex[b.Name]; now == old || now == 0 {
		t.Fatalf("pod b on interface %d after re-creating its veth, was %d", now, old)
	}
	if got := be.Stats().Attached; got != 3 {
		t.Errorf("%d interfaces attached, want 3", got)
	}
	if err := dptest.ProbeTCP(a, b.IP4, 80); err == nil {
		t.Errorf("a -> b allowed on b's new veth, want denied")
	}
	if err := dptest.ProbeTCP(topo.Pods[2], b.IP4, 80); err != nil {
		t.Errorf("c -> b on b's new veth: %v, want allowed", err)
	}
}

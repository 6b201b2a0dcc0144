//go:build linux

package conntrack_test

import (
	"context"
	"net/netip"
	"os/exec"
	"testing"

	"github.com/mdlayher/netlink"
	ct "github.com/ti-mo/conntrack"

	"github.com/bulkhead-dev/bulkhead/dataplane/conntrack"
	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

func entries(t *testing.T, nsPath string, src, dst netip.Addr) int {
	t.Helper()
	h, err := netns.Open(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := ct.Dial(&netlink.Config{NetNS: int(h)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fs, err := c.Dump(nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range fs {
		if f.TupleOrig.IP.SourceAddress == src && f.TupleOrig.IP.DestinationAddress == dst {
			n++
		}
	}
	return n
}

func TestRevokeDeletesOnlyDeniedEntries(t *testing.T) {
	topo := dptest.NewTopology(t, 3)
	a, b, c := topo.Pods[0], topo.Pods[1], topo.Pods[2]
	// Conntrack only tracks a namespace's traffic once a hook there uses
	// it: a table of the test's own with one ct rule turns it on.
	for _, args := range [][]string{
		{"add", "table", "inet", "cttest"},
		{"add", "chain", "inet", "cttest", "c", "{ type filter hook forward priority 0 ; }"},
		{"add", "rule", "inet", "cttest", "c", "ct", "state", "established", "accept"},
	} {
		cmd := exec.Command("ip", append([]string{"netns", "exec", topo.NodeNS, "nft"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft %v: %v: %s", args, err, out)
		}
	}
	conns := []struct{ from, to *dptest.Pod }{{a, b}, {c, b}, {a, c}}
	for _, x := range conns {
		conn, err := dptest.DialTCP(x.from, x.to.IP4, 8080)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := dptest.Exchange(conn, dptest.ProbeTimeout); err != nil {
			t.Fatal(err)
		}
	}
	for _, x := range conns {
		if entries(t, topo.NodePath, x.from.IP4, x.to.IP4) == 0 {
			t.Fatalf("no conntrack entry %s -> %s before Revoke", x.from.Name, x.to.Name)
		}
	}
	np := topo.DenyAToB()
	// Only b is asked about: a -> c is untouched even if a policy of c
	// would deny it.
	np.Endpoints[2].Ingress.Tiers = np.Endpoints[1].Ingress.Tiers
	res, err := conntrack.Revoke(context.Background(), topo.NodePath, np, []string{b.Name})
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if res.Deleted < 1 {
		t.Errorf("Revoke deleted %d entries, want at least 1 (result %+v)", res.Deleted, res)
	}
	if n := entries(t, topo.NodePath, a.IP4, b.IP4); n != 0 {
		t.Errorf("%d entries a -> b remain", n)
	}
	if n := entries(t, topo.NodePath, c.IP4, b.IP4); n == 0 {
		t.Error("the allowed entry c -> b was deleted")
	}
	if n := entries(t, topo.NodePath, a.IP4, c.IP4); n == 0 {
		t.Error("the entry a -> c of an endpoint not asked about was deleted")
	}
	if _, err := conntrack.Revoke(context.Background(), topo.NodePath, np, []string{"ns/missing"}); err == nil {
		t.Error("Revoke accepted an unknown endpoint")
	}
}

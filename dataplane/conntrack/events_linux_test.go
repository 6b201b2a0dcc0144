//go:build linux

package conntrack_test

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/dataplane/conntrack"
	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/dataplane/nftables"
)

// TestWatchReportsExistingAndNewAcceptedConnections runs the nftables
// backend in a node namespace, opens a connection before the watch
// starts, then sends an accepted and a dropped connection: the first two
// are reported (the old one as Existing), the dropped one is not.
func TestWatchReportsExistingAndNewAcceptedConnections(t *testing.T) {
	topo := dptest.NewTopology(t, 3)
	a, b, c := topo.Pods[0], topo.Pods[1], topo.Pods[2]
	be := nftBackend(t, topo, 31)
	np := topo.DenyAToB()
	if err := be.Sync(context.Background(), np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	old, err := dptest.DialTCP(c, b.IP4, 8080)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := dptest.Exchange(old, dptest.ProbeTimeout); err != nil {
		t.Fatal(err)
	}

	local := localTo(topo)
	var mu sync.Mutex
	var recs []dataplane.FlowRecord
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- conntrack.Watch(ctx, topo.NodePath, true, local, func(r dataplane.FlowRecord) {
			mu.Lock()
			recs = append(recs, r)
			mu.Unlock()
		})
	}()
	has := func(src, dst netip.Addr, port uint16, existing bool) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range recs {
			if r.Src == src && r.Dst == dst && r.DstPort == port && r.Existing == existing && r.Verdict == dataplane.VerdictForwarded && r.Protocol == 6 {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(5 * time.Second)
	for !has(c.IP4, b.IP4, 8080, true) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := dptest.ProbeTCP(a, c.IP4, 8080); err != nil {
		t.Fatalf("a -> c refused: %v", err)
	}
	if err := dptest.ProbeTCP(a, b.IP4, 8080); err == nil {
		t.Fatal("a -> b allowed while denied")
	}
	for !has(a.IP4, c.IP4, 8080, false) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if !has(c.IP4, b.IP4, 8080, true) {
		t.Errorf("the connection opened before the watch was not reported as existing; got %+v", recs)
	}
	if !has(a.IP4, c.IP4, 8080, false) {
		t.Errorf("the accepted connection a -> c was not reported; got %+v", recs)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, r := range recs {
		if r.Src == a.IP4 && r.Dst == b.IP4 {
			t.Errorf("the dropped connection a -> b was reported as %+v", r)
		}
		if r.Src == a.IP4 && r.Direction != dataplane.DirectionEgress {
			t.Errorf("a local source's record has direction %s, want EGRESS", r.Direction)
		}
	}
}

// nftBackend returns an nftables backend in the topology's node namespace,
// uninstalled when the test ends. Conntrack tracks only in namespaces
// whose hooks use it, so the watch tests need one.
func nftBackend(t *testing.T, topo *dptest.Topology, group uint16) *nftables.Backend {
	t.Helper()
	be, err := nftables.New(nftables.Options{NetNSPath: topo.NodePath, NFLogGroup: group})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = be.Uninstall(context.Background()); _ = be.Close() })
	return be
}

// localTo reports whether an address belongs to one of the topology's pods.
func localTo(topo *dptest.Topology) func(netip.Addr) bool {
	locals := map[netip.Addr]bool{}
	for _, p := range topo.Pods {
		for _, ip := range p.IPs() {
			locals[ip] = true
		}
	}
	return func(ip netip.Addr) bool { return locals[ip] }
}

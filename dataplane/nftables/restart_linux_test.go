//go:build linux

package nftables

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// TestRestartsAndRebuildsRefuseNoAllowedConnection keeps opening allowed
// connections while backends are closed, reopened (adopting the table)
// and made to rebuild the whole table, and requires that none fails.
func TestRestartsAndRebuildsRefuseNoAllowedConnection(t *testing.T) {
	topo := dptest.NewTopology(t, 2)
	a, b := topo.Pods[0], topo.Pods[1]
	policy := func(variant int) *ir.NodePolicy {
		var ps []netip.Prefix
		for i := 0; i < 3000; i++ {
			ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 240 + byte(variant), byte(i >> 7), byte(i<<1) + 1}), 32))
		}
		np := topo.Policy(dptest.Set("sel-a", a.Prefixes()...), dptest.Set(fmt.Sprintf("noise-%d", variant), ps...))
		np.Endpoints[1].Ingress.Tiers = []ir.Tier{
			dptest.Tier(ir.TierAdmin, dptest.Rule("ZonePolicy/noise", fmt.Sprintf("noise-%d", variant), false, ir.Deny)),
			dptest.Tier(ir.TierNetworkPolicy, dptest.Rule("NetworkPolicy/default/b/ingress/0", "sel-a", false, ir.Accept, ir.PortRange{Protocol: ir.TCP, From: 8080, To: 8080})),
			dptest.Tier(ir.TierBaseline, dptest.Rule("Zone/z/baseline", "", false, ir.Deny)),
		}
		return np
	}
	ctx := context.Background()
	be := newBackend(t, topo.NodePath, Options{})
	if err := be.Sync(ctx, policy(0)); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := dptest.ProbeTCP(a, b.IP4, 8080); err != nil {
					failed.Add(1)
					t.Logf("allowed connection failed: %v", err)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	cur := be
	rebuilds := 0
	for i := 1; i <= 10; i++ {
		time.Sleep(50 * time.Millisecond)
		if err := cur.Close(); err != nil {
			t.Fatal(err)
		}
		next, err := New(Options{NetNSPath: topo.NodePath, NFLogGroup: 7, MaxDeltaOps: 100})
		if err != nil {
			t.Fatal(err)
		}
		cur = next
		// The first Sync of the new process adopts the equal table; the
		// second changes the noise set, more than MaxDeltaOps, and rebuilds.
		if err := cur.Sync(ctx, policy((i-1)%2)); err != nil {
			t.Fatalf("Sync after restart: %v", err)
		}
		if err := cur.Sync(ctx, policy(i%2)); err != nil {
			t.Fatalf("rebuilding Sync: %v", err)
		}
		rebuilds += cur.Stats().Rebuilds
		if s := cur.Stats(); s.Adopted != 1 {
			t.Errorf("restart %d: stats %+v, want the table adopted", i, s)
		}
	}
	close(stop)
	wg.Wait()
	t.Cleanup(func() { _ = cur.Uninstall(ctx); _ = cur.Close() })
	t.Logf("%d allowed connections during 10 restarts and %d rebuilds, %d failed", ok.Load(), rebuilds, failed.Load())
	if failed.Load() != 0 {
		t.Errorf("%d allowed connections failed", failed.Load())
	}
	if ok.Load() < 20 {
		t.Errorf("only %d connections completed; the load was too light to tell", ok.Load())
	}
	if rebuilds < 10 {
		t.Errorf("%d rebuilds, want 10", rebuilds)
	}
	// And the deny side held: b is still closed to other ports.
	if err := dptest.ProbeTCP(a, b.IP4, 80); err == nil {
		t.Error("a -> b:80 allowed")
	}
}

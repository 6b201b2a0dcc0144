//go:build linux

package nftables

import (
	"bufio"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// TestRevocationCutsABusyConnection revokes a connection that carries
// traffic both ways at the moment of the cut. The kernel's loose TCP
// pickup would make the next in-flight packet from the server a new,
// reversed connection (server → client, which the policy allows), and the
// client's packets would pass as its replies; the endpoint chains drop
// TCP packets that conntrack sees as new without a SYN, so the cut holds.
func TestRevocationCutsABusyConnection(t *testing.T) {
	topo := dptest.NewTopology(t, 2)
	a, b := topo.Pods[0], topo.Pods[1]
	be := newBackend(t, topo.NodePath, Options{})
	ctx := context.Background()
	if err := be.Sync(ctx, topo.Policy()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	for _, v6 := range []bool{false, true} {
		dst := b.IP4
		if v6 {
			dst = b.IP6
		}
		conn, err := dptest.DialTCP(a, dst, 8080)
		if err != nil {
			t.Fatalf("dialing %v: %v", dst, err)
		}
		// The client writes requests without waiting and reads the
		// echoed replies, so both directions always have packets in
		// flight.
		var replies atomic.Int64
		done := make(chan struct{})
		go func() {
			defer close(done)
			sc := bufio.NewScanner(conn)
			for sc.Scan() {
				replies.Add(1)
			}
		}()
		go func() {
			for {
				_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if _, err := conn.Write([]byte("ping\n")); err != nil {
					return
				}
				time.Sleep(200 * time.Microsecond)
			}
		}()
		waitReplies := func(n int64) {
			for deadline := time.Now().Add(5 * time.Second); replies.Load() < n; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%v: only %d replies before the revocation, want %d", dst, replies.Load(), n)
				}
			}
		}
		waitReplies(200)

		deny := topo.Policy(dptest.Set("sel-a", a.Prefixes()...))
		deny.Endpoints[1].CutConnections = true
		deny.Endpoints[1].Ingress.Tiers = []ir.Tier{dptest.Tier(ir.TierAdmin, dptest.Rule("ZonePolicy/deny-a", "sel-a", false, ir.Deny))}
		if err := be.Sync(ctx, deny); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		// Replies already in flight may still arrive; after a second
		// the connection must make no more progress.
		time.Sleep(time.Second)
		settled := replies.Load()
		time.Sleep(2 * time.Second)
		if got := replies.Load(); got != settled {
			t.Errorf("%v: the revoked connection carried on: %d replies after the cut settled, %d two seconds later", dst, settled, got)
		}
		conn.Close()
		<-done
		if err := be.Sync(ctx, topo.Policy()); err != nil {
			t.Fatalf("Sync: %v", err)
		}
	}
	if s := be.Stats(); s.ConnectionsCut < 2 {
		t.Errorf("ConnectionsCut = %d, want at least 2", s.ConnectionsCut)
	}
}

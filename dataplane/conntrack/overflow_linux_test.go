//go:build linux

package conntrack_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/dataplane/conntrack"
	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
)

// TestWatchRecoversOpenConnectionsAfterAnEventOverflow stalls the record
// consumer while many connections open, with an event socket buffer so
// small that the kernel must drop NEW events (ENOBUFS). Watch must keep
// going and still report every connection that is open afterwards.
func TestWatchRecoversOpenConnectionsAfterAnEventOverflow(t *testing.T) {
	topo := dptest.NewTopology(t, 2)
	a, b := topo.Pods[0], topo.Pods[1]
	if err := nftBackend(t, topo, 32).Sync(context.Background(), topo.Policy()); err != nil {
		t.Fatalf("Sync: %v", err)
	}

	release := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	ports := map[uint16]bool{} // source ports of a -> b:8080 records
	var overflows atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- conntrack.WatchSmall(ctx, topo.NodePath, localTo(topo), func(r dataplane.FlowRecord) {
			once.Do(func() { <-release }) // the consumer falls behind
			if r.Src == a.IP4 && r.Dst == b.IP4 && r.DstPort == 8080 {
				mu.Lock()
				ports[r.SrcPort] = true
				mu.Unlock()
			}
		}, func() { overflows.Add(1) })
	}()
	time.Sleep(200 * time.Millisecond) // joined

	const n = 300
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range n {
		c, err := dptest.DialTCP(a, b.IP4, 8080)
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns)+1, err)
		}
		conns = append(conns, c)
	}
	close(release)

	missing := func() []uint16 {
		mu.Lock()
		defer mu.Unlock()
		var out []uint16
		for _, c := range conns {
			if p := uint16(c.LocalAddr().(*net.TCPAddr).Port); !ports[p] {
				out = append(out, p)
			}
		}
		return out
	}
	deadline := time.Now().Add(15 * time.Second)
	for len(missing()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Watch ended with %v; it must recover from an overflow", err)
	}
	if overflows.Load() == 0 {
		t.Fatal("no event overflow happened, so the test proved nothing; shrink the buffer or open more connections")
	}
	if m := missing(); len(m) > 0 {
		t.Fatalf("%d of %d open connections never reported after %d overflows (source ports %v...)", len(m), n, overflows.Load(), m[:min(5, len(m))])
	}
	t.Logf("%d open connections all reported across %d overflows", n, overflows.Load())
}

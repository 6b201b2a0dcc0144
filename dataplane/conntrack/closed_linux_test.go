//go:build linux

package conntrack_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/dataplane/conntrack"
	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// TestWatchReportsClosedConnectionWithFinalCounters sends a known number
// of bytes over an accepted connection a -> b, closes it and waits for
// its DESTROY record: it must name the connection (5-tuple, EGRESS from
// the local source a), be marked Closed, and carry at least the bytes
// sent each way. The NEW record of the same connection carries none.
func TestWatchReportsClosedConnectionWithFinalCounters(t *testing.T) {
	topo := dptest.NewTopology(t, 2)
	a, b := topo.Pods[0], topo.Pods[1]
	be := nftBackend(t, topo, 33)
	if err := conntrack.EnableAccounting(topo.NodePath); err != nil {
		t.Fatal(err)
	}
	if on, err := conntrack.Accounting(topo.NodePath); err != nil || !on {
		t.Fatalf("accounting after EnableAccounting: %v, %v", on, err)
	}
	if err := be.Sync(context.Background(), topo.Policy()); err != nil {
		t.Fatalf("Sync: %v", err)
	}

	var mu sync.Mutex
	var recs []dataplane.FlowRecord
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- conntrack.Watch(ctx, topo.NodePath, false, localTo(topo), func(r dataplane.FlowRecord) {
			mu.Lock()
			recs = append(recs, r)
			mu.Unlock()
		})
	}()
	time.Sleep(200 * time.Millisecond) // joined

	const payload = 200_000
	c, err := dptest.DialTCP(a, b.IP4, 8080)
	if err != nil {
		t.Fatal(err)
	}
	sport := uint16(c.LocalAddr().(*net.TCPAddr).Port)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line := strings.Repeat("x", payload-1) + "\n"
	go func() { _, _ = io.WriteString(c, line) }()
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || len(reply) != payload+3 {
		t.Fatalf("reply of %d bytes, %v; want %d", len(reply), err, payload+3)
	}
	// Conntrack destroys a closed TCP entry when its TIME_WAIT or CLOSE
	// timeout has run out and the garbage collector gets to it (up to a
	// minute later), or at once when a new SYN reuses its 5-tuple. End
	// the connection with a reset (so a keeps no TIME_WAIT socket) and
	// open the same 5-tuple again.
	_ = c.(*net.TCPConn).SetLinger(0)
	c.Close()
	err = netns.Do(a.Path, func() error {
		d := net.Dialer{Timeout: dptest.ProbeTimeout, LocalAddr: &net.TCPAddr{IP: a.IP4.AsSlice(), Port: int(sport)}}
		c2, err := d.Dial("tcp", net.JoinHostPort(b.IP4.String(), "8080"))
		if err != nil {
			return err
		}
		return c2.Close()
	})
	if err != nil {
		t.Fatalf("reopening %s:%d -> %s:8080: %v", a.IP4, sport, b.IP4, err)
	}

	find := func(closed bool) (dataplane.FlowRecord, bool) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range recs {
			if r.SrcPort == sport && r.DstPort == 8080 && r.Closed == closed {
				return r, true // the first one: the reopened connection's come later
			}
		}
		return dataplane.FlowRecord{}, false
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, ok := find(true); ok {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Watch: %v", err)
	}
	nr, ok := find(false)
	if !ok {
		t.Fatalf("no NEW record of the connection from port %d; got %+v", sport, recs)
	}
	if nr.Bytes != 0 || nr.Packets != 0 {
		t.Errorf("NEW record carries counters %d packets, %d bytes; only the closed record does", nr.Packets, nr.Bytes)
	}
	r, ok := find(true)
	if !ok {
		t.Fatalf("no closed record of the connection from port %d within 30 s; got %+v", sport, recs)
	}
	if r.Src != a.IP4 || r.Dst != b.IP4 || r.Protocol != 6 || r.Direction != dataplane.DirectionEgress || r.Verdict != dataplane.VerdictForwarded || r.Existing {
		t.Errorf("closed record %+v; want FORWARDED EGRESS TCP %s -> %s:8080", r, a.IP4, b.IP4)
	}
	if orig := r.Bytes - r.ReplyBytes; orig < payload {
		t.Errorf("closed record counts %d bytes from a, want >= %d sent", orig, payload)
	}
	if r.ReplyBytes < payload+3 {
		t.Errorf("closed record counts %d bytes from b, want >= %d replied", r.ReplyBytes, payload+3)
	}
	if r.ReplyPackets == 0 || r.Packets <= r.ReplyPackets {
		t.Errorf("closed record counts %d packets, %d of them replies; want both directions", r.Packets, r.ReplyPackets)
	}
	t.Logf("closed record: %d packets (%d reply), %d bytes (%d reply)", r.Packets, r.ReplyPackets, r.Bytes, r.ReplyBytes)
}

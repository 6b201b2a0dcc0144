package agent

import (
	"bufio"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulkhead-dev/bulkhead/dataplane"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func rec(src, dst string, sport, dport uint16, verdict, dir string, at time.Duration, pkts uint64) dataplane.FlowRecord {
	return dataplane.FlowRecord{Time: t0.Add(at), Verdict: verdict, Direction: dir, Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Protocol: 6, SrcPort: sport, DstPort: dport, Packets: pkts}
}

func TestEdgeReducerSummarizesConnectionsPerServerPortAndVerdict(t *testing.T) {
	r := NewEdgeReducer(100)
	local := func(a netip.Addr) bool { return a == netip.MustParseAddr("10.244.0.1") }
	r.Add(rec("10.244.0.1", "10.244.0.2", 40001, 80, "FORWARDED", "EGRESS", 2*time.Second, 5), local)
	r.Add(rec("10.244.0.1", "10.244.0.2", 40001, 80, "FORWARDED", "INGRESS", 2*time.Second, 5), local) // same flow at the local peer
	r.Add(rec("10.244.0.1", "10.244.0.2", 40002, 80, "FORWARDED", "EGRESS", time.Second, 7), local)
	r.Add(rec("10.244.0.1", "10.244.0.2", 40003, 80, "DROPPED", "INGRESS", 3*time.Second, 0), local)
	r.Add(rec("10.244.9.9", "10.244.0.2", 40004, 443, "FORWARDED", "INGRESS", 4*time.Second, 1), local)
	got := r.Flush()
	a, b, c := netip.MustParseAddr("10.244.0.1"), netip.MustParseAddr("10.244.0.2"), netip.MustParseAddr("10.244.9.9")
	want := []AddrEdge{
		{Src: a, Dst: b, Protocol: 6, Port: 80, Verdict: "DROPPED", Connections: 1, FirstSeen: t0.Add(3 * time.Second), LastSeen: t0.Add(3 * time.Second)},
		{Src: a, Dst: b, Protocol: 6, Port: 80, Verdict: "FORWARDED", Connections: 2, Packets: 12, FirstSeen: t0.Add(time.Second), LastSeen: t0.Add(2 * time.Second)},
		{Src: c, Dst: b, Protocol: 6, Port: 443, Verdict: "FORWARDED", Connections: 1, Packets: 1, FirstSeen: t0.Add(4 * time.Second), LastSeen: t0.Add(4 * time.Second)},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("Flush (-want +got):\n%s", diff)
	}
	if got := r.Flush(); len(got) != 0 {
		t.Errorf("second Flush returned %d edges, want a new, empty interval", len(got))
	}
}

func TestEdgeReducerIsBoundedAndCountsDrops(t *testing.T) {
	r := NewEdgeReducer(2)
	for port := uint16(1); port <= 5; port++ {
		r.Add(rec("10.244.0.1", "10.244.0.2", 1000, port, "FORWARDED", "EGRESS", 0, 0), nil)
	}
	if !r.Add(rec("10.244.0.1", "10.244.0.2", 1001, 1, "FORWARDED", "EGRESS", 0, 0), nil) {
		t.Error("a record of a pending edge was dropped")
	}
	if got := len(r.Flush()); got != 2 {
		t.Errorf("%d pending edges, want the cap of 2", got)
	}
	if r.Dropped() != 3 {
		t.Errorf("dropped %d, want 3", r.Dropped())
	}
}

func TestFlowLogRotatesBySize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flows.json")
	l, err := OpenFlowLog(path, 600)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if err := l.Write(rec("10.244.0.1", "10.244.0.2", uint16(1000+i), 80, "FORWARDED", "EGRESS", 0, 0)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	lines := 0
	for _, p := range []string{path, path + ".1"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if st.Size() > 600 {
			t.Errorf("%s is %d bytes, over the 600 limit", p, st.Size())
		}
		f, _ := os.Open(p)
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var r dataplane.FlowRecord
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Errorf("%s: line %q is not a record: %v", p, sc.Text(), err)
			}
			if r.DstPort != 80 || r.Verdict != "FORWARDED" {
				t.Errorf("%s: decoded %+v", p, r)
			}
			lines++
		}
		f.Close()
	}
	if lines == 0 || lines >= 20 {
		t.Errorf("%d records in the two files, want some but fewer than 20 (older ones rotated away)", lines)
	}
	if _, err := OpenFlowLog(path, 0); err == nil {
		t.Error("a zero size limit was accepted")
	}
}

// TestEdgeReducerCountsClosedConnectionsOnce feeds the records conntrack
// gives for three connections: one opened and closed while watched (NEW
// without counters, then closed with its final counters), one open
// before the watch (an Existing record with its counters so far, a
// repeat of it after an event overflow, then closed in a later interval),
// and one still open. Each connection counts once and its packets and
// bytes add up to its final counters.
func TestEdgeReducerCountsClosedConnectionsOnce(t *testing.T) {
	r := NewEdgeReducer(100)
	mk := func(sport uint16, at time.Duration, pkts, bytes uint64, existing, closed bool) dataplane.FlowRecord {
		x := rec("10.244.0.1", "10.244.0.2", sport, 80, "FORWARDED", "EGRESS", at, pkts)
		x.Bytes, x.Existing, x.Closed = bytes, existing, closed
		return x
	}
	r.Add(mk(1, 0, 0, 0, false, false), nil)
	r.Add(mk(1, time.Second, 10, 1000, false, true), nil)
	r.Add(mk(2, 0, 4, 400, true, false), nil)
	r.Add(mk(2, time.Second, 6, 600, true, false), nil) // dumped again after an overflow
	r.Add(mk(3, 0, 0, 0, false, false), nil)
	first := r.Flush()
	if len(first) != 1 {
		t.Fatalf("first interval: %d edges, want 1: %+v", len(first), first)
	}
	if e := first[0]; e.Connections != 3 || e.Packets != 16 || e.Bytes != 1600 {
		t.Errorf("first interval: %d connections, %d packets, %d bytes; want 3, 16, 1600", e.Connections, e.Packets, e.Bytes)
	}
	r.Add(mk(2, 5*time.Second, 9, 900, false, true), nil)
	second := r.Flush()
	if len(second) != 1 {
		t.Fatalf("second interval: %d edges, want 1: %+v", len(second), second)
	}
	if e := second[0]; e.Connections != 0 || e.Packets != 3 || e.Bytes != 300 {
		t.Errorf("second interval: %d connections, %d packets, %d bytes; want 0, 3 and 300 (the rest was counted before)", e.Connections, e.Packets, e.Bytes)
	}
	if n := len(r.counted); n != 0 {
		t.Errorf("%d connections' counters still remembered after they closed", n)
	}
}

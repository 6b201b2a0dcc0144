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

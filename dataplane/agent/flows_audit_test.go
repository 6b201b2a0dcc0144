package agent

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulkhead-dev/bulkhead/dataplane"
)

func TestAuditedConnectionCountsOnce(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	rec := func(verdict string, sport uint16, at time.Duration, existing bool) dataplane.FlowRecord {
		return dataplane.FlowRecord{Time: t0.Add(at), Verdict: verdict, Direction: dataplane.DirectionEgress,
			Src: netip.MustParseAddr("10.244.1.2"), Dst: netip.MustParseAddr("10.244.2.2"), SrcPort: sport, DstPort: 5432, Protocol: 6, Existing: existing}
	}
	for _, tc := range []struct {
		name string
		recs []dataplane.FlowRecord
		want map[string]uint64 // verdict -> connections
	}{
		{"the conntrack copy of an audited connection is dropped",
			[]dataplane.FlowRecord{rec(dataplane.VerdictAudit, 40000, 0, false), rec(dataplane.VerdictForwarded, 40000, 10*time.Millisecond, false)},
			map[string]uint64{dataplane.VerdictAudit: 1}},
		{"another source port is another connection",
			[]dataplane.FlowRecord{rec(dataplane.VerdictAudit, 40000, 0, false), rec(dataplane.VerdictForwarded, 40001, 0, false)},
			map[string]uint64{dataplane.VerdictAudit: 1, dataplane.VerdictForwarded: 1}},
		{"a reused tuple after the audit memory counts again",
			[]dataplane.FlowRecord{rec(dataplane.VerdictAudit, 40000, 0, false), rec(dataplane.VerdictForwarded, 40000, auditMemory+time.Second, false)},
			map[string]uint64{dataplane.VerdictAudit: 1, dataplane.VerdictForwarded: 1}},
		{"forwarded connections without an audit are all kept",
			[]dataplane.FlowRecord{rec(dataplane.VerdictForwarded, 40000, 0, false), rec(dataplane.VerdictForwarded, 40001, 0, false)},
			map[string]uint64{dataplane.VerdictForwarded: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newFlowPipe(&Config{Node: "n1", MaxPendingEdges: 100, MaxRecordsPerReport: 100})
			m := NewMetrics(prometheus.NewRegistry())
			for _, r := range tc.recs {
				p.add(r, m)
			}
			got := map[string]uint64{}
			rep := p.report()
			for _, e := range rep.GetEdges() {
				got[e.GetVerdict()] += e.GetConnections()
			}
			if len(got) != len(tc.want) {
				t.Errorf("edges by verdict %v, want %v", got, tc.want)
			}
			for v, n := range tc.want {
				if got[v] != n {
					t.Errorf("%s connections %d, want %d (all: %v)", v, got[v], n, got)
				}
			}
			if len(rep.GetRecords()) != int(sum(got)) {
				t.Errorf("%d records streamed for %d connections", len(rep.GetRecords()), sum(got))
			}
		})
	}
}

func sum(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

// TestClosedRecordsReachEdgesOnce sends conntrack's NEW and Closed
// records of a forwarded and of an audited connection through the
// agent's pipe: each edge counts one connection and the Closed record's
// packets; the audited connection's counters land on its AUDIT edge; the
// Closed records are streamed and logged like any other.
func TestClosedRecordsReachEdgesOnce(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	rec := func(verdict string, sport uint16, at time.Duration, pkts uint64, closed bool) dataplane.FlowRecord {
		return dataplane.FlowRecord{Time: t0.Add(at), Verdict: verdict, Direction: dataplane.DirectionEgress,
			Src: netip.MustParseAddr("10.244.1.2"), Dst: netip.MustParseAddr("10.244.2.2"), SrcPort: sport, DstPort: 5432, Protocol: 6,
			Packets: pkts, Bytes: 100 * pkts, Closed: closed}
	}
	p := newFlowPipe(&Config{Node: "n1", MaxPendingEdges: 100, MaxRecordsPerReport: 100})
	m := NewMetrics(prometheus.NewRegistry())
	for _, r := range []dataplane.FlowRecord{
		rec(dataplane.VerdictForwarded, 40000, 0, 0, false),
		rec(dataplane.VerdictAudit, 40001, 0, 0, false),
		rec(dataplane.VerdictForwarded, 40001, time.Millisecond, 0, false), // conntrack's copy
		rec(dataplane.VerdictForwarded, 40000, time.Second, 7, true),
		rec(dataplane.VerdictForwarded, 40001, time.Second, 11, true),
	} {
		p.add(r, m)
	}
	rep := p.report()
	type cp struct{ conns, pkts, bytes uint64 }
	got := map[string]cp{}
	for _, e := range rep.GetEdges() {
		c := got[e.GetVerdict()]
		got[e.GetVerdict()] = cp{c.conns + e.GetConnections(), c.pkts + e.GetPackets(), c.bytes + e.GetBytes()}
	}
	want := map[string]cp{dataplane.VerdictForwarded: {1, 7, 700}, dataplane.VerdictAudit: {1, 11, 1100}}
	if len(got) != len(want) || got[dataplane.VerdictForwarded] != want[dataplane.VerdictForwarded] || got[dataplane.VerdictAudit] != want[dataplane.VerdictAudit] {
		t.Errorf("edges (connections, packets, bytes) by verdict %v, want %v", got, want)
	}
	if n := len(rep.GetRecords()); n != 4 {
		t.Errorf("%d records streamed, want 4 (two opened, two closed)", n)
	}
	closed := 0
	for _, f := range rep.GetRecords() {
		if strings.Contains(f.GetJson(), `"closed":true`) {
			closed++
			if !strings.Contains(f.GetJson(), `"bytes":`) {
				t.Errorf("closed record without bytes: %s", f.GetJson())
			}
		}
	}
	if closed != 2 {
		t.Errorf("%d streamed records marked closed, want 2", closed)
	}
}

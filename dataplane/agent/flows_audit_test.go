package agent

import (
	"net/netip"
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

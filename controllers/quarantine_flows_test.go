package controllers

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func TestBlockedFlowsKeepOnlyQuarantineDropsBoundedNewestFirst(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	rec := func(i int, verdict, rule string) dataplane.FlowRecord {
		return dataplane.FlowRecord{Time: t0.Add(time.Duration(i) * time.Millisecond), Verdict: verdict, RuleID: rule, Direction: "egress",
			Src: netip.MustParseAddr("10.244.1.5"), Dst: netip.MustParseAddr("10.244.2.2"), Protocol: 6, SrcPort: uint16(40000 + i), DstPort: 80,
			Node: "node-1", Source: &dataplane.FlowEndpoint{Namespace: "app", Pod: "victim"}}
	}
	q := policy.ObjectRef{Kind: KindQuarantine, Namespace: "app", Name: "q1"}
	for _, tc := range []struct {
		name  string
		recs  []dataplane.FlowRecord
		added int
	}{
		{"a drop by the quarantine's deny rule is kept", []dataplane.FlowRecord{rec(0, dataplane.VerdictDropped, "Quarantine/app/q1")}, 1},
		{"a forwarded flow through an allow-list entry is not", []dataplane.FlowRecord{rec(0, dataplane.VerdictForwarded, "Quarantine/app/q1/ingress/0")}, 0},
		{"a drop by another tier is not", []dataplane.FlowRecord{rec(0, dataplane.VerdictDropped, "NetworkPolicy/app/np/ingress/0")}, 0},
		{"a drop without a rule is not", []dataplane.FlowRecord{rec(0, dataplane.VerdictDropped, "")}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b BlockedFlows
			n := 0
			for _, r := range tc.recs {
				if b.Add(r) {
					n++
				}
			}
			flows, total := b.Take(q)
			if n != tc.added || len(flows) != tc.added || total != int64(tc.added) {
				t.Fatalf("added %d, took %d (total %d), want %d", n, len(flows), total, tc.added)
			}
		})
	}

	t.Run("records beyond the bound keep the newest; the total counts all", func(t *testing.T) {
		notified := 0
		b := BlockedFlows{Notify: func(r policy.ObjectRef) {
			if r == q {
				notified++
			}
		}}
		for i := 0; i < 70; i++ {
			b.Add(rec(i, dataplane.VerdictDropped, "Quarantine/app/q1"))
		}
		flows, total := b.Take(q)
		if total != 70 || len(flows) != v1alpha1.MaxBlockedFlows || notified != 70 {
			t.Fatalf("total %d, kept %d, notified %d; want 70, %d, 70", total, len(flows), notified, v1alpha1.MaxBlockedFlows)
		}
		status := mergeBlocked(nil, flows[:10])
		status = mergeBlocked(status, flows[10:])
		var got []string
		for _, f := range status[:3] {
			got = append(got, f.Source)
		}
		want := []string{"10.244.1.5:40069", "10.244.1.5:40068", "10.244.1.5:40067"}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("newest first (-want +got):\n%s", d)
		}
		if len(status) != v1alpha1.MaxBlockedFlows || status[len(status)-1].Source != fmt.Sprintf("10.244.1.5:%d", 40020) {
			t.Errorf("merged %d records, oldest %s", len(status), status[len(status)-1].Source)
		}
		if f := status[0]; f.SourcePod != "app/victim" || f.Protocol != "TCP" || f.Destination != "10.244.2.2:80" || f.Node != "node-1" {
			t.Errorf("record %+v", f)
		}
	})
}

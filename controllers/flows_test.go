package controllers

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/attrib"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

func TestFlowEdgesPersistAcrossControllerRestart(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := attrib.NewHistory()
	h.Assign(netip.MustParseAddr("10.244.1.1"), attrib.Pod{Namespace: "shop", Name: "web-1", Zone: "learn"}, t0)
	h.Assign(netip.MustParseAddr("10.244.1.2"), attrib.Pod{Namespace: "shop", Name: "db-0", Owner: attrib.OwnerRef{Kind: "StatefulSet", Name: "db"}, Zone: "prod"}, t0)
	h.Assign(netip.MustParseAddr("10.244.1.3"), attrib.Pod{Namespace: "other", Name: "x", Zone: "prod"}, t0)
	modes := attrib.ZoneModes{"learn": v1alpha1.ZoneModeLearn, "prod": v1alpha1.ZoneModeEnforce}
	newCtrl := func() *FlowEdges {
		f := &FlowEdges{Client: env.Client, Attributor: &attrib.Attributor{History: h}}
		f.SetZoneModes(modes)
		if err := f.Load(ctx); err != nil {
			t.Fatalf("Load: %v", err)
		}
		return f
	}
	report := func(f *FlowEdges, n int, src, dst string, verdict v1alpha1.FlowVerdict) {
		var edges []attrib.AddrEdge
		for i := 0; i < n; i++ {
			edges = append(edges, attrib.AddrEdge{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Protocol: 6, Port: uint16(1000 + i), Verdict: verdict, Connections: 1, FirstSeen: t0.Add(time.Second), LastSeen: t0.Add(2 * time.Second)})
		}
		f.Report(edges)
	}

	first := newCtrl()
	report(first, 700, "10.244.1.1", "10.244.1.2", v1alpha1.VerdictForwarded) // learn zone: kept
	report(first, 5, "10.244.1.3", "10.244.1.2", v1alpha1.VerdictForwarded)   // enforced both ends: not kept
	report(first, 3, "10.244.1.3", "10.244.1.2", v1alpha1.VerdictDropped)     // drops: kept
	if err := first.Persist(ctx); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	var list v1alpha1.FlowEdgeSetList
	if err := env.Client.List(ctx, &list); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, s := range list.Items {
		if len(s.Spec.Edges) > attrib.MaxEdgesPerSet {
			t.Errorf("%s holds %d edges", s.Name, len(s.Spec.Edges))
		}
		total += len(s.Spec.Edges)
	}
	if len(list.Items) < 2 || total != 703 {
		t.Fatalf("%d sets with %d edges, want at least 2 sets with 703 edges", len(list.Items), total)
	}

	// A new controller continues from the persisted edges.
	second := newCtrl()
	if diff := cmp.Diff(first.Edges(), second.Edges()); diff != "" {
		t.Fatalf("edges after restart differ (-before +after):\n%s", diff)
	}
	report(second, 1, "10.244.1.1", "10.244.1.2", v1alpha1.VerdictForwarded)
	if err := second.Persist(ctx); err != nil {
		t.Fatalf("Persist after restart: %v", err)
	}
	third := newCtrl()
	var got *v1alpha1.FlowEdge
	for _, e := range third.Edges() {
		if e.Port == 1000 && e.Verdict == v1alpha1.VerdictForwarded {
			e := e
			got = &e
		}
	}
	if got == nil || got.Connections != 2 {
		t.Fatalf("edge to port 1000 after two reports across a restart = %+v, want 2 connections", got)
	}
	if got.Source.Workload == nil || got.Source.Workload.Kind != "Pod" || got.Destination.Workload == nil || got.Destination.Workload.Kind != "StatefulSet" {
		t.Errorf("attribution = %+v -> %+v, want Pod -> StatefulSet", got.Source, got.Destination)
	}
	if len(third.Edges()) != 703 {
		t.Errorf("%d edges, want 703", len(third.Edges()))
	}
}

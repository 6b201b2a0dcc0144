package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func TestFlowsFlagsAreValidated(t *testing.T) {
	tests := []struct {
		name    string
		f       flowsFlags
		wantErr string
	}{
		{"streaming needs a controller", flowsFlags{output: "table"}, "--controller is required"},
		{"edges need no controller", flowsFlags{output: "table", edges: true}, ""},
		{"an unknown output is refused", flowsFlags{output: "yaml", edges: true}, "-o \"yaml\""},
		{"an unknown verdict is refused", flowsFlags{output: "json", edges: true, verdict: "maybe"}, "--verdict \"maybe\""},
		{"a verdict in lower case is accepted", flowsFlags{output: "json", controller: "x:1", verdict: "dropped"}, ""},
		{"a pod needs a namespace", flowsFlags{output: "json", controller: "x:1", pod: "web"}, "--pod needs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.f.validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestEdgesAreFilteredAndPrinted(t *testing.T) {
	wl := func(ns, name, zone string) v1alpha1.EdgeEndpoint {
		return v1alpha1.EdgeEndpoint{Workload: &v1alpha1.WorkloadRef{Namespace: ns, Kind: "Deployment", Name: name, Zone: zone}}
	}
	sets := []v1alpha1.FlowEdgeSet{{Spec: v1alpha1.FlowEdgeSetSpec{Edges: []v1alpha1.FlowEdge{
		{Source: wl("shop", "web", "front"), Destination: wl("shop", "db", "data"), Protocol: "TCP", Port: 5432, Verdict: v1alpha1.VerdictForwarded, Connections: 3},
		{Source: wl("other", "x", ""), Destination: v1alpha1.EdgeEndpoint{CIDR: "203.0.113.1/32"}, Protocol: "TCP", Port: 443, Verdict: v1alpha1.VerdictDropped, Connections: 1},
	}}}}
	if got := filterEdges(sets, flowsFlags{zone: "data"}); len(got) != 1 || got[0].Port != 5432 {
		t.Errorf("zone filter gave %v", got)
	}
	if got := filterEdges(sets, flowsFlags{verdict: "DROPPED"}); len(got) != 1 || got[0].Port != 443 {
		t.Errorf("verdict filter gave %v", got)
	}
	var b bytes.Buffer
	if err := writeEdges(&b, filterEdges(sets, flowsFlags{namespace: "shop"}), "table"); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.Contains(out, "shop/Deployment/web[front]") || !strings.Contains(out, "TCP/5432") || strings.Contains(out, "203.0.113.1") {
		t.Errorf("table:\n%s", out)
	}
}

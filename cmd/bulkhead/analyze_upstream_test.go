package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestAnalyzeReadsUpstreamAdminPolicies(t *testing.T) {
	out, _, err := runCLI(t, "analyze", "-f", "testdata/analyze/three-pods.yaml", "-f", "testdata/upstream/deny-other.yaml", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got []cell
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not a JSON array: %v\n%s", err, out)
	}
	// Written by hand: the ANP denies other -> shop/web on TCP/80; the
	// baseline CNP denies the rest into shop/web (no NetworkPolicy selects
	// it), but not into shop/db, whose NetworkPolicy decides.
	const iso = "NetworkPolicy/shop/db/isolation"
	const base = "ClusterNetworkPolicy/shop-baseline/ingress/0"
	want := []cell{
		{"other/client", "shop/db", "TCP", 80, false, "DENIED", iso},
		{"other/client", "shop/db", "TCP", 5432, false, "DENIED", iso},
		{"other/client", "shop/web", "TCP", 80, false, "DENIED", "AdminNetworkPolicy/no-other-to-web/ingress/0"},
		{"other/client", "shop/web", "TCP", 5432, false, "DENIED", base},
		{"shop/db", "other/client", "TCP", 80, true, "ALLOWED", ""},
		{"shop/db", "other/client", "TCP", 5432, true, "ALLOWED", ""},
		{"shop/db", "shop/web", "TCP", 80, false, "DENIED", base},
		{"shop/db", "shop/web", "TCP", 5432, false, "DENIED", base},
		{"shop/web", "other/client", "TCP", 80, true, "ALLOWED", ""},
		{"shop/web", "other/client", "TCP", 5432, true, "ALLOWED", ""},
		{"shop/web", "shop/db", "TCP", 80, false, "DENIED", iso},
		{"shop/web", "shop/db", "TCP", 5432, true, "ALLOWED", "NetworkPolicy/shop/db/ingress/0"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("analyze -o json (-want +got):\n%s", diff)
	}
}

func TestExplainShowsTheUpstreamRule(t *testing.T) {
	out, _, err := runCLI(t, "explain", "-f", "testdata/analyze/three-pods.yaml", "-f", "testdata/upstream/deny-other.yaml", "--from", "other/client", "--to", "shop/web", "--port", "TCP/80")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"verdict: DENIED", "AdminNetworkPolicy/no-other-to-web/ingress/0", "admin"} {
		if !strings.Contains(out, want) {
			t.Errorf("explain output lacks %q:\n%s", want, out)
		}
	}
}

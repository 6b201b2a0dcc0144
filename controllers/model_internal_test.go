package controllers

import (
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func TestRefOfRuleID(t *testing.T) {
	for _, c := range []struct {
		id   string
		want policy.ObjectRef
		ok   bool
	}{
		{"NetworkPolicy/app/web/ingress/0", policy.ObjectRef{Kind: KindNetworkPolicy, Namespace: "app", Name: "web"}, true},
		{"NetworkPolicy/app/web/isolation", policy.ObjectRef{Kind: KindNetworkPolicy, Namespace: "app", Name: "web"}, true},
		{"NetworkPolicy/app/web", policy.ObjectRef{Kind: KindNetworkPolicy, Namespace: "app", Name: "web"}, true},
		{"NetworkPolicy/app", policy.ObjectRef{}, false},
		{"Quarantine/app/q1/egress/2", policy.ObjectRef{Kind: KindQuarantine, Namespace: "app", Name: "q1"}, true},
		{"ZonePolicy/zp-1/3", policy.ObjectRef{Kind: KindZonePolicy, Name: "zp-1"}, true},
		{"ZonePolicy/zp-1", policy.ObjectRef{Kind: KindZonePolicy, Name: "zp-1"}, true},
		{"ZoneBoundary/tier-0/ingress", policy.ObjectRef{Kind: KindZone, Name: "tier-0"}, true},
		{"ZoneBaseline/tier-2", policy.ObjectRef{Kind: KindZone, Name: "tier-2"}, true},
		{"Default/allow", policy.ObjectRef{}, false},
		{"NetworkPolicy", policy.ObjectRef{}, false},
		{"", policy.ObjectRef{}, false},
	} {
		got, ok := refOfRuleID(c.id)
		if got != c.want || ok != c.ok {
			t.Errorf("refOfRuleID(%q) = %+v, %v; want %+v, %v", c.id, got, ok, c.want, c.ok)
		}
	}
	if n := testing.AllocsPerRun(100, func() { refOfRuleID("NetworkPolicy/app/web/ingress/0") }); n != 0 {
		t.Errorf("refOfRuleID allocates %v times per call, want 0", n)
	}
}

package ir

import (
	"net/netip"
	"testing"
)

func TestEvaluate(t *testing.T) {
	np := &NodePolicy{
		Node: "n1",
		Sets: []AddressSet{
			{Name: "db", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.244.1.5/32")}},
			{Name: "web", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24"), netip.MustParsePrefix("fd00:10:244:2::/64")}},
		},
	}
	web := netip.MustParseAddr("10.244.2.7")
	web6 := netip.MustParseAddr("fd00:10:244:2::7")
	db := netip.MustParseAddr("10.244.1.5")
	other := netip.MustParseAddr("10.244.3.3")
	tcp80 := []PortRange{{Protocol: TCP, From: 80, To: 80}}

	cases := []struct {
		name  string
		tiers []Tier
		peer  netip.Addr
		proto Protocol
		port  uint16
		want  Verdict
	}{
		{"no tiers is the default allow", nil, web, TCP, 80, Verdict{Allowed: true, Tier: TierBaseline}},
		{"accept in a tier is final", []Tier{
			{Kind: TierAdmin, Rules: []Rule{{ID: "a", Peer: PeerMatch{Set: "web"}, Action: Accept}}},
			{Kind: TierNetworkPolicy, Rules: []Rule{{ID: "d", Action: Deny}}},
		}, web, TCP, 80, Verdict{Allowed: true, Tier: TierAdmin, RuleID: "a"}},
		{"first matching rule of a tier decides", []Tier{
			{Kind: TierAdmin, Rules: []Rule{
				{ID: "deny-db", Peer: PeerMatch{Set: "db"}, Action: Deny},
				{ID: "accept-all", Action: Accept},
			}},
		}, db, TCP, 80, Verdict{Allowed: false, Tier: TierAdmin, RuleID: "deny-db"}},
		{"pass skips the rest of its tier only", []Tier{
			{Kind: TierAdmin, Rules: []Rule{
				{ID: "pass", Peer: PeerMatch{Set: "web"}, Action: Pass},
				{ID: "deny", Action: Deny},
			}},
			{Kind: TierNetworkPolicy, Rules: []Rule{{ID: "np-deny", Ports: tcp80, Action: Deny}}},
		}, web, TCP, 80, Verdict{Allowed: false, Tier: TierNetworkPolicy, RuleID: "np-deny"}},
		{"audit marks and continues", []Tier{
			{Kind: TierAdmin, Rules: []Rule{{ID: "audit", Action: Audit}, {ID: "deny", Action: Deny}}},
		}, web, UDP, 53, Verdict{Allowed: true, Audited: true, Tier: TierBaseline}},
		{"an audited connection can still be denied below", []Tier{
			{Kind: TierAdmin, Rules: []Rule{{ID: "audit", Action: Audit}}},
			{Kind: TierNetworkPolicy, Rules: []Rule{{ID: "iso", Action: Deny}}},
		}, web, TCP, 80, Verdict{Allowed: false, Audited: true, Tier: TierNetworkPolicy, RuleID: "iso"}},
		{"a negated peer matches addresses outside the set", []Tier{
			{Kind: TierAdmin, Rules: []Rule{{ID: "boundary", Peer: PeerMatch{Set: "web", Negate: true}, Action: Deny}}},
		}, other, TCP, 80, Verdict{Allowed: false, Tier: TierAdmin, RuleID: "boundary"}},
		{"a negated peer does not match members", []Tier{
			{Kind: TierAdmin, Rules: []Rule{{ID: "boundary", Peer: PeerMatch{Set: "web", Negate: true}, Action: Deny}}},
		}, web6, TCP, 80, Verdict{Allowed: true, Tier: TierBaseline}},
		{"ports must match protocol and range", []Tier{
			{Kind: TierNetworkPolicy, Rules: []Rule{
				{ID: "range", Ports: []PortRange{{Protocol: TCP, From: 8000, To: 8080}}, Action: Accept},
				{ID: "iso", Action: Deny},
			}},
		}, web, UDP, 8000, Verdict{Allowed: false, Tier: TierNetworkPolicy, RuleID: "iso"}},
		{"a port range includes both ends", []Tier{
			{Kind: TierNetworkPolicy, Rules: []Rule{
				{ID: "range", Ports: []PortRange{{Protocol: TCP, From: 8000, To: 8080}}, Action: Accept},
				{ID: "iso", Action: Deny},
			}},
		}, web, TCP, 8080, Verdict{Allowed: true, Tier: TierNetworkPolicy, RuleID: "range"}},
		{"a protocol-only range matches every port", []Tier{
			{Kind: TierNetworkPolicy, Rules: []Rule{
				{ID: "sctp", Ports: []PortRange{{Protocol: SCTP}}, Action: Accept},
				{ID: "iso", Action: Deny},
			}},
		}, web, SCTP, 9000, Verdict{Allowed: true, Tier: TierNetworkPolicy, RuleID: "sctp"}},
		{"a reference to an unknown set matches nothing", []Tier{
			{Kind: TierAdmin, Rules: []Rule{{ID: "ghost", Peer: PeerMatch{Set: "nope"}, Action: Deny}}},
		}, web, TCP, 80, Verdict{Allowed: true, Tier: TierBaseline}},
		{"an IPv4-mapped IPv6 peer matches its IPv4 prefix", []Tier{
			{Kind: TierAdmin, Rules: []Rule{{ID: "deny-db", Peer: PeerMatch{Set: "db"}, Action: Deny}}},
		}, netip.MustParseAddr("::ffff:10.244.1.5"), TCP, 80, Verdict{Allowed: false, Tier: TierAdmin, RuleID: "deny-db"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := np.Evaluate(&Chain{Tiers: tc.tiers}, tc.peer, tc.proto, tc.port)
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestLookups(t *testing.T) {
	np := &NodePolicy{
		Endpoints: []Endpoint{
			{Name: "a/x", IPs: []netip.Addr{netip.MustParseAddr("10.244.1.2")}},
			{Name: "b/y", IPs: []netip.Addr{netip.MustParseAddr("10.244.1.3")}},
		},
		Sets: []AddressSet{{Name: "s1"}, {Name: "s2"}},
	}
	if np.Endpoint("b/y") == nil || np.Endpoint("b/z") != nil {
		t.Fatal("Endpoint lookup by name is wrong")
	}
	if e := np.EndpointByIP(netip.MustParseAddr("10.244.1.3")); e == nil || e.Name != "b/y" {
		t.Fatalf("EndpointByIP: got %v", e)
	}
	if np.Set("s2") == nil || np.Set("s3") != nil {
		t.Fatal("Set lookup is wrong")
	}
}

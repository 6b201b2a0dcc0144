//go:build linux

package nftables

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

func TestToRanges(t *testing.T) {
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	cases := []struct {
		name string
		in   []netip.Prefix
		v6   bool
		want []ipRange
	}{
		{"adjacent prefixes merge into one range", []netip.Prefix{p("10.0.0.0/25"), p("10.0.0.128/25")}, false,
			[]ipRange{{a("10.0.0.0"), a("10.0.0.255")}}},
		{"a covered prefix disappears", []netip.Prefix{p("10.0.0.0/16"), p("10.0.3.4/32")}, false,
			[]ipRange{{a("10.0.0.0"), a("10.0.255.255")}}},
		{"disjoint hosts stay apart and sorted", []netip.Prefix{p("10.0.0.9/32"), p("10.0.0.7/32")}, false,
			[]ipRange{{a("10.0.0.7"), a("10.0.0.7")}, {a("10.0.0.9"), a("10.0.0.9")}}},
		{"the other family is left out", []netip.Prefix{p("10.0.0.1/32"), p("fd00::1/128")}, true,
			[]ipRange{{a("fd00::1"), a("fd00::1")}}},
		{"the whole space ends at the last address", []netip.Prefix{p("0.0.0.0/0")}, false,
			[]ipRange{{a("0.0.0.0"), a("255.255.255.255")}}},
		{"an unmasked prefix is masked", []netip.Prefix{p("10.0.0.77/24")}, false,
			[]ipRange{{a("10.0.0.0"), a("10.0.0.255")}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := toRanges(c.in, c.v6)
			if diff := cmp.Diff(c.want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y }), cmp.AllowUnexported(ipRange{})); diff != "" {
				t.Errorf("toRanges (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidateNamesTheBadField(t *testing.T) {
	ip := netip.MustParseAddr
	base := func() *ir.NodePolicy {
		return &ir.NodePolicy{
			Sets: []ir.AddressSet{{Name: "s"}},
			Endpoints: []ir.Endpoint{
				{Name: "ns/a", IPs: []netip.Addr{ip("10.244.0.1")}},
				{Name: "ns/b", IPs: []netip.Addr{ip("10.244.0.2")}},
			},
		}
	}
	cases := []struct {
		name string
		edit func(np *ir.NodePolicy)
		want []string
	}{
		{"an unknown set is named with its endpoint and rule", func(np *ir.NodePolicy) {
			np.Endpoints[0].Egress.Tiers = []ir.Tier{{Kind: ir.TierAdmin, Rules: []ir.Rule{{ID: "ZonePolicy/x", Peer: ir.PeerMatch{Set: "missing"}}}}}
		}, []string{`endpoint "ns/a" egress tier admin rule 0 ("ZonePolicy/x")`, `unknown address set "missing"`}},
		{"two endpoints with one IP", func(np *ir.NodePolicy) {
			np.Endpoints[1].IPs = np.Endpoints[0].IPs
		}, []string{`endpoint "ns/b": IP 10.244.0.1 already belongs to endpoint "ns/a"`}},
		{"a reversed port range", func(np *ir.NodePolicy) {
			np.Endpoints[1].Ingress.Tiers = []ir.Tier{{Kind: ir.TierNetworkPolicy, Rules: []ir.Rule{{ID: "np", Ports: []ir.PortRange{{Protocol: ir.TCP, From: 90, To: 80}}}}}}
		}, []string{`endpoint "ns/b" ingress tier networkpolicy rule 0 ("np"): ports[0]: from 90 is above to 80`}},
		{"ports on a protocol without ports", func(np *ir.NodePolicy) {
			np.Endpoints[1].Ingress.Tiers = []ir.Tier{{Kind: ir.TierNetworkPolicy, Rules: []ir.Rule{{ID: "np", Ports: []ir.PortRange{{Protocol: 1, From: 8, To: 8}}}}}}
		}, []string{`protocol proto(1) has no ports`}},
		{"unsorted endpoints are refused", func(np *ir.NodePolicy) {
			np.Endpoints[0], np.Endpoints[1] = np.Endpoints[1], np.Endpoints[0]
		}, []string{`endpoints[1] "ns/a": endpoints are not sorted by name`}},
		{"every problem is reported at once", func(np *ir.NodePolicy) {
			np.Endpoints[1].IPs = np.Endpoints[0].IPs
			np.Sets = append(np.Sets, ir.AddressSet{Name: "s"})
		}, []string{`already belongs`, `set "s": duplicate name`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			np := base()
			if err := Validate(np); err != nil {
				t.Fatalf("base policy invalid: %v", err)
			}
			c.edit(np)
			err := Validate(np)
			if err == nil {
				t.Fatal("Validate accepted the policy")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestChainNamesAreStableAndFitTheKernel(t *testing.T) {
	n1 := endpointChainName("a-very-long-namespace-name/with-a-very-long-pod-name-0123456789", ir.Egress, true)
	n2 := endpointChainName("a-very-long-namespace-name/with-a-very-long-pod-name-0123456789", ir.Egress, true)
	if n1 != n2 {
		t.Errorf("names differ: %s %s", n1, n2)
	}
	if len(n1) > 31 {
		t.Errorf("name %q longer than 31 bytes", n1)
	}
	if p := LogPrefix('D', ir.Ingress, RuleNumber(strings.Repeat("x", 500))); len(p) > 127 {
		t.Errorf("log prefix %q too long", p)
	}
}

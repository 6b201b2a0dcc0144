package dptest

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// RulesPolicy returns a diverse policy with n IR rules: n/20 endpoints
// with 20 rules each over 200 selector sets of 20 addresses, distinct
// ports, TCP and UDP, accept and deny, in the admin and NetworkPolicy
// tiers, plus a baseline deny per endpoint. Both backends benchmark with it, so
// their numbers compare.
func RulesPolicy(n int) *ir.NodePolicy {
	np := &ir.NodePolicy{Node: "bench"}
	for i := 0; i < 200; i++ {
		var ps []netip.Prefix
		for j := 0; j < 20; j++ {
			ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 245, byte(i), byte(j*3 + 1)}), 32))
		}
		ps = append(ps, netip.PrefixFrom(netip.MustParseAddr(fmt.Sprintf("fd00:10:245:%x::1", i)), 128))
		np.Sets = append(np.Sets, Set(fmt.Sprintf("sel-%03d", i), ps...))
	}
	eps := max(n/20, 1)
	r := 0
	for e := 0; e < eps; e++ {
		ep := ir.Endpoint{
			Name: fmt.Sprintf("ns-%02d/pod-%05d", e%17, e),
			IPs:  []netip.Addr{netip.AddrFrom4([4]byte{10, 244, byte(e >> 8), byte(e)}), netip.MustParseAddr(fmt.Sprintf("fd00:10:244::%x", e+1))},
		}
		admin := ir.Tier{Kind: ir.TierAdmin}
		netpol := ir.Tier{Kind: ir.TierNetworkPolicy}
		for k := 0; k < 20 && r < n; k++ {
			rule := ir.Rule{
				ID:   fmt.Sprintf("NetworkPolicy/ns-%02d/pol-%d/ingress/%d", e%17, e, k),
				Peer: ir.PeerMatch{Set: fmt.Sprintf("sel-%03d", (e*7+k)%200)},
				Ports: []ir.PortRange{{Protocol: []ir.Protocol{ir.TCP, ir.UDP}[k%2],
					From: uint16(1000 + (r % 60000)), To: uint16(1000 + (r % 60000) + k%3)}},
				Action: ir.Accept,
			}
			if k%5 == 0 {
				rule.ID = fmt.Sprintf("ZonePolicy/zp-%d-%d", e, k)
				rule.Action = ir.Deny
				admin.Rules = append(admin.Rules, rule)
			} else {
				netpol.Rules = append(netpol.Rules, rule)
			}
			r++
		}
		ep.Ingress.Tiers = []ir.Tier{admin, netpol, Tier(ir.TierBaseline, Rule("Zone/z/baseline", "", false, ir.Deny))}
		np.Endpoints = append(np.Endpoints, ep)
	}
	sort.Slice(np.Endpoints, func(i, j int) bool { return np.Endpoints[i].Name < np.Endpoints[j].Name })
	return np
}

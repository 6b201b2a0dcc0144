package dptest

import (
	"net/netip"
	"sort"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// Except returns base minus holes as a sorted list of disjoint prefixes,
// the way ipBlock except is carved.
func Except(base netip.Prefix, holes ...netip.Prefix) []netip.Prefix {
	out := []netip.Prefix{base.Masked()}
	for _, h := range holes {
		h = h.Masked()
		var next []netip.Prefix
		for _, p := range out {
			next = append(next, carve(p, h)...)
		}
		out = next
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr().Less(out[j].Addr()) })
	return out
}

func carve(p, h netip.Prefix) []netip.Prefix {
	if p.Addr().BitLen() != h.Addr().BitLen() || !p.Overlaps(h) {
		return []netip.Prefix{p}
	}
	if h.Bits() <= p.Bits() {
		return nil // the hole covers p
	}
	lo, hi := split(p)
	return append(carve(lo, h), carve(hi, h)...)
}

func split(p netip.Prefix) (netip.Prefix, netip.Prefix) {
	bits := p.Bits() + 1
	lo := netip.PrefixFrom(p.Addr(), bits)
	b := p.Addr().AsSlice()
	i := bits - 1
	b[i/8] |= 0x80 >> (i % 8)
	a, _ := netip.AddrFromSlice(b)
	return lo, netip.PrefixFrom(a, bits)
}

// Set returns an address set.
func Set(name string, ps ...netip.Prefix) ir.AddressSet {
	cp := append([]netip.Prefix(nil), ps...)
	sort.Slice(cp, func(i, j int) bool { return cp[i].Addr().Less(cp[j].Addr()) })
	return ir.AddressSet{Name: name, Prefixes: cp}
}

// Rule returns a rule.
func Rule(id string, set string, negate bool, a ir.Action, ports ...ir.PortRange) ir.Rule {
	return ir.Rule{ID: id, Peer: ir.PeerMatch{Set: set, Negate: negate}, Ports: ports, Action: a}
}

// Tier returns a tier.
func Tier(k ir.TierKind, rules ...ir.Rule) ir.Tier { return ir.Tier{Kind: k, Rules: rules} }

package ebpf

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

var prefixPool = []string{
	"0.0.0.0/0", "10.0.0.0/8", "10.244.0.0/16", "10.244.1.0/24", "10.244.1.0/25", "10.244.1.5/32",
	"10.244.2.0/24", "10.244.2.7/32", "192.168.0.0/16", "::/0", "fd00:10:244::/48",
	"fd00:10:244:1::/64", "fd00:10:244:1::5/128", "fd00:10:244:2::/64", "2001:db8::/32",
}

var addrPool = []string{
	"10.244.1.5", "10.244.1.4", "10.244.1.127", "10.244.1.128", "10.244.2.7", "10.244.2.8",
	"10.244.3.1", "10.1.2.3", "192.168.3.4", "172.16.0.1", "::ffff:10.244.1.5",
	"fd00:10:244:1::5", "fd00:10:244:1::6", "fd00:10:244:2::9", "fd00:10:244:3::1",
	"2001:db8::1", "fe80::1",
}

func randomPolicy(r *rand.Rand) *ir.NodePolicy {
	np := &ir.NodePolicy{Node: "n1"}
	names := []string{""}
	for i := 0; i < 1+r.IntN(5); i++ {
		s := ir.AddressSet{Name: fmt.Sprintf("s%d", i)}
		seen := map[string]bool{}
		for j := 0; j < 1+r.IntN(4); j++ {
			p := prefixPool[r.IntN(len(prefixPool))]
			if !seen[p] {
				seen[p] = true
				s.Prefixes = append(s.Prefixes, netip.MustParsePrefix(p))
			}
		}
		np.Sets = append(np.Sets, s)
		names = append(names, s.Name)
	}
	ports := []ir.PortRange{
		{Protocol: ir.TCP}, {Protocol: ir.UDP}, {Protocol: ir.SCTP},
		{Protocol: ir.TCP, From: 80, To: 80}, {Protocol: ir.TCP, From: 80, To: 443},
		{Protocol: ir.TCP, From: 1, To: 65535}, {Protocol: ir.TCP, From: 0, To: 1023},
		{Protocol: ir.UDP, From: 53, To: 53}, {Protocol: ir.TCP, From: 8000, To: 8100},
		{Protocol: ir.SCTP, From: 9000, To: 9001}, {Protocol: ir.UDP, From: 65535, To: 65535},
	}
	actions := []ir.Action{ir.Accept, ir.Deny, ir.Pass, ir.Audit}
	for e := 0; e < 3; e++ {
		ep := ir.Endpoint{Name: fmt.Sprintf("default/p%d", e)}
		for _, c := range []*ir.Chain{&ep.Ingress, &ep.Egress} {
			for _, k := range []ir.TierKind{ir.TierQuarantine, ir.TierAdmin, ir.TierNetworkPolicy, ir.TierBaseline} {
				if r.IntN(2) == 0 {
					continue
				}
				t := ir.Tier{Kind: k}
				for j := 0; j < 1+r.IntN(4); j++ {
					rule := ir.Rule{
						ID:     fmt.Sprintf("r/%d/%v/%d", e, k, j),
						Peer:   ir.PeerMatch{Set: names[r.IntN(len(names))], Negate: r.IntN(4) == 0},
						Action: actions[r.IntN(len(actions))],
						Log:    r.IntN(5) == 0,
					}
					for q := r.IntN(3); q > 0; q-- {
						rule.Ports = append(rule.Ports, ports[r.IntN(len(ports))])
					}
					t.Rules = append(t.Rules, rule)
				}
				c.Tiers = append(c.Tiers, t)
			}
		}
		np.Endpoints = append(np.Endpoints, ep)
	}
	return np
}

// toIR turns a compiled verdict back into Evaluate's form.
func toIR(v verdict, a *allocator) ir.Verdict {
	return ir.Verdict{Allowed: v.Flags&flagDeny == 0, Audited: v.Flags&flagAudit != 0, Tier: v.Tier, RuleID: a.ruleIDs[v.Rule]}
}

// expected is Evaluate's verdict with the rule an allowed, audited
// verdict names instead: the first Audit rule that matched (in tier and
// rule order), as the datapath's AUDIT records name it.
func expected(np *ir.NodePolicy, c *ir.Chain, peer netip.Addr, proto ir.Protocol, port uint16) ir.Verdict {
	v := np.Evaluate(c, peer, proto, port)
	if !v.Allowed || !v.Audited {
		return v
	}
	for _, t := range c.Tiers {
		for _, r := range t.Rules {
			if !matches(np, r, peer, proto, port) {
				continue
			}
			if r.Action == ir.Audit {
				v.RuleID, v.Tier = r.ID, t.Kind
				return v
			}
			if r.Action == ir.Pass {
				break
			}
		}
	}
	panic("an audited verdict without a matching Audit rule")
}

// matches says whether rule r of a chain matches the peer and port, as
// Evaluate matches rules.
func matches(np *ir.NodePolicy, r ir.Rule, peer netip.Addr, proto ir.Protocol, port uint16) bool {
	in := r.Peer.Set == ""
	if s := np.Set(r.Peer.Set); s != nil {
		in = s.Contains(peer.Unmap())
	}
	if r.Peer.Set != "" && in == r.Peer.Negate {
		return false
	}
	if r.Peer.Set == "" && r.Peer.Negate {
		return false
	}
	return portsIn(r.Ports, proto, port)
}

func TestCompiledLookupsAgreeWithEvaluate(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	ports := []uint16{0, 1, 52, 53, 54, 79, 80, 81, 443, 444, 1023, 1024, 7999, 8000, 8050, 8100, 8101, 9000, 9001, 9002, 65534, 65535}
	protos := []ir.Protocol{ir.TCP, ir.UDP, ir.SCTP, 1, 58}
	checked := 0
	// One allocator for all rounds, as a backend keeps it across Syncs:
	// memoized walks of earlier policies must not leak into later ones.
	alloc := newAllocator()
	for round := 0; round < 200; round++ {
		np := randomPolicy(r)
		ifindex := map[string]uint32{}
		for i, ep := range np.Endpoints {
			ifindex[ep.Name] = uint32(10 + i)
		}
		prog, err := compile(np, ifindex, alloc)
		if err != nil {
			t.Fatalf("round %d: compile: %v", round, err)
		}
		for i := range np.Endpoints {
			ep := &np.Endpoints[i]
			for _, d := range []ir.Direction{ir.Ingress, ir.Egress} {
				for _, as := range addrPool {
					a := netip.MustParseAddr(as)
					id := prog.lookupIdentity(a)
					for _, proto := range protos {
						for _, port := range ports {
							if !isPortProto(proto) && port != 0 {
								continue
							}
							want := expected(np, chainOf(ep, d), a, proto, port)
							got := toIR(prog.lookupVerdict(ifindex[ep.Name], id, d, proto, port), alloc)
							if got != want {
								t.Fatalf("round %d %s %v peer %v %v/%d: compiled %+v, Evaluate %+v\nchain %+v\nsets %+v", round, ep.Name, d, a, proto, port, got, want, chainOf(ep, d), np.Sets)
							}
							checked++
						}
					}
				}
			}
		}
	}
	t.Logf("%d lookups agree", checked)
}

func TestIdentitiesAreEquivalenceClasses(t *testing.T) {
	np := &ir.NodePolicy{Sets: []ir.AddressSet{
		{Name: "a", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		{Name: "b", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd00::/8")}},
		{Name: "c", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}},
	}}
	alloc := newAllocator()
	idents, members, _ := identities(np, alloc)
	byAddr := map[string][]string{}
	for k, id := range idents {
		var m []string
		for _, s := range []string{"a", "b", "c"} {
			if members[id][s] {
				m = append(m, s)
			}
		}
		byAddr[k.prefixOf().String()] = m
	}
	want := map[string][]string{
		"10.0.0.0/8":  {"a"},
		"10.1.0.0/16": {"a", "b", "c"},
		"fd00::/8":    {"b"},
	}
	if d := cmp.Diff(want, byAddr); d != "" {
		t.Errorf("identity classes (-want +got):\n%s", d)
	}
	if idents[mapped(netip.MustParsePrefix("10.1.0.0/16"))] == idents[mapped(netip.MustParsePrefix("fd00::/8"))] {
		t.Error("classes with different members share an identity")
	}
}

func TestSmallChangeIsASmallMapChange(t *testing.T) {
	np := &ir.NodePolicy{}
	for i := 0; i < 200; i++ {
		np.Sets = append(np.Sets, ir.AddressSet{Name: fmt.Sprintf("s%03d", i), Prefixes: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 1}), 32)}})
	}
	ep := ir.Endpoint{Name: "default/p"}
	tier := ir.Tier{Kind: ir.TierNetworkPolicy}
	for i := 0; i < 200; i++ {
		tier.Rules = append(tier.Rules, ir.Rule{ID: fmt.Sprintf("r%d", i), Peer: ir.PeerMatch{Set: fmt.Sprintf("s%03d", i)}, Ports: []ir.PortRange{{Protocol: ir.TCP, From: 80, To: 80}}, Action: ir.Accept})
	}
	tier.Rules = append(tier.Rules, ir.Rule{ID: "iso", Action: ir.Deny})
	ep.Ingress.Tiers = []ir.Tier{tier}
	np.Endpoints = []ir.Endpoint{ep}
	alloc := newAllocator()
	ifx := map[string]uint32{"default/p": 7}
	before, err := compile(np, ifx, alloc)
	if err != nil {
		t.Fatal(err)
	}
	np.Sets[50].Prefixes = append(np.Sets[50].Prefixes, netip.MustParsePrefix("10.99.0.1/32"))
	after, err := compile(np, ifx, alloc)
	if err != nil {
		t.Fatal(err)
	}
	changed := 0
	bp, ap := before.allPol(), after.allPol()
	for k, v := range ap {
		if w, ok := bp[k]; !ok || w != v {
			changed++
		}
	}
	for k := range bp {
		if _, ok := ap[k]; !ok {
			changed++
		}
	}
	bi, _, ok1 := before.identMap()
	ai, _, ok2 := after.identMap()
	if !ok1 || !ok2 {
		t.Fatal("identity tries of the two compiles are not known")
	}
	for k, v := range ai {
		if w, ok := bi[k]; !ok || w != v {
			changed++
		}
	}
	for k := range bi {
		if _, ok := ai[k]; !ok {
			changed++
		}
	}
	if changed == 0 || changed > 2 {
		t.Errorf("adding one address to one set changed %d entries of %d, want 1 or 2", changed, len(ap)+len(ai))
	}
}

// TestCachedCompileEqualsAFullCompile changes a policy one small step at a
// time (in place, as callers may) and checks that the compile that reuses
// identities and chains from the previous one gives exactly the entries
// of a compile that starts from nothing.
func TestCachedCompileEqualsAFullCompile(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	np := randomPolicy(r)
	ifindex := map[string]uint32{}
	for i, ep := range np.Endpoints {
		ifindex[ep.Name] = uint32(10 + i)
	}
	alloc := newAllocator()
	reused, total := 0, 0
	for round := 0; round < 400; round++ {
		step := mutate(r, np, ifindex)
		before := alloc.chains
		cached, err := compile(np, ifindex, alloc)
		if err != nil {
			t.Fatalf("round %d (%s): compile: %v", round, step, err)
		}
		for k, c := range cached.chains {
			total++
			if old, ok := before[k]; ok && old.prog == c {
				reused++
			}
		}
		keep := *alloc
		alloc.chains, alloc.walks, alloc.ident = nil, nil, nil
		full, err := compile(np, ifindex, alloc)
		if err != nil {
			t.Fatalf("round %d (%s): full compile: %v", round, step, err)
		}
		alloc.chains, alloc.walks, alloc.ident = keep.chains, keep.walks, keep.ident
		fullIdents, _, _ := full.identMap()
		cachedIdents, _, _ := cached.identMap()
		if d := cmp.Diff(fullIdents, cachedIdents); d != "" {
			t.Fatalf("round %d (%s): identities (-full +cached):\n%s", round, step, d)
		}
		if d := cmp.Diff(full.allCls(), cached.allCls()); d != "" {
			t.Fatalf("round %d (%s): classes (-full +cached):\n%s", round, step, d)
		}
		if d := cmp.Diff(full.allPol(), cached.allPol()); d != "" {
			t.Fatalf("round %d (%s): policy entries (-full +cached):\n%s", round, step, d)
		}
	}
	t.Logf("%d of %d chains reused", reused, total)
	if reused == 0 || reused == total {
		t.Errorf("%d of %d chains reused: the steps do not exercise both paths", reused, total)
	}
}

// mutate makes one small random change to np and says which.
func mutate(r *rand.Rand, np *ir.NodePolicy, ifindex map[string]uint32) string {
	switch r.IntN(6) {
	case 0: // an address more or less in a set
		s := &np.Sets[r.IntN(len(np.Sets))]
		if len(s.Prefixes) > 1 && r.IntN(2) == 0 {
			s.Prefixes = append([]netip.Prefix(nil), s.Prefixes[1:]...)
			return "set " + s.Name + " lost a prefix"
		}
		p := netip.MustParsePrefix(prefixPool[r.IntN(len(prefixPool))])
		for _, q := range s.Prefixes {
			if q == p {
				return "nothing"
			}
		}
		s.Prefixes = append(append([]netip.Prefix(nil), s.Prefixes...), p)
		return "set " + s.Name + " gained " + p.String()
	case 1: // a rule changes its action
		ep := &np.Endpoints[r.IntN(len(np.Endpoints))]
		c := &ep.Ingress
		if r.IntN(2) == 0 {
			c = &ep.Egress
		}
		if len(c.Tiers) == 0 {
			return "nothing"
		}
		tr := &c.Tiers[r.IntN(len(c.Tiers))]
		rl := &tr.Rules[r.IntN(len(tr.Rules))]
		rl.Action = []ir.Action{ir.Accept, ir.Deny, ir.Pass, ir.Audit}[r.IntN(4)]
		return "rule " + rl.ID + " action"
	case 2: // a rule changes its ports
		ep := &np.Endpoints[r.IntN(len(np.Endpoints))]
		if len(ep.Ingress.Tiers) == 0 {
			return "nothing"
		}
		tr := &ep.Ingress.Tiers[0]
		rl := &tr.Rules[r.IntN(len(tr.Rules))]
		from := uint16(r.IntN(9000))
		rl.Ports = []ir.PortRange{{Protocol: ir.TCP, From: from, To: from + uint16(r.IntN(100))}}
		return "rule " + rl.ID + " ports"
	case 3: // a rule names another set
		ep := &np.Endpoints[r.IntN(len(np.Endpoints))]
		if len(ep.Egress.Tiers) == 0 {
			return "nothing"
		}
		tr := &ep.Egress.Tiers[len(ep.Egress.Tiers)-1]
		rl := &tr.Rules[0]
		rl.Peer.Set = np.Sets[r.IntN(len(np.Sets))].Name
		return "rule " + rl.ID + " peer"
	case 4: // an endpoint moves to another interface
		ep := &np.Endpoints[r.IntN(len(np.Endpoints))]
		next := uint32(0)
		for _, i := range ifindex {
			next = max(next, i+1)
		}
		if r.IntN(2) == 0 { // back to its first interface, if free
			next = uint32(10 + r.IntN(len(np.Endpoints)))
			for _, i := range ifindex {
				if i == next {
					return "nothing"
				}
			}
		}
		ifindex[ep.Name] = next
		return "endpoint " + ep.Name + " moved"
	default: // a quarantine comes or goes
		ep := &np.Endpoints[r.IntN(len(np.Endpoints))]
		q := ir.Tier{Kind: ir.TierQuarantine, Rules: []ir.Rule{{ID: "Quarantine/q", Action: ir.Deny}}}
		if len(ep.Ingress.Tiers) > 0 && ep.Ingress.Tiers[0].Kind == ir.TierQuarantine {
			ep.Ingress.Tiers = ep.Ingress.Tiers[1:]
			return "quarantine of " + ep.Name + " lifted"
		}
		ep.Ingress.Tiers = append([]ir.Tier{q}, ep.Ingress.Tiers...)
		return "quarantine of " + ep.Name
	}
}

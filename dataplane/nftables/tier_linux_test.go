//go:build linux

package nftables

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables/expr"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

func TestFirstCover(t *testing.T) {
	cases := []struct {
		name string
		in   []interval
		want []interval
	}{
		{"an earlier rule shadows the overlap of a later one",
			[]interval{{80, 90, 0}, {0, 65535, 1}},
			[]interval{{0, 79, 1}, {80, 90, 0}, {91, 65535, 1}}},
		{"a later rule fills only the gaps", []interval{{0, 65535, 1}, {100, 200, 0}, {150, 300, 2}},
			[]interval{{0, 99, 1}, {100, 200, 0}, {201, 65535, 1}}},
		{"disjoint ranges keep their owners and holes stay holes", []interval{{5, 5, 3}, {7, 9, 1}},
			[]interval{{5, 5, 3}, {7, 9, 1}}},
		{"adjacent pieces of one rule merge", []interval{{0, 10, 2}, {11, 20, 2}, {5, 5, 4}},
			[]interval{{0, 20, 2}}},
		{"nothing in, nothing out", nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if diff := cmp.Diff(c.want, firstCover(c.in), cmp.AllowUnexported(interval{})); diff != "" {
				t.Errorf("firstCover (-want +got):\n%s", diff)
			}
		})
	}
}

// lookupMaps does what the kernel does with a tier chain: the address
// maps, the main map and its goto sets, drop-log maps and exact twins,
// then the fallback map and its own; it also checks that at most one
// element of all the maps and sets of one key layout contains the key
// (pipapo refuses overlaps in one map, and the rules of a tier chain must
// not depend on their order), and that an address found in an address
// map is in no map of the other layouts. ok is false when nothing has the
// key: the tier hands the connection on.
func lookupMaps(t *testing.T, maps []*mapSpec, addr netip.Addr, proto uint8, port uint16, portLoads bool) (verdict, bool) {
	t.Helper()
	a := addr.AsSlice()
	var inAddr, found []verdict
	for _, kind := range []mapKind{mapAddr, mapAddrProtoPort, mapAddrProto} {
		if kind == mapAddrProtoPort && !portLoads {
			continue
		}
		key := append([]byte(nil), a...)
		if kind != mapAddr {
			key = append(key, proto, 0, 0, 0)
		}
		if kind == mapAddrProtoPort {
			key = append(key, byte(port>>8), byte(port), 0, 0)
		}
		var hits []verdict
		for _, m := range maps {
			if m.kind != kind {
				continue
			}
			if m.exact != (kind == mapAddr || strings.HasSuffix(m.name, "-h")) {
				t.Fatalf("map %s: exact=%v does not go with its name", m.name, m.exact)
			}
			for _, e := range m.elems {
				if (e.keyEnd == nil) != m.exact {
					t.Fatalf("map %s (exact=%v): element %x with key end %x", m.name, m.exact, e.key, e.keyEnd)
				}
				if e.keyEnd == nil {
					if !bytes.Equal(e.key, key) {
						continue
					}
				} else {
					if bytes.Compare(e.key, key) > 0 || bytes.Compare(key, e.keyEnd) > 0 {
						continue
					}
					// a concatenation matches field by field
					in := true
					for off, w := range fieldWidths(m, len(a)) {
						k, lo, hi := key[off:off+w], e.key[off:off+w], e.keyEnd[off:off+w]
						if bytes.Compare(k, lo) < 0 || bytes.Compare(k, hi) > 0 {
							in = false
						}
					}
					if !in {
						continue
					}
				}
				if m.set {
					if e.v != (verdict{}) {
						t.Fatalf("set %s: element with a verdict %+v", m.name, e.v)
					}
					hits = append(hits, m.hit)
				} else {
					hits = append(hits, e.v)
				}
			}
		}
		if len(hits) > 1 {
			t.Fatalf("%d elements of the tier's maps contain %v %d/%d", len(hits), addr, proto, port)
		}
		switch {
		case kind == mapAddr:
			inAddr = hits // the other layouts must not hold the address
		case len(inAddr) > 0 && len(hits) > 0:
			t.Fatalf("%v %d/%d is in an address map and in a map of key layout %d", addr, proto, port, kind)
		case len(hits) == 1 && len(found) == 0:
			found = hits // the first lookup that hits decides
		}
	}
	if len(inAddr) == 1 {
		return inAddr[0], true
	}
	if len(found) == 1 {
		return found[0], true
	}
	return verdict{}, false
}

// lookupRules does what the kernel does with the lookup rules of a run
// (see lookupMaps): the maps of the rules whose guards the key misses,
// and, when nothing else has the key, the verdict of a guarded rule.
func lookupRules(t *testing.T, rules []ruleSpec, addr netip.Addr, proto uint8, port uint16, portLoads bool) (verdict, bool) {
	t.Helper()
	var maps []*mapSpec
	var fixed []verdict
	for _, r := range rules {
		if guarded(t, r, addr, proto, port) {
			continue
		}
		switch {
		case r.lookup != nil:
			maps = append(maps, r.lookup)
		case r.fixed != nil:
			fixed = append(fixed, *r.fixed)
		}
	}
	v, ok := lookupMaps(t, maps, addr, proto, port, portLoads)
	if len(fixed) > 1 || len(fixed) == 1 && ok {
		t.Fatalf("%v %d/%d: %d background rules match, and the maps hit: %v", addr, proto, port, len(fixed), ok)
	}
	if len(fixed) == 1 {
		return fixed[0], true
	}
	return v, ok
}

// guarded reports whether the peer is in one of the rule's guard sets
// (so that the rule does not match).
func guarded(t *testing.T, r ruleSpec, addr netip.Addr, proto uint8, port uint16) bool {
	t.Helper()
	for _, g := range r.guards {
		if !g.guard {
			t.Fatalf("rule %s: guard %s is not a guard set", r.key, g.name)
		}
		if _, in := lookupMaps(t, []*mapSpec{g}, addr, proto, port, true); in {
			return true
		}
	}
	return false
}

func fieldWidths(m *mapSpec, alen int) map[int]int {
	w := map[int]int{0: alen, alen: 1}
	if m.kind == mapAddrProtoPort {
		w[alen+4] = 2
	}
	return w
}

// TestTierMapsAgreeWithEvaluate compiles random tiers and checks that one
// lookup gives, for every probed peer, protocol and port, what the
// reference evaluator's first match gives.
func TestTierMapsAgreeWithEvaluate(t *testing.T) {
	sets := patchSets()
	names := []string{"a", "b", "cidr", "empty", ""}
	ports := []ir.PortRange{
		{Protocol: ir.TCP}, {Protocol: ir.UDP}, {Protocol: ir.TCP, From: 80, To: 443},
		{Protocol: ir.TCP, From: 8080, To: 8080}, {Protocol: ir.UDP, From: 53, To: 53},
		{Protocol: ir.SCTP, From: 1, To: 65535}, {Protocol: 1}, {Protocol: 58}, {Protocol: 136, From: 9, To: 9},
	}
	actions := []ir.Action{ir.Accept, ir.Deny, ir.Pass, ir.Audit}
	peers := []netip.Addr{}
	for _, s := range []string{"10.244.0.10", "10.244.0.11", "10.244.0.12", "10.244.0.13", "10.244.1.77", "10.9.9.9", "11.0.0.1", "0.0.0.0", "255.255.255.255",
		"fd00:10:244::10", "fd00:10:244::11", "fd00:10:244::ff", "fd00::1", "fe80::1", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"} {
		peers = append(peers, netip.MustParseAddr(s))
	}
	probes := []struct {
		proto uint8
		port  uint16
	}{{6, 0}, {6, 79}, {6, 80}, {6, 443}, {6, 444}, {6, 8080}, {6, 65535}, {17, 53}, {17, 54}, {132, 0}, {132, 7}, {136, 9}, {136, 10}, {1, 0}, {58, 3}, {47, 0}, {0, 0}, {255, 1}}
	r := rand.New(rand.NewPCG(1, 2))
	o := compileOptions{logGroup: 7, logOn: true}
	for round := 0; round < 300; round++ {
		var rules []ir.Rule
		for j, n := 0, 1+r.IntN(6); j < n; j++ {
			rule := ir.Rule{ID: fmt.Sprintf("r%d", j), Peer: ir.PeerMatch{Set: names[r.IntN(len(names))], Negate: r.IntN(4) == 0}, Action: actions[r.IntN(len(actions))], Log: r.IntN(2) == 0}
			for q := r.IntN(3); q > 0; q-- {
				rule.Ports = append(rule.Ports, ports[r.IntN(len(ports))])
			}
			rules = append(rules, rule)
		}
		np := &ir.NodePolicy{Sets: sets}
		chain := &ir.Chain{Tiers: []ir.Tier{{Kind: ir.TierAdmin, Rules: rules}}}
		cache := newCompileCache()
		for _, s := range sets {
			cache.sets[s.Name] = &cachedSet{prefixes: s.Prefixes, r4: toRanges(s.Prefixes, false), r6: toRanges(s.Prefixes, true)}
		}
		for _, d := range []ir.Direction{ir.Ingress, ir.Egress} {
			for _, v6 := range []bool{false, true} {
				actionChains := map[string]*chainSpec{}
				ids := map[uint32]string{}
				lrules := compileTier("t", rules, d, v6, o, ids, cache.sets, actionChains)
				for _, peer := range peers {
					if peer.Is6() != v6 {
						continue
					}
					for _, pr := range probes {
						want := np.Evaluate(chain, peer, ir.Protocol(pr.proto), pr.port)
						for _, loads := range []bool{true, false} {
							if !loads && isPortProto(int(pr.proto)) {
								continue // conntrack drops those as invalid
							}
							v, ok := lookupRules(t, lrules, peer, pr.proto, pr.port, loads)
							got := outcome(t, v, ok, actionChains, ids)
							if exp := expected(want, rules); got != exp {
								t.Fatalf("round %d %s v6=%v peer %v proto %d port %d (port loads %v): maps decide %q, Evaluate %q (%+v)\nrules: %+v",
									round, d, v6, peer, pr.proto, pr.port, loads, got, exp, want, rules)
							}
						}
					}
				}
			}
		}
	}
}

// expected names what a single-tier chain must do per Evaluate: the
// deciding rule's ID, "accept" for an unlogged accept (its verdict names
// no rule), "audit" when an Audit rule handed the connection on, and ""
// when the tier handed it on otherwise.
func expected(v ir.Verdict, rules []ir.Rule) string {
	if v.RuleID == "" {
		if v.Audited {
			return "audit"
		}
		return ""
	}
	for _, r := range rules {
		if r.ID == v.RuleID && r.Action == ir.Accept && !r.Log {
			return "accept"
		}
	}
	return v.RuleID
}

// loggedRule names the rule of a drop verdict: its ID for a logged drop
// (the rule number in the verdict's chain name), "drop" otherwise.
func loggedRule(t *testing.T, v verdict, ids map[uint32]string) string {
	t.Helper()
	if !v.logged() {
		return "drop"
	}
	id, ok := ids[ruleNumberOf(v.chain)]
	if !ok {
		t.Fatalf("logged drop %s: no rule has its number", v.chain)
	}
	return id
}

// outcome names what the maps make the tier chain do, in the terms of
// expected.
func outcome(t *testing.T, v verdict, ok bool, actions map[string]*chainSpec, ids map[uint32]string) string {
	t.Helper()
	if !ok {
		return ""
	}
	switch v.kind {
	case expr.VerdictReturn:
		return ""
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return loggedRule(t, v, ids)
	case expr.VerdictJump:
		c := actions[v.chain]
		if c == nil {
			t.Fatalf("goto %s: no such action chain", v.chain)
		}
		if strings.HasPrefix(c.rules[0].key, "audit") {
			return "audit"
		}
		return c.rules[0].comment
	}
	t.Fatalf("unexpected verdict %+v", v)
	return ""
}

// runChain does what the kernel does with an endpoint chain built by
// endpointChains, for a new connection from (ingress) or to (egress)
// peer: its rules in order, a lookup rule consulting its map (a rule
// whose key cannot load a port breaks), a catch-all rule its verdict, an
// action chain entered by jump logging, marking and returning or ending
// the packet. It returns what decided, in the terms of expected, and
// whether an Audit marked the connection. It fails the test when one
// run's maps audit a packet and then decide it again.
func runChain(t *testing.T, c *chainSpec, actions map[string]*chainSpec, ids map[uint32]string, addr netip.Addr, proto uint8, port uint16, portLoads bool) (string, bool) {
	t.Helper()
	audited := false
	auditedRun := ""
	for _, r := range c.rules {
		var v verdict
		switch {
		case guarded(t, r, addr, proto, port):
			continue
		case r.lookup != nil:
			if r.lookup.kind == mapAddrProtoPort && !portLoads {
				continue
			}
			hit, ok := lookupMaps(t, []*mapSpec{r.lookup}, addr, proto, port, portLoads)
			if !ok {
				continue
			}
			n := r.lookup.name
			run := strings.TrimSuffix(n[:max(strings.LastIndex(n, "-m"), strings.LastIndex(n, "-o"), strings.LastIndex(n, "-a"))], "-b")
			if run == auditedRun {
				t.Fatalf("%s: run %s audited the packet and decides it again in %s", c.name, run, r.lookup.name)
			}
			v = hit
			if m := r.lookup; m.set {
				v = m.hit
			}
			if v.kind == expr.VerdictJump && !v.final() {
				auditedRun = run
			}
		case r.fixed != nil:
			v = *r.fixed
		default:
			continue // midstreamDrop: not a SYN-less TCP packet here
		}
		switch v.kind {
		case expr.VerdictAccept:
			return "accept", audited
		case expr.VerdictDrop:
			if r.lookup != nil && (r.lookup.logDrop != "") != v.logged() {
				t.Fatalf("%s: map %s (drop-log %q) holds verdict %+v", c.name, r.lookup.name, r.lookup.logDrop, v)
			}
			return loggedRule(t, v, ids), audited
		case expr.VerdictJump:
			ac := actions[v.chain]
			if ac == nil {
				t.Fatalf("jump %s: no such action chain", v.chain)
			}
			if strings.HasPrefix(ac.rules[0].key, "audit") {
				audited = true
				continue
			}
			return ac.rules[0].comment, audited
		default:
			t.Fatalf("%s: unexpected verdict %+v", c.name, v)
		}
	}
	t.Fatalf("%s: the chain ends without a verdict", c.name)
	return "", false
}

// TestEndpointChainsAgreeWithEvaluate compiles random endpoint chains of
// several tiers (runs of tiers overlaid in one set of maps, catch-all
// tiers as one rule, Pass and Audit handing packets on) and checks that
// the chain decides every probed peer, protocol and port as the
// reference evaluator does, and audits when it audits.
func TestEndpointChainsAgreeWithEvaluate(t *testing.T) {
	sets := patchSets()
	names := []string{"a", "b", "cidr", "empty", "", ""}
	ports := []ir.PortRange{
		{Protocol: ir.TCP}, {Protocol: ir.UDP}, {Protocol: ir.TCP, From: 80, To: 443},
		{Protocol: ir.TCP, From: 8080, To: 8080}, {Protocol: ir.UDP, From: 53, To: 53},
		{Protocol: ir.SCTP, From: 1, To: 65535}, {Protocol: 1}, {Protocol: 58}, {Protocol: 136, From: 9, To: 9},
	}
	actions := []ir.Action{ir.Accept, ir.Deny, ir.Pass, ir.Audit}
	kinds := []ir.TierKind{ir.TierQuarantine, ir.TierAdmin, ir.TierNetworkPolicy, ir.TierBaseline}
	var peers []netip.Addr
	for _, s := range []string{"10.244.0.10", "10.244.0.11", "10.244.0.12", "10.244.0.13", "10.244.1.77", "10.9.9.9", "11.0.0.1", "0.0.0.0", "255.255.255.255",
		"fd00:10:244::10", "fd00:10:244::11", "fd00:10:244::ff", "fd00::1", "fe80::1", "::"} {
		peers = append(peers, netip.MustParseAddr(s))
	}
	probes := []struct {
		proto uint8
		port  uint16
	}{{6, 0}, {6, 80}, {6, 443}, {6, 444}, {6, 8080}, {6, 65535}, {17, 53}, {17, 54}, {132, 7}, {136, 9}, {136, 10}, {1, 0}, {58, 3}, {47, 0}, {0, 0}, {255, 1}}
	r := rand.New(rand.NewPCG(3, 4))
	o := compileOptions{logGroup: 7, logOn: true}
	cache := cachedSets(sets)
	np := &ir.NodePolicy{Sets: sets}
	shapes := map[string]int{}
	// kinds of map seen, by name: every kind must be reached
	layouts := map[string]int{}
	for _, k := range []string{"accept set", "exact twin", "address map", "drop set", "drop-log map", "goto set", "verdict map", "guard set", "range guard set", "background map", "background rule"} {
		layouts[k] = 0
	}
	for round := 0; round < 400; round++ {
		// one round in four without nflog: plain drops and accepts
		o.logOn = round%4 != 3
		var chain ir.Chain
		var all []ir.Rule
		for ti, nt := 0, 1+r.IntN(4); ti < nt; ti++ {
			tier := ir.Tier{Kind: kinds[r.IntN(len(kinds))]}
			for j, n := 0, r.IntN(5); j < n; j++ {
				rule := ir.Rule{ID: fmt.Sprintf("t%d/r%d", ti, j), Peer: ir.PeerMatch{Set: names[r.IntN(len(names))], Negate: r.IntN(5) == 0}, Action: actions[r.IntN(len(actions))], Log: r.IntN(2) == 0}
				for q := r.IntN(3); q > 0; q-- {
					rule.Ports = append(rule.Ports, ports[r.IntN(len(ports))])
				}
				tier.Rules = append(tier.Rules, rule)
			}
			if r.IntN(3) == 0 { // a catch-all, first or after the others
				all := ir.Rule{ID: fmt.Sprintf("t%d/all", ti), Action: actions[r.IntN(len(actions))], Log: r.IntN(2) == 0}
				if r.IntN(2) == 0 {
					tier.Rules = append([]ir.Rule{all}, tier.Rules...)
				} else {
					tier.Rules = append(tier.Rules, all)
				}
			}
			chain.Tiers = append(chain.Tiers, tier)
			all = append(all, tier.Rules...)
		}
		if round%10 == 5 {
			// a tier reaching more action chains than maxGotoSets:
			// its jumps stay in a verdict map
			tier := ir.Tier{Kind: ir.TierAdmin}
			for j := 0; j <= maxGotoSets; j++ {
				rule := ir.Rule{ID: fmt.Sprintf("tg/r%d", j), Peer: ir.PeerMatch{Set: names[r.IntN(len(names))]}, Action: []ir.Action{ir.Accept, ir.Audit}[j%2], Log: true}
				rule.Ports = []ir.PortRange{ports[r.IntN(len(ports))]}
				tier.Rules = append(tier.Rules, rule)
			}
			chain.Tiers = append([]ir.Tier{tier}, chain.Tiers...)
			all = append(tier.Rules, all...)
		}
		for _, d := range []ir.Direction{ir.Ingress, ir.Egress} {
			for _, v6 := range []bool{false, true} {
				ids := map[uint32]string{}
				chains, maps, _, open := endpointChains("ns/p", d, v6, &chain, o, ids, cache)
				top := openChain()
				acts := map[string]*chainSpec{}
				if !open {
					top = chains[0]
					for _, c := range chains[1:] {
						acts[c.name] = c
					}
				}
				shapes[fmt.Sprintf("%d rules, %d maps", len(top.rules), len(maps))]++
				for _, r := range top.rules {
					if r.fixed != nil && r.guards != nil {
						layouts["background rule"]++
					}
				}
				for _, m := range maps {
					switch {
					case m.guard && m.kind == mapAddr:
						layouts["guard set"]++
						continue
					case m.guard:
						layouts["range guard set"]++
						continue
					case m.bg:
						layouts["background map"]++
					}
					switch n := m.name; {
					case strings.HasSuffix(n, "-h"):
						layouts["exact twin"]++
					case m.kind == mapAddr:
						layouts["address map"]++
					}
					switch {
					case m.logDrop != "":
						layouts["drop-log map"]++
					case !m.set:
						layouts["verdict map"]++
					case m.hit.kind == expr.VerdictAccept:
						layouts["accept set"]++
					case m.hit.kind == expr.VerdictDrop:
						layouts["drop set"]++
					default:
						layouts["goto set"]++
					}
				}
				for _, peer := range peers {
					if peer.Is6() != v6 {
						continue
					}
					for _, pr := range probes {
						want := np.Evaluate(&chain, peer, ir.Protocol(pr.proto), pr.port)
						exp := expected(want, all)
						switch {
						case exp == "" || exp == "audit":
							exp = "accept" // the default allow
						case !want.Allowed && exp == want.RuleID && !o.logOn:
							exp = "drop"
						case want.Allowed && exp == want.RuleID && !o.logOn:
							exp = "accept" // a logged accept, not logged
						}
						for _, loads := range []bool{true, false} {
							if !loads && isPortProto(int(pr.proto)) {
								continue // conntrack drops those as invalid
							}
							got, audited := runChain(t, top, acts, ids, peer, pr.proto, pr.port, loads)
							if got != exp || audited != want.Audited {
								t.Fatalf("round %d %s v6=%v peer %v proto %d port %d (port loads %v): chain decides %q audited %v, Evaluate %q audited %v (%+v)\ntiers: %+v",
									round, d, v6, peer, pr.proto, pr.port, loads, got, audited, exp, want.Audited, want, chain.Tiers)
							}
						}
					}
				}
			}
		}
	}
	if len(shapes) < 10 {
		t.Errorf("the random chains compiled to only %d shapes: %v", len(shapes), shapes)
	}
	for k, n := range layouts {
		if n == 0 {
			t.Errorf("no random chain compiled to a %s: %v", k, layouts)
		}
	}
}

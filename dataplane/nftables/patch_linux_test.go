//go:build linux

package nftables

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

func TestChangedRanges(t *testing.T) {
	a := netip.MustParseAddr
	r := func(f, t string) ipRange { return ipRange{a(f), a(t)} }
	cases := []struct {
		name string
		old  []ipRange
		new  []ipRange
		want []ipRange
	}{
		{"an added host is the only change", []ipRange{r("10.0.0.1", "10.0.0.1")}, []ipRange{r("10.0.0.1", "10.0.0.1"), r("10.0.0.9", "10.0.0.9")},
			[]ipRange{r("10.0.0.9", "10.0.0.9")}},
		{"a range that grew is reported before and after", []ipRange{r("10.0.0.0", "10.0.0.7")}, []ipRange{r("10.0.0.0", "10.0.0.8")},
			[]ipRange{r("10.0.0.0", "10.0.0.7"), r("10.0.0.0", "10.0.0.8")}},
		{"a removed range is reported", []ipRange{r("10.0.0.1", "10.0.0.1"), r("10.0.0.5", "10.0.0.6")}, []ipRange{r("10.0.0.5", "10.0.0.6")},
			[]ipRange{r("10.0.0.1", "10.0.0.1")}},
		{"equal lists have no change", []ipRange{r("10.0.0.1", "10.0.0.1")}, []ipRange{r("10.0.0.1", "10.0.0.1")}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := changedRanges(c.old, c.new)
			if diff := cmp.Diff(c.want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y }), cmp.AllowUnexported(ipRange{})); diff != "" {
				t.Errorf("changedRanges (-want +got):\n%s", diff)
			}
		})
	}
}

// patchSets are overlapping sets: hosts, a host inside a CIDR, and CIDRs
// with exceptions, in both families.
func patchSets() []ir.AddressSet {
	p := netip.MustParsePrefix
	return []ir.AddressSet{
		dptest.Set("a", p("10.244.0.10/32"), p("10.244.0.12/31"), p("fd00:10:244::10/128")),
		dptest.Set("b", p("10.244.0.12/32"), p("10.244.1.0/24"), p("fd00:10:244::/120")),
		dptest.Set("cidr", append(dptest.Except(p("10.0.0.0/8"), p("10.244.0.12/32")), dptest.Except(p("fd00::/8"), p("fd00:10:244::10/128"))...)...),
		dptest.Set("empty"),
	}
}

// editSet changes the contents of one random set: a host joins or leaves
// (also next to or inside an existing range), a CIDR joins or leaves, an
// exception is carved, or the set is emptied.
func editSet(r *rand.Rand, sets []ir.AddressSet) string {
	p := netip.MustParsePrefix
	joins := []netip.Prefix{
		p("10.244.0.11/32"), p("10.244.0.9/32"), p("10.244.0.14/32"), p("10.244.0.12/32"), p("10.244.1.77/32"),
		p("10.244.2.0/32"), p("10.9.9.9/32"), p("11.0.0.1/32"), p("10.244.0.0/28"), p("10.244.0.8/30"),
		p("10.0.0.0/8"), p("0.0.0.0/0"), p("255.255.255.255/32"),
		p("fd00:10:244::11/128"), p("fd00:10:244::ff/128"), p("fd00:10:244::100/128"), p("fd00::1/128"), p("fd00:10:244::/112"),
	}
	s := &sets[r.IntN(len(sets))]
	switch op := r.IntN(10); {
	case op < 5:
		s.Prefixes = append(s.Prefixes, joins[r.IntN(len(joins))])
	case op < 8 && len(s.Prefixes) > 0:
		i := r.IntN(len(s.Prefixes))
		s.Prefixes = slices.Delete(slices.Clone(s.Prefixes), i, i+1)
	case op < 9 && len(s.Prefixes) > 0:
		i := r.IntN(len(s.Prefixes))
		base := s.Prefixes[i]
		hole := netip.PrefixFrom(base.Addr(), min(base.Addr().BitLen(), base.Bits()+1+r.IntN(4)))
		rest := slices.Delete(slices.Clone(s.Prefixes), i, i+1)
		s.Prefixes = append(rest, dptest.Except(base, hole)...)
	default:
		s.Prefixes = nil
	}
	*s = dptest.Set(s.Name, s.Prefixes...)
	return s.Name
}

func cachedSets(sets []ir.AddressSet) map[string]*cachedSet {
	out := map[string]*cachedSet{}
	for _, s := range sets {
		out[s.Name] = &cachedSet{prefixes: s.Prefixes, r4: toRanges(s.Prefixes, false), r6: toRanges(s.Prefixes, true)}
	}
	return out
}

// TestSetPatchesAgreeWithEvaluateAndACompile patches random tiers through
// random changes of set contents, with rules of different verdicts that
// name several overlapping sets, and checks after every change that the
// patched maps equal the maps compiled from scratch and that one lookup
// gives Evaluate's first match for peers at every boundary.
func TestSetPatchesAgreeWithEvaluateAndACompile(t *testing.T) {
	names := []string{"a", "b", "cidr", "empty", ""}
	ports := []ir.PortRange{
		{Protocol: ir.TCP}, {Protocol: ir.UDP}, {Protocol: ir.TCP, From: 80, To: 443},
		{Protocol: ir.TCP, From: 8080, To: 8080}, {Protocol: ir.UDP, From: 53, To: 53}, {Protocol: 1},
	}
	actions := []ir.Action{ir.Accept, ir.Deny, ir.Pass, ir.Audit}
	var peers []netip.Addr
	for _, s := range []string{"10.244.0.8", "10.244.0.9", "10.244.0.10", "10.244.0.11", "10.244.0.12", "10.244.0.13", "10.244.0.14", "10.244.0.15",
		"10.244.0.16", "10.244.1.0", "10.244.1.77", "10.244.1.255", "10.244.2.0", "10.9.9.9", "9.255.255.255", "10.0.0.0", "10.255.255.255",
		"11.0.0.0", "11.0.0.1", "0.0.0.0", "255.255.255.255",
		"fd00:10:244::10", "fd00:10:244::11", "fd00:10:244::ff", "fd00:10:244::100", "fd00::1", "fe80::1", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"} {
		peers = append(peers, netip.MustParseAddr(s))
	}
	probes := []struct {
		proto uint8
		port  uint16
	}{{6, 79}, {6, 80}, {6, 443}, {6, 8080}, {17, 53}, {17, 54}, {1, 0}, {47, 0}}
	r := rand.New(rand.NewPCG(3, 4))
	o := compileOptions{logGroup: 7, logOn: true}
	patched, fallbacks := 0, 0
	for round := 0; round < 150; round++ {
		var rules []ir.Rule
		for j, n := 0, 2+r.IntN(6); j < n; j++ {
			rule := ir.Rule{ID: fmt.Sprintf("r%d", j), Peer: ir.PeerMatch{Set: names[r.IntN(len(names))], Negate: r.IntN(5) == 0}, Action: actions[r.IntN(len(actions))], Log: r.IntN(2) == 0}
			for q := r.IntN(3); q > 0; q-- {
				rule.Ports = append(rule.Ports, ports[r.IntN(len(ports))])
			}
			rules = append(rules, rule)
		}
		sets := patchSets()
		chain := &ir.Chain{Tiers: []ir.Tier{{Kind: ir.TierAdmin, Rules: rules}}}
		for _, d := range []ir.Direction{ir.Ingress, ir.Egress} {
			for _, v6 := range []bool{false, true} {
				sets := slices.Clone(sets)
				cur := cachedSets(sets)
				actionChains := map[string]*chainSpec{}
				ids := map[uint32]string{}
				ts := newTierState("t", rules, d, v6, o, ids, actionChains)
				if ts == nil {
					continue
				}
				ts.build(cur)
				for step := 0; step < 6; step++ {
					name := editSet(r, sets)
					next := cachedSets(sets)
					p, ok := ts.patch(next, map[string]*cachedSet{name: cur[name]})
					if ok {
						if p != nil {
							p.apply(map[string]*elemPatch{})
							patched++
						}
					} else {
						fallbacks++
						ts = newTierState("t", rules, d, v6, o, ids, actionChains)
						ts.build(next)
					}
					cur = next
					where := fmt.Sprintf("round %d %s v6=%v step %d (set %q now %v)", round, d, v6, step, name, sets)
					fresh := newTierState("t", rules, d, v6, o, map[uint32]string{}, map[string]*chainSpec{})
					fresh.build(cur)
					elems := func(ts *tierState) map[string]map[string]mapElem {
						out := map[string]map[string]mapElem{}
						for _, m := range ts.maps() {
							out[m.name] = m.elems
						}
						return out
					}
					if diff := cmp.Diff(elems(fresh), elems(ts), cmp.AllowUnexported(mapElem{}, verdict{})); diff != "" {
						t.Fatalf("%s: maps after patch differ from a compile (-compile +patch):\n%s", where, diff)
					}
					np := &ir.NodePolicy{Sets: sets}
					for _, peer := range peers {
						if peer.Is6() != v6 {
							continue
						}
						for _, pr := range probes {
							want := np.Evaluate(chain, peer, ir.Protocol(pr.proto), pr.port)
							v, ok := lookupRules(t, ts.rules(d == ir.Ingress, o), peer, pr.proto, pr.port, true)
							if got, exp := outcome(t, v, ok, actionChains, ids), expected(want, rules); got != exp {
								t.Fatalf("%s: peer %v proto %d port %d: maps decide %q, Evaluate %q\nrules: %+v", where, peer, pr.proto, pr.port, got, exp, rules)
							}
						}
					}
				}
			}
		}
	}
	t.Logf("%d patches, %d fallbacks to a compile", patched, fallbacks)
	if patched == 0 || fallbacks == 0 {
		t.Errorf("%d patches and %d fallbacks: the random changes did not exercise both paths", patched, fallbacks)
	}
}

// TestSetDeltasPatchOnlyTheChangedCells compiles a policy, changes set
// contents, and checks that the delta computed from the in-place patches
// turns the old state into exactly a fresh compile, without compiling
// any endpoint again (except when a map empties or fills).
func TestSetDeltasPatchOnlyTheChangedCells(t *testing.T) {
	steps := membershipSteps()
	np := membershipPolicy(patchSets())
	cache := newCompileCache()
	o := compileOptions{logGroup: 7, logOn: true}
	old := compileWith(cache, np, o)
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			// the maps the kernel holds before this step
			kernel := map[string]map[string]mapElem{}
			for n, m := range old.maps {
				kernel[n] = maps.Clone(m.elems)
			}
			s.edit(np)
			before := cache.compiledEndpoints
			want := compileWith(cache, np, o)
			if got := cache.compiledEndpoints - before; got != s.recompile {
				t.Errorf("%d endpoints compiled again, want %d", got, s.recompile)
			}
			d := diff(old, want)
			for _, n := range d.delMaps {
				delete(kernel, n)
			}
			for _, n := range d.newMaps {
				kernel[n] = maps.Clone(want.maps[n].elems)
			}
			for n, es := range d.elemDels {
				for _, e := range es {
					if _, ok := kernel[n][elemID(e)]; !ok {
						t.Errorf("map %s: delta deletes an element the kernel does not hold", n)
					}
					delete(kernel[n], elemID(e))
				}
			}
			for n, es := range d.elemAdds {
				for _, e := range es {
					if _, ok := kernel[n][elemID(e)]; ok {
						t.Errorf("map %s: delta adds an element the kernel holds", n)
					}
					kernel[n][elemID(e)] = e
				}
			}
			fresh := compile(np, o)
			got := map[string]map[string]mapElem{}
			for n, m := range fresh.maps {
				got[n] = m.elems
			}
			if diff := cmp.Diff(got, kernel, cmp.AllowUnexported(mapElem{}, verdict{})); diff != "" {
				t.Errorf("maps after the delta differ from a compile (-compile +delta):\n%s", diff)
			}
			if s.recompile == 0 && (len(d.newChains) > 0 || len(d.changedChains) > 0 || len(d.delChains) > 0 || len(d.newMaps) > 0 || len(d.delMaps) > 0) {
				t.Errorf("a membership change touched chains or maps: %+v", d)
			}
			if d.ops == 0 {
				t.Error("the change produced no delta")
			}
			t.Logf("delta of %d operations", d.ops)
			old = want
		})
	}
}

// membershipPolicy has three endpoints whose tiers name overlapping sets
// with rules of every verdict, and an egress tier on a set that starts
// empty.
func membershipPolicy(sets []ir.AddressSet) *ir.NodePolicy {
	a := netip.MustParseAddr
	np := &ir.NodePolicy{Node: "n", Sets: sets}
	for i, name := range []string{"ns/p0", "ns/p1", "ns/p2"} {
		ep := ir.Endpoint{Name: name, IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 244, 9, byte(i + 1)}), a(fmt.Sprintf("fd00:10:244:9::%d", i+1))}}
		ep.Ingress.Tiers = []ir.Tier{
			dptest.Tier(ir.TierAdmin,
				dptest.Rule("ZonePolicy/deny-b", "b", false, ir.Deny, ir.PortRange{Protocol: ir.TCP, From: uint16(80 + i), To: 443}),
				dptest.Rule("ZonePolicy/audit-cidr", "cidr", false, ir.Audit),
				dptest.Rule("ZonePolicy/pass-a", "a", false, ir.Pass)),
			dptest.Tier(ir.TierNetworkPolicy,
				dptest.Rule("NetworkPolicy/ns/np/ingress/0", "a", false, ir.Accept, ir.PortRange{Protocol: ir.TCP, From: 8080, To: 8080}),
				dptest.Rule("NetworkPolicy/ns/np/ingress/1", "b", false, ir.Accept, ir.PortRange{Protocol: ir.UDP, From: 53, To: 53})),
			dptest.Tier(ir.TierBaseline, dptest.Rule("Zone/z/baseline", "", false, ir.Deny)),
		}
		ep.Egress.Tiers = []ir.Tier{dptest.Tier(ir.TierAdmin, dptest.Rule("ZonePolicy/egress-empty", "empty", false, ir.Deny))}
		np.Endpoints = append(np.Endpoints, ep)
	}
	return np
}

type membershipStep struct {
	name      string
	edit      func(np *ir.NodePolicy)
	recompile int // endpoints compiled again
}

func setPrefixes(np *ir.NodePolicy, name string, ps ...netip.Prefix) {
	for i := range np.Sets {
		if np.Sets[i].Name == name {
			np.Sets[i] = dptest.Set(name, ps...)
		}
	}
}

// membershipSteps change set contents of membershipPolicy one after the
// other: joins and leaves of hosts and CIDRs, and a set that fills and
// empties (its map appears and goes, so its endpoints compile again).
func membershipSteps() []membershipStep {
	p := netip.MustParsePrefix
	set := setPrefixes
	return []membershipStep{
		{"a host joins a set named by rules of every verdict", func(np *ir.NodePolicy) {
			set(np, "a", p("10.244.0.10/32"), p("10.244.0.12/31"), p("10.244.0.99/32"), p("fd00:10:244::10/128"))
		}, 0},
		{"a host joins next to a range and the range grows", func(np *ir.NodePolicy) {
			set(np, "a", p("10.244.0.10/32"), p("10.244.0.11/32"), p("10.244.0.12/31"), p("10.244.0.99/32"), p("fd00:10:244::10/128"))
		}, 0},
		{"a host inside an overlapping CIDR leaves one set", func(np *ir.NodePolicy) {
			set(np, "b", p("10.244.1.0/24"), p("fd00:10:244::/120"))
		}, 0},
		{"a CIDR exception is carved out", func(np *ir.NodePolicy) {
			set(np, "cidr", append(dptest.Except(p("10.0.0.0/8"), p("10.244.0.12/32"), p("10.244.1.128/25")), dptest.Except(p("fd00::/8"), p("fd00:10:244::10/128"))...)...)
		}, 0},
		{"an empty set gets its first member: the map appears", func(np *ir.NodePolicy) {
			set(np, "empty", p("10.244.3.3/32"))
		}, 3},
		{"the set empties again: the map goes", func(np *ir.NodePolicy) {
			set(np, "empty")
		}, 3},
	}
}

// TestZoneMemberChangesTouchOnlyHashMaps compiles a zone boundary run (a
// Pass for the zone's members, a logged Deny for everyone outside the
// zone, then a NetworkPolicy accepting some members on one port) over a
// zone of 200 scattered pods, and checks that a member joining or leaving
// changes single keys only: the guard and the member's cells, never a
// range. Without the background, the Deny's cells would be the ranges
// between the members, and every change would replace two of them.
func TestZoneMemberChangesTouchOnlyHashMaps(t *testing.T) {
	zone, web := scatteredZone(200, 4, 244)
	sets := []ir.AddressSet{dptest.Set("web", web...), dptest.Set("zone", zone...)}
	tiers := zoneBoundaryTiers("zone", "web", "NetworkPolicy/ns/db/ingress/0")
	o := compileOptions{logGroup: 7, logOn: true}
	ts := newRunState("t", tiers, ir.Ingress, false, o, map[uint32]string{}, map[string]*chainSpec{})
	cur := cachedSets(sets)
	ts.build(cur)
	ranges := func() int {
		n := 0
		for _, m := range ts.maps() {
			for _, e := range m.elems {
				if e.keyEnd != nil {
					n++
				}
			}
		}
		return n
	}
	if n := ranges(); n != 0 {
		t.Fatalf("the compiled run holds %d ranges, want none: %v", n, ts.maps())
	}
	if g := ts.sets["t-g"]; g == nil || len(g.elems) != 200 {
		t.Fatalf("guard set %v, want the 200 members", g)
	}
	for _, step := range []struct {
		name     string
		set      string
		prefixes []netip.Prefix
		elems    int // element changes: the guard and the member's cells
	}{
		{"a pod joins the zone", "zone", append(slices.Clone(zone), netip.MustParsePrefix("10.244.9.9/32")), 1},
		{"a pod joins the zone and the web set", "web", append(slices.Clone(web), netip.MustParsePrefix("10.244.9.9/32")), 1},
		{"a web pod leaves both", "zone", slices.Delete(append(slices.Clone(zone), netip.MustParsePrefix("10.244.9.9/32")), 0, 1), 2},
	} {
		i := slices.IndexFunc(sets, func(s ir.AddressSet) bool { return s.Name == step.set })
		sets[i] = dptest.Set(step.set, step.prefixes...)
		if step.name == "a web pod leaves both" {
			j := slices.IndexFunc(sets, func(s ir.AddressSet) bool { return s.Name == "web" })
			sets[j] = dptest.Set("web", slices.Delete(slices.Clone(sets[j].Prefixes), 0, 1)...)
		}
		next := cachedSets(sets)
		changed := map[string]*cachedSet{}
		for n, c := range cur {
			if !slices.Equal(c.prefixes, next[n].prefixes) {
				changed[n] = c
			}
		}
		p, ok := ts.patch(next, changed)
		if !ok || p == nil {
			t.Fatalf("%s: patch %v ok=%v, want a patch", step.name, p, ok)
		}
		n := 0
		for _, sp := range p.specs {
			for _, e := range append(slices.Clone(sp.adds), sp.dels...) {
				if e.keyEnd != nil {
					t.Errorf("%s: map %s: a range changes: %x-%x", step.name, sp.name, e.key, e.keyEnd)
				}
				n++
			}
		}
		if n != step.elems {
			t.Errorf("%s: %d element changes, want %d: %+v", step.name, n, step.elems, p.specs)
		}
		p.apply(map[string]*elemPatch{})
		cur = next
	}
}

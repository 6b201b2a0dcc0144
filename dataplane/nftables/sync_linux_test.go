//go:build linux

package nftables

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"

	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// largePolicy has n endpoints, each with its own rules, and sets of
// pod addresses; diverse ports so that no rule repeats.
func largePolicy(n int) *ir.NodePolicy {
	np := &ir.NodePolicy{Node: "node-1"}
	for i := 0; i < 8; i++ {
		// 40 scattered pod addresses (single keys in the tier maps'
		// exact twins) and a block of 30 (a range in the interval maps).
		var ps []netip.Prefix
		for j := 0; j < 40; j++ {
			ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(10 + i), byte(j*3 + 1)}), 32))
		}
		for j := 0; j < 30; j++ {
			ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(10 + i), byte(200 + j)}), 32))
		}
		np.Sets = append(np.Sets, dptest.Set(fmt.Sprintf("sel-%02d", i), ps...))
	}
	for i := 0; i < n; i++ {
		ep := ir.Endpoint{
			Name: fmt.Sprintf("ns/pod-%05d", i),
			IPs:  []netip.Addr{netip.AddrFrom4([4]byte{10, 244, byte(i >> 8), byte(i)}), netip.MustParseAddr(fmt.Sprintf("fd00:10:244::%x", i+1))},
		}
		ep.Ingress.Tiers = []ir.Tier{
			dptest.Tier(ir.TierNetworkPolicy,
				dptest.Rule(fmt.Sprintf("NetworkPolicy/ns/p%d/ingress/0", i), fmt.Sprintf("sel-%02d", i%8), false, ir.Accept,
					ir.PortRange{Protocol: ir.TCP, From: uint16(1000 + i), To: uint16(1000 + i)})),
			dptest.Tier(ir.TierBaseline, dptest.Rule("Zone/z/baseline", "", false, ir.Deny)),
		}
		np.Endpoints = append(np.Endpoints, ep)
	}
	return np
}

func TestSecondSyncChangesNothing(t *testing.T) {
	ns := nsOnly(t)
	b := newBackend(t, ns, Options{})
	ctx := context.Background()
	if err := b.Sync(ctx, referencePolicy()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	before := nft(t, ns, "-a", "list", "table", "inet", "bulkhead")
	if err := b.Sync(ctx, referencePolicy()); err != nil {
		t.Fatalf("second Sync: %v", err)
	}
	after := nft(t, ns, "-a", "list", "table", "inet", "bulkhead")
	// -a prints rule handles: a rewrite would renumber them.
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("second Sync changed the table (-before +after):\n%s", diff)
	}
	if s := b.Stats(); s.Rebuilds != 1 || s.NoOps != 1 || s.Deltas != 0 {
		t.Errorf("stats = %+v, want 1 rebuild and 1 no-op", s)
	}
	if err := b.Verify(ctx); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestUnchangedSyncVerifiesOnlyAfterAnotherCommit(t *testing.T) {
	ns := nsOnly(t)
	b := newBackend(t, ns, Options{})
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if err := b.Sync(ctx, referencePolicy()); err != nil {
			t.Fatalf("Sync: %v", err)
		}
	}
	if s := b.Stats(); s.GenerationHits != 2 || s.NoOps != 2 {
		t.Fatalf("stats = %+v, want two no-ops proven by the generation", s)
	}
	// A commit elsewhere in the namespace moves the generation: the next
	// unchanged Sync compares the whole table (and finds it intact).
	nft(t, ns, "add", "table", "inet", "someone-else")
	t.Cleanup(func() { nft(t, ns, "delete", "table", "inet", "someone-else") })
	if err := b.Sync(ctx, referencePolicy()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if s := b.Stats(); s.GenerationHits != 2 || s.NoOps != 3 || s.Rebuilds != 1 {
		t.Errorf("stats = %+v, want a verified no-op", s)
	}
	if err := b.Sync(ctx, referencePolicy()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if s := b.Stats(); s.GenerationHits != 3 {
		t.Errorf("stats = %+v, want the verified generation remembered", s)
	}
}

// listing returns the table text without handles, its set, map and
// chain blocks sorted: the kernel lists objects in creation order, which
// differs between a table built by deltas and one built from scratch.
func listing(t *testing.T, ns string) string {
	out := nft(t, ns, "list", "table", "inet", "bulkhead")
	body := strings.TrimSpace(out)
	first := strings.Index(body, "\n")
	last := strings.LastIndex(body, "\n")
	if first < 0 || last <= first {
		return out
	}
	blocks := strings.Split(strings.TrimSpace(body[first:last]), "\n\n")
	for i := range blocks {
		blocks[i] = strings.TrimSpace(blocks[i])
	}
	sort.Strings(blocks)
	return body[:first] + "\n" + strings.Join(blocks, "\n\n") + "\n}\n"
}

func TestSmallChangesAreDeltasThatEqualARebuild(t *testing.T) {
	nsDelta, nsFresh := nsOnly(t), nsOnly(t)
	ctx := context.Background()
	b := newBackend(t, nsDelta, Options{})
	np := largePolicy(300)
	if err := b.Sync(ctx, np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	steps := []struct {
		name   string
		edit   func(np *ir.NodePolicy)
		maxOps int
	}{
		{"one set gains an address", func(np *ir.NodePolicy) {
			s := &np.Sets[3]
			s.Prefixes = append(s.Prefixes, netip.MustParsePrefix("10.244.200.1/32"))
			// Each of the ~38 exact tier maps naming the set gains
			// one element.
		}, 40},
		{"one set loses an address", func(np *ir.NodePolicy) {
			s := &np.Sets[2]
			s.Prefixes = s.Prefixes[1:]
			// In each of the ~38 exact tier maps naming the set, one
			// element goes.
		}, 40},
		{"one set's block of addresses grows", func(np *ir.NodePolicy) {
			s := &np.Sets[1]
			s.Prefixes = append(s.Prefixes, netip.MustParsePrefix("10.244.11.230/32"))
			// The block's range grows: in each of the ~38 interval
			// tier maps naming the set, one element is replaced (a
			// delete and an add).
		}, 80},
		{"one endpoint's rule changes port", func(np *ir.NodePolicy) {
			np.Endpoints[17].Ingress.Tiers[0].Rules[0].Ports[0] = ir.PortRange{Protocol: ir.UDP, From: 53, To: 53}
			// Every element of the endpoint's IPv4 tier maps is
			// replaced: 40 single keys and one range, deleted and
			// added.
		}, 84},
		{"one endpoint is quarantined", func(np *ir.NodePolicy) {
			ep := &np.Endpoints[42]
			ep.Quarantined = true
			q := dptest.Tier(ir.TierQuarantine, dptest.Rule("Quarantine/ns/q", "", false, ir.Deny))
			ep.Ingress.Tiers = append([]ir.Tier{q}, ep.Ingress.Tiers...)
			ep.Egress.Tiers = []ir.Tier{q}
			// The quarantine's catch-all Deny is one logging drop
			// rule in each of the four endpoint chains, rewritten
			// (each starts with the mid-stream TCP drop; the egress
			// ones are new, the pod's egress had no tier), and the
			// ingress tiers after it are no longer reachable: their
			// maps go.
		}, 54},
		{"an endpoint leaves and another arrives", func(np *ir.NodePolicy) {
			np.Endpoints = append(np.Endpoints[:5], np.Endpoints[6:]...)
			np.Endpoints = append(np.Endpoints, ir.Endpoint{Name: "ns/zz-new", IPs: []netip.Addr{netip.MustParseAddr("10.244.99.1")}})
		}, 50},
		{"a set is replaced by a new one with one more address", func(np *ir.NodePolicy) {
			// Map contents do not depend on set names: only the new
			// address reaches the kernel.
			np.Sets[0].Name = "sel-00-renamed"
			np.Sets[0].Prefixes = append(np.Sets[0].Prefixes, netip.MustParsePrefix("10.244.201.1/32"))
			for i := range np.Endpoints {
				for k := range np.Endpoints[i].Ingress.Tiers {
					for r := range np.Endpoints[i].Ingress.Tiers[k].Rules {
						if np.Endpoints[i].Ingress.Tiers[k].Rules[r].Peer.Set == "sel-00" {
							np.Endpoints[i].Ingress.Tiers[k].Rules[r].Peer.Set = "sel-00-renamed"
						}
					}
				}
			}
			sortSets(np)
		}, 40},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			before := b.Stats()
			s.edit(np)
			if err := b.Sync(ctx, np); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			st := b.Stats()
			if st.Deltas != before.Deltas+1 || st.Rebuilds != before.Rebuilds {
				t.Fatalf("stats %+v after %+v: want one more delta and no rebuild", st, before)
			}
			if st.LastOps > s.maxOps {
				t.Errorf("delta has %d operations, want at most %d", st.LastOps, s.maxOps)
			}
			if err := b.Verify(ctx); err != nil {
				t.Errorf("Verify after delta: %v", err)
			}
			fresh := newBackend(t, nsFresh, Options{})
			if err := fresh.Sync(ctx, np); err != nil {
				t.Fatalf("fresh Sync: %v", err)
			}
			if diff := cmp.Diff(listing(t, nsFresh), listing(t, nsDelta)); diff != "" {
				t.Errorf("table after delta differs from a rebuild (-rebuild +delta):\n%s", diff)
			}
		})
	}
}

func sortSets(np *ir.NodePolicy) {
	for i := 1; i < len(np.Sets); i++ {
		for j := i; j > 0 && np.Sets[j].Name < np.Sets[j-1].Name; j-- {
			np.Sets[j], np.Sets[j-1] = np.Sets[j-1], np.Sets[j]
		}
	}
}

func TestLargeChangeRebuilds(t *testing.T) {
	ns := nsOnly(t)
	ctx := context.Background()
	b := newBackend(t, ns, Options{MaxDeltaOps: 200})
	if err := b.Sync(ctx, largePolicy(50)); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if err := b.Sync(ctx, referencePolicy()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if s := b.Stats(); s.Rebuilds != 2 || s.Deltas != 0 {
		t.Errorf("stats = %+v, want 2 rebuilds", s)
	}
	if err := b.Verify(ctx); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

var handleRE = regexp.MustCompile(`# handle (\d+)`)

func TestResyncRepairsDrift(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name  string
		drift func(t *testing.T, ns string)
	}{
		{"a deleted rule", func(t *testing.T, ns string) {
			out := nft(t, ns, "-a", "list", "chain", "inet", "bulkhead", "ep-"+hashName("ns/suspect")+"-i4")
			m := handleRE.FindAllStringSubmatch(out, -1)
			if len(m) == 0 {
				t.Fatalf("no rule handles in:\n%s", out)
			}
			nft(t, ns, "delete", "rule", "inet", "bulkhead", "ep-"+hashName("ns/suspect")+"-i4", "handle", m[len(m)-1][1])
		}},
		{"an added rule", func(t *testing.T, ns string) {
			nft(t, ns, "insert", "rule", "inet", "bulkhead", "egress", "accept")
		}},
		{"a changed rule", func(t *testing.T, ns string) {
			c := "ep-" + hashName("ns/db-0") + "-i4"
			out := nft(t, ns, "-a", "list", "chain", "inet", "bulkhead", c)
			m := handleRE.FindAllStringSubmatch(out, -1)
			// m[0] is the chain's own handle, m[1] midstreamDrop, m[2]
			// the first lookup.
			nft(t, ns, "replace", "rule", "inet", "bulkhead", c, "handle", m[2][1], "tcp", "dport", "5432", "accept", "comment", `"NetworkPolicy/ns/db/ingress/0"`)
		}},
		{"an element added to a tier map", func(t *testing.T, ns string) {
			nft(t, ns, "add", "element", "inet", "bulkhead", "ep-"+hashName("ns/db-0")+"-i4-admin-m", "{ 10.244.0.66 . tcp . 80 }")
		}},
		{"a deleted map element", func(t *testing.T, ns string) {
			nft(t, ns, "delete", "element", "inet", "bulkhead", "ingress4", "{ 10.244.0.9 }")
		}},
		{"a base chain policy set to drop", func(t *testing.T, ns string) {
			nft(t, ns, "add", "chain", "inet", "bulkhead", "egress", "{ policy drop ; }")
		}},
		{"a deleted chain", func(t *testing.T, ns string) {
			c := "ep-" + hashName("ns/suspect") + "-e4"
			nft(t, ns, "flush", "chain", "inet", "bulkhead", c)
			nft(t, ns, "delete", "element", "inet", "bulkhead", "egress4", "{ 10.244.0.9 }")
			nft(t, ns, "delete", "chain", "inet", "bulkhead", c)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ns := nsOnly(t)
			b := newBackend(t, ns, Options{})
			if err := b.Sync(ctx, referencePolicy()); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			want := listing(t, ns)
			c.drift(t, ns)
			if listing(t, ns) == want {
				t.Fatal("the drift did not change the table")
			}
			if err := b.Verify(ctx); err == nil {
				t.Error("Verify found no drift")
			} else {
				t.Logf("Verify: %v", err)
			}
			if err := b.Sync(ctx, referencePolicy()); err != nil {
				t.Fatalf("resync: %v", err)
			}
			if s := b.Stats(); s.DriftRepairs != 1 {
				t.Errorf("stats = %+v, want 1 drift repair", s)
			}
			if diff := cmp.Diff(want, listing(t, ns)); diff != "" {
				t.Errorf("resync did not repair the table (-want +got):\n%s", diff)
			}
			if err := b.Verify(ctx); err != nil {
				t.Errorf("Verify after repair: %v", err)
			}
		})
	}
}

func TestOtherTablesAreLeftAloneAndUninstallRemovesOurs(t *testing.T) {
	ns := nsOnly(t)
	ctx := context.Background()
	nft(t, ns, "add", "table", "inet", "other")
	nft(t, ns, "add", "chain", "inet", "other", "c", "{ type filter hook forward priority 5 ; }")
	nft(t, ns, "add", "rule", "inet", "other", "c", "counter")
	other := nft(t, ns, "list", "table", "inet", "other")
	b := newBackend(t, ns, Options{})
	if err := b.Sync(ctx, referencePolicy()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if err := b.Sync(ctx, largePolicy(3)); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if err := b.Uninstall(ctx); err != nil {
		t.Fatalf("Uninstall: %v", err)
	}
	tables := nft(t, ns, "list", "tables")
	if strings.Contains(tables, "bulkhead") {
		t.Errorf("table still present after Uninstall:\n%s", tables)
	}
	if diff := cmp.Diff(other, nft(t, ns, "list", "table", "inet", "other")); diff != "" {
		t.Errorf("another table changed (-before +after):\n%s", diff)
	}
	if err := b.Uninstall(ctx); err != nil {
		t.Errorf("second Uninstall: %v", err)
	}
	// After Uninstall the next Sync rebuilds.
	if err := b.Sync(ctx, referencePolicy()); err != nil {
		t.Fatalf("Sync after Uninstall: %v", err)
	}
	if err := b.Verify(ctx); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestNewBackendAdoptsAnEqualTable(t *testing.T) {
	ns := nsOnly(t)
	ctx := context.Background()
	b := newBackend(t, ns, Options{})
	if err := b.Sync(ctx, referencePolicy()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	before := nft(t, ns, "-a", "list", "table", "inet", "bulkhead")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2, err := New(Options{NetNSPath: ns, NFLogGroup: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if err := b2.Sync(ctx, referencePolicy()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if s := b2.Stats(); s.Adopted != 1 || s.Rebuilds != 0 {
		t.Errorf("stats = %+v, want the table adopted without a rebuild", s)
	}
	if diff := cmp.Diff(before, nft(t, ns, "-a", "list", "table", "inet", "bulkhead")); diff != "" {
		t.Errorf("restart rewrote the table:\n%s", diff)
	}
}

func TestLargeSetsKeepEveryElement(t *testing.T) {
	ns := nsOnly(t)
	ctx := context.Background()
	b := newBackend(t, ns, Options{})
	np := &ir.NodePolicy{Node: "n"}
	// "hosts": 24,000 non-adjacent IPv4 hosts and 6,000 IPv6 hosts,
	// accepted on every protocol and port: one element per host in the
	// tier's address map (a hash map). "blocks": 24,000 non-adjacent
	// IPv4 /27s, too wide for the exact maps: one range per block in each
	// of the tier's interval maps (address . proto . port, and the
	// fallback address . proto).
	var hosts, blocks []netip.Prefix
	for i := 0; i < 24000; i++ {
		hosts = append(hosts, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 14), byte(i >> 6), byte(i<<2) + 1}), 32))
		blocks = append(blocks, netip.PrefixFrom(netip.AddrFrom4([4]byte{11, byte(i >> 10), byte(i >> 2), byte(i << 6)}), 27))
	}
	for i := 0; i < 6000; i++ {
		hosts = append(hosts, netip.PrefixFrom(netip.MustParseAddr(fmt.Sprintf("fd00:10:244::%x:1", i)), 128))
	}
	np.Sets = []ir.AddressSet{dptest.Set("blocks", blocks...), dptest.Set("hosts", hosts...)}
	np.Endpoints = []ir.Endpoint{{
		Name: "ns/p", IPs: []netip.Addr{netip.MustParseAddr("10.244.0.2"), netip.MustParseAddr("fd00:10:244::2")},
		Ingress: ir.Chain{Tiers: []ir.Tier{dptest.Tier(ir.TierAdmin, dptest.Rule("ZonePolicy/hosts", "hosts", false, ir.Accept))}},
	}, {
		Name: "ns/q", IPs: []netip.Addr{netip.MustParseAddr("10.244.0.3")},
		Ingress: ir.Chain{Tiers: []ir.Tier{dptest.Tier(ir.TierAdmin, dptest.Rule("ZonePolicy/blocks", "blocks", false, ir.Accept))}},
	}}
	if err := b.Sync(ctx, np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	t.Logf("rebuild with %d operations took %v", b.Stats().LastOps, b.Stats().LastDuration)
	c, err := nftables.New(nftables.WithNetNSFd(int(b.ns)))
	if err != nil {
		t.Fatal(err)
	}
	count := func(ep string, v6 bool, suffix string) int {
		t.Helper()
		n := endpointChainName(ep, ir.Ingress, v6) + "-admin" + suffix
		s, err := c.GetSetByName(b.table, n)
		if err != nil {
			t.Fatalf("reading map %s: %v", n, err)
		}
		els, err := c.GetSetElements(s)
		if err != nil {
			t.Fatalf("reading elements of %s: %v", n, err)
		}
		return len(els)
	}
	check := func(hosts4, blocks int) {
		t.Helper()
		for _, c := range []struct {
			ep     string
			v6     bool
			suffix string
			want   int
		}{{"ns/p", false, "-a", hosts4}, {"ns/p", true, "-a", 6000}, {"ns/q", false, "-m", blocks}, {"ns/q", false, "-o", blocks}} {
			if got := count(c.ep, c.v6, c.suffix); got != c.want {
				t.Errorf("%s v6=%v map %s: the kernel holds %d elements, want %d", c.ep, c.v6, c.suffix, got, c.want)
			}
		}
	}
	check(24000, 24000)
	// A delta into each big set stays a delta and keeps every element.
	np.Sets[1].Prefixes = append([]netip.Prefix{netip.MustParsePrefix("9.9.9.9/32")}, np.Sets[1].Prefixes...)
	np.Sets[0].Prefixes = append([]netip.Prefix{netip.MustParsePrefix("9.0.0.0/27")}, np.Sets[0].Prefixes...)
	if err := b.Sync(ctx, np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if s := b.Stats(); s.Deltas != 1 || s.LastOps != 3 {
		t.Errorf("stats = %+v, want a delta of 3 elements", s)
	}
	t.Logf("delta of 3 elements took %v", b.Stats().LastDuration)
	check(24001, 24001)
	if err := b.Verify(ctx); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

// TestSetMembershipDeltasEqualARebuild applies membership changes of sets
// named by rules of every verdict, with overlapping CIDRs, as deltas to
// the kernel, and checks that each is a small delta of elements, that the
// kernel holds every element (Verify reads them back and counts them),
// and that the table equals one built from scratch.
func TestSetMembershipDeltasEqualARebuild(t *testing.T) {
	nsDelta, nsFresh := nsOnly(t), nsOnly(t)
	ctx := context.Background()
	b := newBackend(t, nsDelta, Options{})
	np := membershipPolicy(patchSets())
	if err := b.Sync(ctx, np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	for _, s := range membershipSteps() {
		t.Run(s.name, func(t *testing.T) {
			before, compiled := b.Stats(), b.cache.compiledEndpoints
			s.edit(np)
			if err := b.Sync(ctx, np); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			st := b.Stats()
			if st.Deltas != before.Deltas+1 || st.Rebuilds != before.Rebuilds {
				t.Fatalf("stats %+v after %+v: want one more delta and no rebuild", st, before)
			}
			if got := b.cache.compiledEndpoints - compiled; got != s.recompile {
				t.Errorf("%d endpoints compiled again, want %d", got, s.recompile)
			}
			t.Logf("delta of %d operations, commit %v", st.LastOps, st.LastCommit)
			if err := b.Verify(ctx); err != nil {
				t.Errorf("Verify after delta: %v", err)
			}
			fresh := newBackend(t, nsFresh, Options{})
			if err := fresh.Sync(ctx, np); err != nil {
				t.Fatalf("fresh Sync: %v", err)
			}
			// The kernel lists interval elements in insertion order.
			if diff := cmp.Diff(sortedElements(listing(t, nsFresh)), sortedElements(listing(t, nsDelta))); diff != "" {
				t.Errorf("table after delta differs from a rebuild (-rebuild +delta):\n%s", diff)
			}
		})
	}
}

var elementsRE = regexp.MustCompile(`elements = \{([^}]*)\}`)

// sortedElements sorts the elements of every set and map in an nft
// listing.
func sortedElements(l string) string {
	return elementsRE.ReplaceAllStringFunc(l, func(m string) string {
		body := elementsRE.FindStringSubmatch(m)[1]
		es := strings.Split(body, ",")
		for i := range es {
			es[i] = strings.TrimSpace(es[i])
		}
		sort.Strings(es)
		return "elements = { " + strings.Join(es, ", ") + " }"
	})
}

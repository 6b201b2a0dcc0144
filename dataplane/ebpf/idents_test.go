package ebpf

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// hostPool are single addresses, some inside prefixPool's CIDRs.
var hostPool = []string{
	"10.244.1.5/32", "10.244.1.6/32", "10.244.1.200/32", "10.244.2.7/32", "10.244.9.9/32",
	"10.1.2.3/32", "192.168.7.7/32", "172.16.0.1/32", "fd00:10:244:1::5/128",
	"fd00:10:244:1::9/128", "fd00:10:244:7::1/128", "2001:db8::1/128",
}

// mutateSets makes one random change to np's sets and says which.
func mutateSets(r *rand.Rand, np *ir.NodePolicy, next *int) string {
	pick := func() netip.Prefix {
		if r.IntN(3) == 0 {
			return netip.MustParsePrefix(prefixPool[r.IntN(len(prefixPool))])
		}
		return netip.MustParsePrefix(hostPool[r.IntN(len(hostPool))])
	}
	if len(np.Sets) == 0 || r.IntN(10) == 0 { // a new set
		*next++
		s := ir.AddressSet{Name: fmt.Sprintf("s%02d", *next)}
		for j := r.IntN(4); j >= 0; j-- {
			s.Prefixes = append(s.Prefixes, pick())
		}
		np.Sets = append(np.Sets, s)
		slices.SortFunc(np.Sets, func(a, b ir.AddressSet) int { return cmpStrings(a.Name, b.Name) })
		return "new set " + s.Name
	}
	i := r.IntN(len(np.Sets))
	s := &np.Sets[i]
	switch r.IntN(7) {
	case 0:
		name := s.Name
		np.Sets = slices.Delete(np.Sets, i, i+1)
		return "set " + name + " removed"
	case 1, 2, 3:
		p := pick()
		s.Prefixes = append(append([]netip.Prefix(nil), s.Prefixes...), p)
		return "set " + s.Name + " gained " + p.String()
	case 4, 5:
		if len(s.Prefixes) == 0 {
			return "nothing"
		}
		j := r.IntN(len(s.Prefixes))
		p := s.Prefixes[j]
		s.Prefixes = slices.Delete(append([]netip.Prefix(nil), s.Prefixes...), j, j+1)
		return "set " + s.Name + " lost " + p.String()
	default: // same prefixes, another order
		ps := append([]netip.Prefix(nil), s.Prefixes...)
		r.Shuffle(len(ps), func(a, b int) { ps[a], ps[b] = ps[b], ps[a] })
		s.Prefixes = ps
		return "set " + s.Name + " reordered"
	}
}

func cmpStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestIncrementalIdentitiesEqualAFullComputation changes sets one step at
// a time (addresses and CIDRs joining and leaving sets, sets appearing
// and going) and checks after every step that the incrementally updated
// trie, its live identities and each set's identities are exactly what
// computing them from nothing gives; and that the change log rebuilds
// every earlier version and yields the exact entry diff between any
// earlier version and the latest.
func TestIncrementalIdentitiesEqualAFullComputation(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	np := &ir.NodePolicy{}
	next := 0
	alloc := newAllocator()
	st := newIdentState()
	history := map[uint64]map[identKey]uint32{}
	incremental := 0
	for step := 0; step < 3000; step++ {
		what := mutateSets(r, np, &next)
		before := st.ver
		st.update(np, alloc)
		if st.ver != before {
			incremental++
		}
		idents, members, bits := identities(np, alloc)
		if d := cmp.Diff(idents, st.idents); d != "" {
			t.Fatalf("step %d (%s): identities (-full +incremental):\n%s", step, what, d)
		}
		if d := cmp.Diff(members, st.members); d != "" {
			t.Fatalf("step %d (%s): members (-full +incremental):\n%s", step, what, d)
		}
		wantSetIDs := map[string][]uint32{}
		for _, id := range st.liveIDs() {
			for s := range members[id] {
				wantSetIDs[s] = append(wantSetIDs[s], id)
			}
		}
		if d := cmp.Diff(wantSetIDs, st.setIDs); d != "" {
			t.Fatalf("step %d (%s): set identities (-want +got):\n%s", step, what, d)
		}
		for fam := range bits {
			if d := cmp.Diff(bits[fam], st.bits[fam]); d != "" {
				t.Fatalf("step %d (%s): prefix lengths of family %d (-full +incremental):\n%s", step, what, fam, d)
			}
		}
		snap := make(map[identKey]uint32, len(st.idents))
		for k, v := range st.idents {
			snap[k] = v
		}
		history[st.ver] = snap
		// An earlier version, rebuilt and diffed against the latest.
		v := uint64(r.IntN(int(st.ver) + 1))
		if want, ok := history[v]; ok {
			got, ok := st.at(v)
			if !ok {
				t.Fatalf("step %d: version %d no longer in the log", step, v)
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Fatalf("step %d: version %d rebuilt from the log (-recorded +rebuilt):\n%s", step, v, d)
			}
			old := &program{ist: st, iver: v}
			latest := &program{ist: st, iver: st.ver}
			put, del, ok := identDiff(old, latest)
			if !ok {
				t.Fatalf("step %d: no diff from version %d", step, v)
			}
			applied := make(map[identKey]uint32, len(want))
			for k, id := range want {
				applied[k] = id
			}
			for _, k := range del {
				if _, ok := applied[k]; !ok {
					t.Fatalf("step %d: diff from version %d deletes %v, which it does not hold", step, v, k.prefixOf())
				}
				delete(applied, k)
			}
			for k, id := range put {
				if w, ok := applied[k]; ok && w == id {
					t.Fatalf("step %d: diff from version %d rewrites %v with its own value", step, v, k.prefixOf())
				}
				applied[k] = id
			}
			if d := cmp.Diff(st.idents, applied); d != "" {
				t.Fatalf("step %d: version %d plus its diff (-latest +applied):\n%s", step, v, d)
			}
		}
	}
	if incremental < 1000 {
		t.Errorf("only %d of 3000 steps changed the trie: the steps do not exercise updates", incremental)
	}
	t.Logf("%d steps changed the trie; %d identities allocated", incremental, alloc.nextIdent-1)
}

// TestOneAddressTouchesOnePrefix: an address joining a set whose
// membership already has an identity changes one trie entry and reuses
// that identity; an address inside a CIDR of another set gets the
// identity of both; leaving restores the earlier entries.
func TestOneAddressTouchesOnePrefix(t *testing.T) {
	np := &ir.NodePolicy{Sets: []ir.AddressSet{
		{Name: "pods", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.244.1.5/32"), netip.MustParsePrefix("10.244.1.6/32")}},
		{Name: "web", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.244.1.7/32")}},
		{Name: "net", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}},
	}}
	alloc := newAllocator()
	st := newIdentState()
	st.update(np, alloc)
	pods := st.idents[mapped(netip.MustParsePrefix("10.244.1.5/32"))]
	v0 := st.ver
	before, _ := st.at(v0)

	np.Sets[0].Prefixes = append(np.Sets[0].Prefixes, netip.MustParsePrefix("10.244.3.1/32"))
	st.update(np, alloc)
	ch, _ := st.since(v0)
	if len(ch) != 1 {
		t.Fatalf("joining a set changed %d entries, want 1: %v", len(ch), ch)
	}
	if got := st.idents[mapped(netip.MustParsePrefix("10.244.3.1/32"))]; got != pods {
		t.Errorf("new address of pods has identity %d, want pods' identity %d", got, pods)
	}

	v1 := st.ver
	np.Sets[0].Prefixes = append(np.Sets[0].Prefixes, netip.MustParsePrefix("10.244.2.9/32"))
	st.update(np, alloc)
	ch, _ = st.since(v1)
	k := mapped(netip.MustParsePrefix("10.244.2.9/32"))
	if len(ch) != 1 || ch[k] != (identOld{}) {
		t.Fatalf("an address inside net's CIDR changed %v, want only its own new entry", ch)
	}
	if d := cmp.Diff(map[string]bool{"pods": true, "net": true}, st.members[st.idents[k]]); d != "" {
		t.Errorf("members of the address inside net's CIDR (-want +got):\n%s", d)
	}

	np.Sets[0].Prefixes = np.Sets[0].Prefixes[:2]
	st.update(np, alloc)
	if d := cmp.Diff(before, st.idents); d != "" {
		t.Errorf("after both addresses left (-before +after):\n%s", d)
	}
}

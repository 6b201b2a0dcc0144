package stream

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
)

// Diff returns the delta that turns prev into next: endpoints and sets
// added or changed (whole, by name) and the names of those removed. A nil
// prev is an empty policy. Unchanged endpoints and sets are not sent.
func Diff(prev, next *ir.NodePolicy) *pb.Delta {
	return diff(prev, next, nil)
}

// diff is Diff with an optional memo of set changes shared by nodes.
func diff(prev, next *ir.NodePolicy, memo *setMemo) *pb.Delta {
	if prev == nil {
		prev = &ir.NodePolicy{}
	}
	d := &pb.Delta{}
	// Endpoints are sorted by name (an IR invariant): merge-walk them.
	i, j := 0, 0
	for i < len(prev.Endpoints) || j < len(next.Endpoints) {
		switch {
		case j == len(next.Endpoints) || (i < len(prev.Endpoints) && prev.Endpoints[i].Name < next.Endpoints[j].Name):
			d.RemovedEndpoints = append(d.RemovedEndpoints, prev.Endpoints[i].Name)
			i++
		case i == len(prev.Endpoints) || prev.Endpoints[i].Name > next.Endpoints[j].Name:
			d.UpsertedEndpoints = append(d.UpsertedEndpoints, EndpointToProto(&next.Endpoints[j]))
			j++
		default:
			if !EqualEndpoint(&prev.Endpoints[i], &next.Endpoints[j]) {
				d.UpsertedEndpoints = append(d.UpsertedEndpoints, EndpointToProto(&next.Endpoints[j]))
			}
			i++
			j++
		}
	}

	// Sets are sorted by name too (an IR invariant); a policy that breaks
	// it is diffed by name through a map instead, so the result stays
	// right.
	if !setsSorted(prev.Sets) || !setsSorted(next.Sets) {
		diffSetsByName(d, prev.Sets, next.Sets, memo)
		return d
	}
	i, j = 0, 0
	for i < len(prev.Sets) || j < len(next.Sets) {
		switch {
		case j == len(next.Sets) || (i < len(prev.Sets) && prev.Sets[i].Name < next.Sets[j].Name):
			d.RemovedSets = append(d.RemovedSets, prev.Sets[i].Name)
			i++
		case i == len(prev.Sets) || prev.Sets[i].Name > next.Sets[j].Name:
			d.UpsertedSets = append(d.UpsertedSets, memo.whole(&next.Sets[j]))
			j++
		default:
			diffSet(d, &prev.Sets[i], &next.Sets[j], memo)
			i++
			j++
		}
	}
	return d
}

func setsSorted(sets []ir.AddressSet) bool {
	for i := 1; i < len(sets); i++ {
		if sets[i-1].Name >= sets[i].Name {
			return false
		}
	}
	return true
}

func diffSetsByName(d *pb.Delta, prev, next []ir.AddressSet, memo *setMemo) {
	oldSets := make(map[string]*ir.AddressSet, len(prev))
	for i := range prev {
		oldSets[prev[i].Name] = &prev[i]
	}
	for i := range next {
		s := &next[i]
		if o, ok := oldSets[s.Name]; ok {
			delete(oldSets, s.Name)
			diffSet(d, o, s, memo)
			continue
		}
		d.UpsertedSets = append(d.UpsertedSets, memo.whole(s))
	}
	for name := range oldSets {
		d.RemovedSets = append(d.RemovedSets, name)
	}
	sort.Strings(d.RemovedSets)
	slices.SortFunc(d.UpsertedSets, func(a, b *pb.AddressSet) int { return strings.Compare(a.GetName(), b.GetName()) })
}

// diffSet adds to d the change from o to s, two forms of one set: none,
// a patch, or the whole set when that is smaller.
func diffSet(d *pb.Delta, o, s *ir.AddressSet, memo *setMemo) {
	if samePrefixes(o.Prefixes, s.Prefixes) {
		return
	}
	if p := memo.patch(s.Name, o.Prefixes, s.Prefixes); p != nil {
		d.PatchedSets = append(d.PatchedSets, p)
		return
	}
	d.UpsertedSets = append(d.UpsertedSets, memo.whole(s))
}

// setMemo remembers set changes by the identity of the prefix slices
// involved. The engine shares one slice per set between every node that
// references it, so when a set changes, the patch (or the whole set) is
// computed and encoded once and the same message is shared by every
// node's delta, not recomputed for each node. Per set name it keeps only
// the newest form seen and the changes to it, so it holds at most one
// older form of each set besides the current one; Hub.EndRound drops it
// all. Keys hold the slices, so an address is never reused for another
// slice while it is remembered; IR slices are immutable once published.
// A nil memo computes every time.
type setMemo struct {
	mu    sync.Mutex
	names map[string]*setMemoEntry
}

type setMemoEntry struct {
	to      setForm
	whole   *pb.AddressSet           // to, encoded; nil until needed
	patches map[setForm]*pb.SetPatch // from → to; a nil value: whole is smaller
}

type setForm struct {
	first *netip.Prefix
	n     int
}

func formOf(p []netip.Prefix) setForm {
	f := setForm{n: len(p)}
	if len(p) > 0 {
		f.first = &p[0]
	}
	return f
}

// entry returns the memo entry for the set's form to, replacing one for
// an older form. Call with m.mu held.
func (m *setMemo) entry(name string, to setForm) *setMemoEntry {
	e := m.names[name]
	if e == nil || e.to != to {
		if m.names == nil {
			m.names = map[string]*setMemoEntry{}
		}
		e = &setMemoEntry{to: to, patches: map[setForm]*pb.SetPatch{}}
		m.names[name] = e
	}
	return e
}

func (m *setMemo) patch(name string, old, next []netip.Prefix) *pb.SetPatch {
	if m == nil {
		return patchSet(name, old, next)
	}
	from, to := formOf(old), formOf(next)
	m.mu.Lock()
	p, ok := m.entry(name, to).patches[from]
	m.mu.Unlock()
	if ok {
		return p
	}
	p = patchSet(name, old, next)
	m.mu.Lock()
	m.entry(name, to).patches[from] = p
	m.mu.Unlock()
	return p
}

func (m *setMemo) whole(s *ir.AddressSet) *pb.AddressSet {
	if m == nil {
		return SetToProto(s)
	}
	to := formOf(s.Prefixes)
	m.mu.Lock()
	w := m.entry(s.Name, to).whole
	m.mu.Unlock()
	if w != nil {
		return w
	}
	w = SetToProto(s)
	m.mu.Lock()
	m.entry(s.Name, to).whole = w
	m.mu.Unlock()
	return w
}

func (m *setMemo) clear() {
	m.mu.Lock()
	m.names = nil
	m.mu.Unlock()
}

// samePrefixes reports whether two prefix lists are equal; lists that
// share their backing array are equal without a scan.
func samePrefixes(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	return slices.Equal(a, b)
}

// comparePrefix is the order of a set's prefixes: by address, then length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// patchSet returns the element changes from old to next (both sorted by
// comparePrefix), or nil when a whole upsert is smaller.
func patchSet(name string, old, next []netip.Prefix) *pb.SetPatch {
	p := &pb.SetPatch{Name: name}
	i, j := 0, 0
	for i < len(old) || j < len(next) {
		switch {
		case j == len(next) || (i < len(old) && comparePrefix(old[i], next[j]) < 0):
			p.Removed = append(p.Removed, prefixToProto(old[i]))
			i++
		case i == len(old) || comparePrefix(old[i], next[j]) > 0:
			p.Added = append(p.Added, prefixToProto(next[j]))
			j++
		default:
			i++
			j++
		}
		if len(p.Added)+len(p.Removed) >= len(next) {
			return nil
		}
	}
	return p
}

func prefixToProto(p netip.Prefix) *pb.Prefix {
	return &pb.Prefix{Addr: p.Addr().AsSlice(), Bits: uint32(p.Bits())}
}

// Empty reports whether a delta changes nothing.
func Empty(d *pb.Delta) bool {
	return len(d.GetUpsertedEndpoints()) == 0 && len(d.GetRemovedEndpoints()) == 0 &&
		len(d.GetUpsertedSets()) == 0 && len(d.GetRemovedSets()) == 0 && len(d.GetPatchedSets()) == 0
}

// Apply returns a new policy: prev with the delta applied, endpoints and
// sets sorted by name as the IR requires. prev is not modified (its
// unchanged endpoints and sets are shared).
func Apply(prev *ir.NodePolicy, d *pb.Delta) (*ir.NodePolicy, error) {
	if prev == nil {
		prev = &ir.NodePolicy{}
	}
	eps := make(map[string]ir.Endpoint, len(prev.Endpoints)+len(d.GetUpsertedEndpoints()))
	for _, e := range prev.Endpoints {
		eps[e.Name] = e
	}
	for _, name := range d.GetRemovedEndpoints() {
		if _, ok := eps[name]; !ok {
			return nil, fmt.Errorf("delta removes endpoint %s, which is not present", name)
		}
		delete(eps, name)
	}
	for _, m := range d.GetUpsertedEndpoints() {
		e, err := EndpointFromProto(m)
		if err != nil {
			return nil, fmt.Errorf("delta: %w", err)
		}
		eps[e.Name] = e
	}
	sets := make(map[string]ir.AddressSet, len(prev.Sets)+len(d.GetUpsertedSets()))
	for _, s := range prev.Sets {
		sets[s.Name] = s
	}
	for _, name := range d.GetRemovedSets() {
		if _, ok := sets[name]; !ok {
			return nil, fmt.Errorf("delta removes address set %s, which is not present", name)
		}
		delete(sets, name)
	}
	for _, m := range d.GetUpsertedSets() {
		s, err := SetFromProto(m)
		if err != nil {
			return nil, fmt.Errorf("delta: %w", err)
		}
		sets[s.Name] = s
	}
	for _, m := range d.GetPatchedSets() {
		s, ok := sets[m.GetName()]
		if !ok {
			return nil, fmt.Errorf("delta patches address set %s, which is not present", m.GetName())
		}
		patched, err := applyPatch(s, m)
		if err != nil {
			return nil, fmt.Errorf("delta: %w", err)
		}
		sets[s.Name] = patched
	}
	next := &ir.NodePolicy{Node: prev.Node, Endpoints: make([]ir.Endpoint, 0, len(eps)), Sets: make([]ir.AddressSet, 0, len(sets))}
	for _, e := range eps {
		next.Endpoints = append(next.Endpoints, e)
	}
	sort.Slice(next.Endpoints, func(i, j int) bool { return next.Endpoints[i].Name < next.Endpoints[j].Name })
	for _, s := range sets {
		next.Sets = append(next.Sets, s)
	}
	sort.Slice(next.Sets, func(i, j int) bool { return next.Sets[i].Name < next.Sets[j].Name })
	return next, nil
}

func applyPatch(s ir.AddressSet, m *pb.SetPatch) (ir.AddressSet, error) {
	conv := func(what string, in []*pb.Prefix) ([]netip.Prefix, error) {
		tmp, err := SetFromProto(&pb.AddressSet{Name: s.Name, Prefixes: in})
		if err != nil {
			return nil, fmt.Errorf("patch %s: %w", what, err)
		}
		slices.SortFunc(tmp.Prefixes, comparePrefix)
		return tmp.Prefixes, nil
	}
	add, err := conv("added", m.GetAdded())
	if err != nil {
		return s, err
	}
	rm, err := conv("removed", m.GetRemoved())
	if err != nil {
		return s, err
	}
	out := make([]netip.Prefix, 0, len(s.Prefixes)+len(add)-len(rm))
	i, j, k := 0, 0, 0
	for i < len(s.Prefixes) || j < len(add) {
		if i < len(s.Prefixes) && k < len(rm) && s.Prefixes[i] == rm[k] {
			i++
			k++
			continue
		}
		if j == len(add) || (i < len(s.Prefixes) && comparePrefix(s.Prefixes[i], add[j]) < 0) {
			out = append(out, s.Prefixes[i])
			i++
		} else {
			out = append(out, add[j])
			j++
		}
	}
	if k != len(rm) {
		return s, fmt.Errorf("address set %s: patch removes %s, which is not present", s.Name, rm[k])
	}
	return ir.AddressSet{Name: s.Name, Prefixes: out}, nil
}

// EqualEndpoint reports whether two endpoints are identical.
func EqualEndpoint(a, b *ir.Endpoint) bool {
	return a.Name == b.Name && a.Quarantined == b.Quarantined && a.CutConnections == b.CutConnections &&
		sameAddrs(a.IPs, b.IPs) && equalChain(&a.Ingress, &b.Ingress) && equalChain(&a.Egress, &b.Egress)
}

// sameAddrs is slices.Equal, without a scan for lists that share their
// backing array (the engine shares an unchanged endpoint's IPs).
func sameAddrs(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	return slices.Equal(a, b)
}

func equalChain(a, b *ir.Chain) bool {
	if len(a.Tiers) != len(b.Tiers) {
		return false
	}
	if len(a.Tiers) == 0 || &a.Tiers[0] == &b.Tiers[0] {
		return true // shared, as the engine shares unchanged endpoints' chains
	}
	return slices.EqualFunc(a.Tiers, b.Tiers, func(x, y ir.Tier) bool {
		return x.Kind == y.Kind && slices.EqualFunc(x.Rules, y.Rules, func(r, s ir.Rule) bool {
			return r.ID == s.ID && r.Peer == s.Peer && r.Action == s.Action && r.Log == s.Log && slices.Equal(r.Ports, s.Ports)
		})
	})
}

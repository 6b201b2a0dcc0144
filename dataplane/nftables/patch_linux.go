//go:build linux

package nftables

import (
	"net/netip"
	"sort"
)

// Set-membership deltas. When only the contents of sets change, an
// endpoint's chains stay the same and each tier map naming a changed set
// changes only in the cells of the changed addresses. patch finds the
// pieces of the tier's address space that overlap a changed range, widens
// that window by one unchanged piece on each side (so that pieces that now
// merge with their neighbours are caught), resolves the window again, and
// turns the old and new pieces of the window into element deletions and
// additions. The neighbours outside the window keep their resolution, and
// a piece always differs from its neighbours, so nothing outside the
// window can merge with it: the result equals a compile from scratch.
//
// The maps are patched in place and the element changes recorded in the
// cache (compileCache.patches); diff takes them from there instead of
// comparing the maps. A map that would become empty, or stop being empty,
// changes the tier chain's rules: then the endpoint is compiled again
// instead.

// elemPatch is the element changes made in place to one compiled map
// since the state the kernel holds.
type elemPatch struct {
	adds, dels []mapElem
}

// tierPatch is the computed, not yet applied, change of one tier: the
// new pieces, and per map or goto set the elements to delete and add.
type tierPatch struct {
	ts     *tierState
	pieces []piece
	specs  []specPatch
}

type specPatch struct {
	name       string
	adds, dels []mapElem
}

// changedRanges returns ranges that cover every address whose membership
// differs between a and b (sorted, disjoint range lists): the ranges that
// are not in both.
func changedRanges(a, b []ipRange) []ipRange {
	var out []ipRange
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b):
			out = append(out, a[i])
			i++
		case i == len(a):
			out = append(out, b[j])
			j++
		case a[i] == b[j]:
			i++
			j++
		case a[i].from.Less(b[j].from):
			out = append(out, a[i])
			i++
		case b[j].from.Less(a[i].from):
			out = append(out, b[j])
			j++
		default: // same start, different end
			out = append(out, a[i], b[j])
			i++
			j++
		}
	}
	return out
}

// pieceAt returns the index of the piece that contains x.
func (ts *tierState) pieceAt(x netip.Addr) int {
	return sort.Search(len(ts.pieces), func(k int) bool { return !ts.pieces[k].hi.Less(x) })
}

// patch computes the change of the tier for the new set contents sets,
// where old holds the previous contents of the sets that changed. It
// returns nil and true when the tier does not change, and false when the
// change empties a map or fills an empty one (the tier chain changes).
func (ts *tierState) patch(sets, old map[string]*cachedSet) (*tierPatch, bool) {
	var cr []ipRange
	for _, ref := range ts.refs {
		o, ok := old[ref]
		if !ok {
			continue
		}
		n := sets[ref]
		if ts.v6 {
			cr = append(cr, changedRanges(o.r6, n.r6)...)
		} else {
			cr = append(cr, changedRanges(o.r4, n.r4)...)
		}
	}
	if len(cr) == 0 {
		return nil, true
	}
	type window struct{ i, j int }
	ws := make([]window, 0, len(cr))
	last := len(ts.pieces) - 1
	for _, r := range cr {
		ws = append(ws, window{max(ts.pieceAt(r.from)-1, 0), min(ts.pieceAt(r.to)+1, last)})
	}
	sort.Slice(ws, func(a, b int) bool { return ws[a].i < ws[b].i })
	merged := ws[:1]
	for _, w := range ws[1:] {
		cur := &merged[len(merged)-1]
		if w.i <= cur.j+1 {
			cur.j = max(cur.j, w.j)
			continue
		}
		merged = append(merged, w)
	}
	p := &tierPatch{ts: ts, pieces: make([]piece, 0, len(ts.pieces)+2*len(cr))}
	type change struct {
		spec *mapSpec
		dels map[string]mapElem
		news []mapElem
	}
	changes := map[string]*change{}
	at := func(e mapElem, kind mapKind) (*change, mapElem) {
		n, m, e := ts.target(e, kind)
		c := changes[n]
		if c == nil {
			c = &change{spec: m, dels: map[string]mapElem{}}
			changes[n] = c
		}
		return c, e
	}
	prev := 0
	for _, w := range merged {
		p.pieces = append(p.pieces, ts.pieces[prev:w.i]...)
		for _, op := range ts.pieces[w.i : w.j+1] {
			ts.pieceElems(op, func(e mapElem, kind mapKind) { c, e := at(e, kind); c.dels[elemID(e)] = e })
		}
		np := ts.piecesIn(sets, ts.pieces[w.i].lo, ts.pieces[w.j].hi)
		for _, q := range np {
			ts.pieceElems(q, func(e mapElem, kind mapKind) { c, e := at(e, kind); c.news = append(c.news, e) })
		}
		p.pieces = append(p.pieces, np...)
		prev = w.j + 1
	}
	p.pieces = append(p.pieces, ts.pieces[prev:]...)
	for _, n := range sortedKeys(changes) {
		c := changes[n]
		sp := specPatch{name: n}
		for _, e := range c.news {
			id := elemID(e)
			if d, had := c.dels[id]; had && d.v == e.v {
				delete(c.dels, id) // unchanged
				continue
			}
			sp.adds = append(sp.adds, e)
		}
		for _, d := range c.dels {
			sp.dels = append(sp.dels, d)
		}
		if len(sp.adds) == 0 && len(sp.dels) == 0 {
			continue
		}
		sortElems(sp.adds)
		sortElems(sp.dels)
		// Elements of the window never share a key with elements
		// outside it, so the new size is exact.
		before := 0
		if c.spec != nil {
			before = len(c.spec.elems)
		}
		after := before - len(sp.dels) + len(sp.adds)
		if (before == 0) != (after == 0) {
			return nil, false
		}
		p.specs = append(p.specs, sp)
	}
	return p, true
}

// apply makes the patch's changes to the tier's maps and records them in
// patches.
func (p *tierPatch) apply(patches map[string]*elemPatch) {
	p.ts.pieces = p.pieces
	for _, sp := range p.specs {
		m := p.ts.spec(sp.name) // exists: patch refuses to fill an empty map
		for _, e := range sp.dels {
			delete(m.elems, elemID(e))
		}
		for _, e := range sp.adds {
			m.add(e)
		}
		ep := patches[m.name]
		if ep == nil {
			ep = &elemPatch{}
			patches[m.name] = ep
		}
		ep.adds = append(ep.adds, sp.adds...)
		ep.dels = append(ep.dels, sp.dels...)
	}
}

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

// tierPatch is the computed, not yet applied, change of one tier.
type tierPatch struct {
	ts                                       *tierState
	pieces                                   []piece
	mainAdds, mainDels, otherAdds, otherDels []mapElem
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
	delMain, delOther := map[string]mapElem{}, map[string]mapElem{}
	var newMain, newOther []mapElem
	prev := 0
	for _, w := range merged {
		p.pieces = append(p.pieces, ts.pieces[prev:w.i]...)
		for _, op := range ts.pieces[w.i : w.j+1] {
			pieceElems(op, func(e mapElem) { delMain[elemID(e)] = e }, func(e mapElem) { delOther[elemID(e)] = e })
		}
		np := ts.piecesIn(sets, ts.pieces[w.i].lo, ts.pieces[w.j].hi)
		for _, q := range np {
			pieceElems(q, func(e mapElem) { newMain = append(newMain, e) }, func(e mapElem) { newOther = append(newOther, e) })
		}
		p.pieces = append(p.pieces, np...)
		prev = w.j + 1
	}
	p.pieces = append(p.pieces, ts.pieces[prev:]...)
	net := func(m *mapSpec, dels map[string]mapElem, news []mapElem) (adds, removed []mapElem, ok bool) {
		for _, e := range news {
			id := elemID(e)
			if d, had := dels[id]; had && d.v == e.v {
				delete(dels, id) // unchanged
				continue
			}
			adds = append(adds, e)
		}
		for _, d := range dels {
			removed = append(removed, d)
		}
		sortElems(adds)
		sortElems(removed)
		// Elements of the window never share a key with elements
		// outside it, so the map's new size is exact.
		after := len(m.elems) - len(removed) + len(adds)
		return adds, removed, (len(m.elems) == 0) == (after == 0)
	}
	var ok1, ok2 bool
	p.mainAdds, p.mainDels, ok1 = net(ts.main, delMain, newMain)
	p.otherAdds, p.otherDels, ok2 = net(ts.other, delOther, newOther)
	if !ok1 || !ok2 {
		return nil, false
	}
	return p, true
}

// apply makes the patch's changes to the tier's maps and records them in
// patches.
func (p *tierPatch) apply(patches map[string]*elemPatch) {
	p.ts.pieces = p.pieces
	for _, m := range []struct {
		spec       *mapSpec
		adds, dels []mapElem
	}{{p.ts.main, p.mainAdds, p.mainDels}, {p.ts.other, p.otherAdds, p.otherDels}} {
		if len(m.adds) == 0 && len(m.dels) == 0 {
			continue
		}
		for _, e := range m.dels {
			delete(m.spec.elems, elemID(e))
		}
		for _, e := range m.adds {
			m.spec.add(e)
		}
		ep := patches[m.spec.name]
		if ep == nil {
			ep = &elemPatch{}
			patches[m.spec.name] = ep
		}
		ep.adds = append(ep.adds, m.adds...)
		ep.dels = append(ep.dels, m.dels...)
	}
}

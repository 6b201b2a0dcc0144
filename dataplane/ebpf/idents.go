package ebpf

import (
	"slices"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// identState is the identity trie kept from one compile to the next, so
// that a set change costs what it touches. A prefix's identity depends
// only on the sets that list it or a prefix containing it: when a set
// gains or loses a prefix P, only P and the prefixes inside P can change
// identity. update recomputes exactly those, reusing the identity number
// of a membership that exists already.
//
// Programs compiled from the state name it and its version; the state
// logs every change of an entry with the version that made it, so the
// entries that differ between two versions are known without comparing
// whole tries (identDiff).
type identState struct {
	sets map[string]*setState
	// byPrefix lists the sets that name exactly this prefix, sorted.
	byPrefix map[identKey][]string
	// lens counts, per family and prefix length, the prefixes of
	// byPrefix; bits lists the lengths longest first.
	lens map[uint8]map[uint8]int
	bits map[uint8][]uint8
	// idents is the trie's content now: every prefix of byPrefix.
	idents map[identKey]uint32
	// refs counts the prefixes of each live identity; members holds the
	// sets of each live identity (and of identity 0, member of none);
	// setIDs the live identities of each set, ascending.
	refs    map[uint32]int
	members map[uint32]map[string]bool
	setIDs  map[string][]uint32
	// setStamp is, per set with live identities, the allocator's stamp
	// of the update that last changed its identities: a chain compiled
	// with the same stamps for its sets has the same inputs.
	setStamp map[string]uint64
	stampNow uint64
	// ids is members' keys, ascending; nil when it must be rebuilt.
	ids []uint32
	// ver counts the updates that changed idents; log holds, oldest
	// first, every entry change made after version floor.
	ver   uint64
	floor uint64
	log   []identChange
	mark  uint64
	buf   []byte
}

// setState is what identState knows of one set.
type setState struct {
	text string // canonical text of the prefixes, as appendSetText writes it
	keys map[identKey]bool
	mark uint64
}

// identChange records that key had value old (had: existed) before
// version ver.
type identChange struct {
	ver uint64
	key identKey
	old uint32
	had bool
}

func newIdentState() *identState {
	return &identState{
		sets:     map[string]*setState{},
		byPrefix: map[identKey][]string{},
		lens:     map[uint8]map[uint8]int{4: {}, 6: {}},
		bits:     map[uint8][]uint8{},
		idents:   map[identKey]uint32{},
		refs:     map[uint32]int{},
		members:  map[uint32]map[string]bool{0: {}},
		setIDs:   map[string][]uint32{},
		setStamp: map[string]uint64{},
	}
}

// appendSetText appends a canonical text of s's prefixes to buf.
func appendSetText(buf []byte, s *ir.AddressSet) []byte {
	for _, p := range s.Prefixes {
		k := mapped(p)
		buf = append(buf, k.Fam, k.Bits)
		buf = append(buf, k.Addr[:]...)
	}
	return buf
}

// update makes the state hold the identities of np's sets. Sets whose
// prefixes are unchanged cost a comparison of their text; the others
// are diffed and only the prefixes they touch are recomputed.
func (st *identState) update(np *ir.NodePolicy, alloc *allocator) {
	st.mark++
	alloc.stamp++
	st.stampNow = alloc.stamp
	touched := map[identKey]bool{}
	lensChanged := false
	add := func(k identKey, set string) {
		names := st.byPrefix[k]
		i, found := slices.BinarySearch(names, set)
		if found {
			return
		}
		if len(names) == 0 {
			st.lens[k.Fam][k.Bits]++
			lensChanged = lensChanged || st.lens[k.Fam][k.Bits] == 1
		}
		st.byPrefix[k] = slices.Insert(names, i, set)
		touched[k] = true
	}
	remove := func(k identKey, set string) {
		names := st.byPrefix[k]
		i, found := slices.BinarySearch(names, set)
		if !found {
			return
		}
		names = slices.Delete(names, i, i+1)
		touched[k] = true
		if len(names) > 0 {
			st.byPrefix[k] = names
			return
		}
		delete(st.byPrefix, k)
		if st.lens[k.Fam][k.Bits]--; st.lens[k.Fam][k.Bits] == 0 {
			delete(st.lens[k.Fam], k.Bits)
			lensChanged = true
		}
	}
	for i := range np.Sets {
		s := &np.Sets[i]
		st.buf = appendSetText(st.buf[:0], s)
		ss := st.sets[s.Name]
		if ss != nil && ss.text == string(st.buf) {
			ss.mark = st.mark
			continue
		}
		keys := make(map[identKey]bool, len(s.Prefixes))
		for _, p := range s.Prefixes {
			keys[mapped(p)] = true
		}
		if ss == nil {
			ss = &setState{}
			st.sets[s.Name] = ss
		}
		for k := range ss.keys {
			if !keys[k] {
				remove(k, s.Name)
			}
		}
		for k := range keys {
			if !ss.keys[k] {
				add(k, s.Name)
			}
		}
		ss.text, ss.keys, ss.mark = string(st.buf), keys, st.mark
	}
	for name, ss := range st.sets {
		if ss.mark == st.mark {
			continue
		}
		for k := range ss.keys {
			remove(k, name)
		}
		delete(st.sets, name)
	}
	if len(touched) == 0 {
		return
	}
	if lensChanged {
		lens := map[uint8]map[uint8]bool{4: {}, 6: {}}
		for fam, ls := range st.lens {
			for b := range ls {
				lens[fam][b] = true
			}
		}
		st.bits = sortedLens(lens)
	}
	// Prefixes inside a touched prefix that is not a single address
	// change with it.
	wide := map[uint8]map[uint8]map[identKey]bool{}
	for k := range touched {
		if k.Bits < famBits(k.Fam) {
			if wide[k.Fam] == nil {
				wide[k.Fam] = map[uint8]map[identKey]bool{}
			}
			if wide[k.Fam][k.Bits] == nil {
				wide[k.Fam][k.Bits] = map[identKey]bool{}
			}
			wide[k.Fam][k.Bits][k] = true
		}
	}
	affected := touched
	if len(wide) > 0 {
		affected = make(map[identKey]bool, len(touched))
		for k := range touched {
			affected[k] = true
		}
		for q := range st.byPrefix {
			for b, ws := range wide[q.Fam] {
				if q.Bits > b && ws[maskKey(q, b)] {
					affected[q] = true
					break
				}
			}
		}
	}
	st.ver++
	// Deterministic order, so that new identity numbers do not depend
	// on map iteration.
	keys := make([]identKey, 0, len(affected))
	for k := range affected {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareIdentKeys)
	var in []string
	for _, k := range keys {
		old, had := st.idents[k]
		if len(st.byPrefix[k]) == 0 {
			if had {
				st.log = append(st.log, identChange{ver: st.ver, key: k, old: old, had: true})
				delete(st.idents, k)
				st.release(old)
			}
			continue
		}
		in = in[:0]
		for _, b := range st.bits[k.Fam] {
			if b > k.Bits {
				continue
			}
			mk := k
			if b != k.Bits {
				mk = maskKey(k, b)
			}
			in = append(in, st.byPrefix[mk]...)
		}
		slices.Sort(in)
		in = slices.Compact(in)
		id := alloc.identity(strings.Join(in, "\x00"))
		if had && id == old {
			continue
		}
		st.log = append(st.log, identChange{ver: st.ver, key: k, old: old, had: had})
		st.idents[k] = id
		st.acquire(id, in)
		if had {
			st.release(old)
		}
	}
}

// famBits is the address length of a family.
func famBits(fam uint8) uint8 {
	if fam == 4 {
		return 32
	}
	return 128
}

func compareIdentKeys(a, b identKey) int {
	if a.Fam != b.Fam {
		return int(a.Fam) - int(b.Fam)
	}
	if c := strings.Compare(string(a.Addr[:]), string(b.Addr[:])); c != 0 {
		return c
	}
	return int(a.Bits) - int(b.Bits)
}

// acquire counts one more prefix of identity id, whose member sets are
// names.
func (st *identState) acquire(id uint32, names []string) {
	st.refs[id]++
	if st.refs[id] > 1 {
		return
	}
	m := make(map[string]bool, len(names))
	for _, s := range names {
		m[s] = true
		ids := st.setIDs[s]
		i, _ := slices.BinarySearch(ids, id)
		st.setIDs[s] = slices.Insert(ids, i, id)
		st.setStamp[s] = st.stampNow
	}
	st.members[id] = m
	st.ids = nil
}

// release counts one prefix of identity id less.
func (st *identState) release(id uint32) {
	if st.refs[id]--; st.refs[id] > 0 {
		return
	}
	delete(st.refs, id)
	for s := range st.members[id] {
		ids := st.setIDs[s]
		if i, found := slices.BinarySearch(ids, id); found {
			ids = slices.Delete(ids, i, i+1)
		}
		if len(ids) == 0 {
			delete(st.setIDs, s)
			delete(st.setStamp, s)
		} else {
			st.setIDs[s] = ids
			st.setStamp[s] = st.stampNow
		}
	}
	delete(st.members, id)
	st.ids = nil
}

// liveIDs returns the live identities (0 included), ascending.
func (st *identState) liveIDs() []uint32 {
	if st.ids == nil {
		st.ids = make([]uint32, 0, len(st.members))
		for id := range st.members {
			st.ids = append(st.ids, id)
		}
		slices.Sort(st.ids)
	}
	return st.ids
}

// identOld is an entry's value at some earlier version.
type identOld struct {
	id  uint32
	had bool
}

// since returns, for every entry changed after version v, its value at
// v. ok is false when the log no longer reaches back to v.
func (st *identState) since(v uint64) (map[identKey]identOld, bool) {
	if v < st.floor {
		return nil, false
	}
	i, _ := slices.BinarySearchFunc(st.log, v+1, func(c identChange, ver uint64) int {
		switch {
		case c.ver < ver:
			return -1
		case c.ver > ver:
			return 1
		}
		return 0
	})
	out := map[identKey]identOld{}
	for _, c := range st.log[i:] {
		if _, ok := out[c.key]; !ok {
			out[c.key] = identOld{c.old, c.had}
		}
	}
	return out, true
}

// trim forgets the changes up to version v: diffs from versions before
// v are no longer possible.
func (st *identState) trim(v uint64) {
	if v <= st.floor {
		return
	}
	v = min(v, st.ver)
	i := 0
	for i < len(st.log) && st.log[i].ver <= v {
		i++
	}
	st.log = slices.Delete(st.log, 0, i)
	st.floor = v
}

// at returns the trie's content at version v (a copy), or false when the
// log no longer reaches back to it.
func (st *identState) at(v uint64) (map[identKey]uint32, bool) {
	ch, ok := st.since(v)
	if !ok {
		return nil, false
	}
	out := make(map[identKey]uint32, len(st.idents))
	for k, id := range st.idents {
		out[k] = id
	}
	for k, o := range ch {
		if o.had {
			out[k] = o.id
		} else {
			delete(out, k)
		}
	}
	return out, true
}

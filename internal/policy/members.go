package policy

import (
	"math/bits"
	"net/netip"
	"slices"
)

// memberSet is a set of pods by their index (podInfo.idx): a bitset, so
// that the membership of thousands of selectors over ten thousand pods is
// cheap to build, test and walk.
type memberSet struct {
	words []uint64
	n     int
}

func (m *memberSet) has(i int32) bool {
	w := int(i >> 6)
	return m != nil && w < len(m.words) && m.words[w]&(1<<(uint(i)&63)) != 0
}

func (m *memberSet) add(i int32) {
	w := int(i >> 6)
	if w >= len(m.words) {
		m.words = slices.Grow(m.words, w+1-len(m.words))[:w+1]
	}
	if m.words[w]&(1<<(uint(i)&63)) == 0 {
		m.words[w] |= 1 << (uint(i) & 63)
		m.n++
	}
}

func (m *memberSet) remove(i int32) {
	w := int(i >> 6)
	if w < len(m.words) && m.words[w]&(1<<(uint(i)&63)) != 0 {
		m.words[w] &^= 1 << (uint(i) & 63)
		m.n--
	}
}

func (m *memberSet) len() int {
	if m == nil {
		return 0
	}
	return m.n
}

// eachMember calls fn for every member pod, in index order.
func (e *Engine) eachMember(m *memberSet, fn func(*podInfo)) {
	if m == nil {
		return
	}
	for w, x := range m.words {
		for x != 0 {
			i := w<<6 | bits.TrailingZeros64(x)
			x &= x - 1
			fn(e.podsByIdx[i])
		}
	}
}

// addrPod is one address of a selector member.
type addrPod struct {
	addr netip.Addr
	pod  *podInfo
}

func cmpAddrPod(a, b addrPod) int {
	if c := a.addr.Compare(b.addr); c != 0 {
		return c
	}
	switch {
	case a.pod.key < b.pod.key:
		return -1
	case a.pod.key > b.pod.key:
		return 1
	}
	return 0
}

// selList is a selector's members in address order, built once and shared
// by every set and named-port group that reads the selector. A membership
// change patches it (patchMemberList): the entries in place, the prefixes
// by a new slice.
type selList struct {
	// ents holds every (address, pod) pair, sorted by address then pod
	// key; two pods may share an address.
	ents []addrPod
	// prefixes are the distinct member addresses as host prefixes, sorted;
	// exactly what hostPrefixes returns for them.
	prefixes []netip.Prefix
}

func newSelList(ents []addrPod) *selList {
	return &selList{ents: ents, prefixes: hostsOfEnts(ents)}
}

// memberList returns the selector's members in address order; the
// selector must be watched.
func (e *Engine) memberList(s *podSel) *selList {
	c := &e.c
	if l := c.selSorted[s]; l != nil {
		return l
	}
	members := c.selMembers[s]
	ents := make([]addrPod, 0, members.len())
	e.eachMember(members, func(p *podInfo) {
		for _, a := range p.ips {
			ents = append(ents, addrPod{a, p})
		}
	})
	slices.SortFunc(ents, cmpAddrPod)
	l := newSelList(ents)
	c.selSorted[s] = l
	return l
}

// patchMemberList updates a built member list for one pod's change
// instead of sorting it again: old is the member before (nil if it was
// none), cur the member now (nil if it is none). The entries are patched
// in place (only the engine reads them, during a flush); the prefixes are
// replaced by a new slice when they change, since sets and published
// policies share them.
func (e *Engine) patchMemberList(s *podSel, old, cur *podInfo) {
	c := &e.c
	l := c.selSorted[s]
	if l == nil {
		return
	}
	key := ""
	if old != nil {
		key = old.key
	} else if cur != nil {
		key = cur.key
	}
	n := len(l.ents)
	ents := l.ents[:0]
	for _, x := range l.ents {
		if x.pod.key != key {
			ents = append(ents, x)
		}
	}
	clear(l.ents[len(ents):n]) // drop the pointers to the old pod
	if cur != nil {
		for _, a := range cur.ips {
			x := addrPod{a, cur}
			i, _ := slices.BinarySearchFunc(ents, x, cmpAddrPod)
			ents = slices.Insert(ents, i, x)
		}
	}
	l.ents = ents
	if !sameHosts(ents, l.prefixes) {
		l.prefixes = hostsOfEnts(ents)
	}
}

// hostsOfEnts returns the distinct addresses of sorted entries as host
// prefixes.
func hostsOfEnts(ents []addrPod) []netip.Prefix {
	n := 0
	for i, x := range ents {
		if i == 0 || ents[i-1].addr != x.addr {
			n++
		}
	}
	out := make([]netip.Prefix, 0, n)
	for i, x := range ents {
		if i == 0 || ents[i-1].addr != x.addr {
			out = append(out, hostPrefix(x.addr))
		}
	}
	return out
}

// sameHosts reports whether ps are the distinct addresses of the sorted
// entries as host prefixes.
func sameHosts(ents []addrPod, ps []netip.Prefix) bool {
	j := 0
	for i, x := range ents {
		if i > 0 && ents[i-1].addr == x.addr {
			continue
		}
		if j >= len(ps) || ps[j] != hostPrefix(x.addr) {
			return false
		}
		j++
	}
	return j == len(ps)
}

// mergePrefixes returns the sorted union of sorted, duplicate-free host
// prefix lists. A single list is returned as is (lists are immutable).
func mergePrefixes(lists [][]netip.Prefix) []netip.Prefix {
	switch len(lists) {
	case 0:
		return nil
	case 1:
		return lists[0]
	}
	// merge pairwise, sizing each union exactly: these sets are large
	// and live as long as endpoints use them
	acc := lists[0]
	for _, l := range lists[1:] {
		out := make([]netip.Prefix, 0, unionLen(acc, l))
		acc = mergeTwo(out, acc, l)
	}
	return acc
}

// unionLen is the length of the union of two sorted, duplicate-free
// lists of host prefixes.
func unionLen(a, b []netip.Prefix) int {
	n, i, j := 0, 0, 0
	for i < len(a) && j < len(b) {
		c := a[i].Addr().Compare(b[j].Addr())
		if c <= 0 {
			i++
		}
		if c >= 0 {
			j++
		}
		n++
	}
	return n + len(a) - i + len(b) - j
}

// mergeTwo appends the sorted union of two sorted, duplicate-free lists
// of host prefixes to out.
func mergeTwo(out, a, b []netip.Prefix) []netip.Prefix {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		c := a[i].Addr().Compare(b[j].Addr())
		switch {
		case c < 0:
			out = append(out, a[i])
			i++
		case c > 0:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

// mergeEnts returns the sorted union of sorted addrPod lists, dropping
// repeats of the same address and pod.
func mergeEnts(lists [][]addrPod) []addrPod {
	if len(lists) == 1 {
		return lists[0]
	}
	n := 0
	for _, l := range lists {
		n += len(l)
	}
	out := make([]addrPod, 0, n)
	heads := make([]int, len(lists))
	for {
		best := -1
		for i, l := range lists {
			if heads[i] >= len(l) {
				continue
			}
			if best < 0 || cmpAddrPod(l[heads[i]], lists[best][heads[best]]) < 0 {
				best = i
			}
		}
		if best < 0 {
			return out
		}
		x := lists[best][heads[best]]
		if k := len(out); k == 0 || out[k-1].addr != x.addr || out[k-1].pod.key != x.pod.key {
			out = append(out, x)
		}
		heads[best]++
	}
}

package policy

import (
	"net/netip"
	"slices"
)

// Zone sets (setZones, and setZoneMode: the members of every zone of a
// mode) hold the members of zones as the minimal prefixes of their address
// ranges. A pod that changes zone, or whose addresses change, changes the
// membership of its own addresses only, so instead of rebuilding such a
// set from every pod, patchZoneSet rewrites the few ranges around those
// addresses. A change of a zone (selectors, networks, mode, existence)
// still rebuilds the set (buildSet), through staleSets.

// inZoneSet reports whether address a is in a zone set with description
// d, as buildSet computes it.
func (e *Engine) inZoneSet(d *setDesc, a netip.Addr) bool {
	if d.kind == setZoneMode {
		for _, z := range e.zoneList {
			if z.audit() == d.audit && e.zoneHas(z.name, a) {
				return true
			}
		}
		return false
	}
	return e.zoneSetHas(d.names, a)
}

// zoneSetHas reports whether address a is in the zone set of names, as
// buildSet computes it.
func (e *Engine) zoneSetHas(names []string, a netip.Addr) bool {
	world, in := false, false
	for _, n := range names {
		if n == zoneWorld {
			world = true
			continue
		}
		if !in && e.zoneHas(n, a) {
			in = true
		}
	}
	if !world {
		return in
	}
	// the complement set holds every address some zone or pod has,
	// except the members of the named zones
	return !in && (e.isPodAddr(a) || e.inNetZone(a))
}

// zoneHas reports whether address a is a member of the zone (a real zone
// or "unzoned"): a pod address of a pod in it, or, for a network zone, an
// address of its networks that no pod has.
func (e *Engine) zoneHas(name string, a netip.Addr) bool {
	if name == zoneUnzoned {
		return addrListHas(e.podZoneAddrs(""), a)
	}
	z := e.zones[name]
	if z == nil {
		return false
	}
	if z.pods {
		return addrListHas(e.podZoneAddrs(name), a)
	}
	return rangesHave(z.effNets, a) && !e.isPodAddr(a)
}

// isPodAddr reports whether some pod has address a.
func (e *Engine) isPodAddr(a netip.Addr) bool {
	e.podZoneAddrs("") // builds the per-zone lists if needed
	for _, l := range e.c.zoneAddrs {
		if addrListHas(l, a) {
			return true
		}
	}
	return false
}

// inNetZone reports whether a is in the networks of a network zone.
func (e *Engine) inNetZone(a netip.Addr) bool {
	for _, z := range e.zoneList {
		if !z.pods && rangesHave(z.effNets, a) {
			return true
		}
	}
	return false
}

func addrListHas(l []netip.Addr, a netip.Addr) bool {
	_, ok := slices.BinarySearchFunc(l, a, netip.Addr.Compare)
	return ok
}

func rangesHave(rs []ipRange, a netip.Addr) bool {
	x := prefixRange(hostPrefix(a))
	for _, r := range rs {
		if r.v4 == x.v4 && !x.from.less(r.from) && !r.to.less(x.from) {
			return true
		}
	}
	return false
}

// contiguous reports whether range b starts right after range a ends.
func contiguous(a, b ipRange) bool {
	return a.v4 == b.v4 && a.to.inc() == b.from && a.to.less(b.from)
}

// zoneChange is one address whose membership in a zone set changes.
type zoneChange struct {
	at  ipRange // the address as a one-address range
	add bool
}

// patchZoneSet returns the prefixes of the built zone set s after the
// membership of the addresses moved may have changed; the membership of
// every other address must be as when s was built. It returns s.prefixes
// itself when nothing changed. s.prefixes is not modified: it is shared
// with published node policies.
func (e *Engine) patchZoneSet(s *setState, moved []netip.Addr) []netip.Prefix {
	ps := s.prefixes
	at := func(i int) ipRange { return prefixRange(ps[i]) }
	// ps is sorted in range order: the first prefix not before x
	search := func(x ipRange) int {
		i, _ := slices.BinarySearchFunc(ps, x, func(p netip.Prefix, x ipRange) int {
			r := prefixRange(p)
			if rangeBefore(r, x) {
				return -1
			}
			if rangeAfter(r, x) {
				return 1
			}
			return 0
		})
		return i
	}
	var changes []zoneChange
	for _, a := range moved {
		x := prefixRange(hostPrefix(a))
		i := search(x)
		have := i < len(ps) && !rangeAfter(at(i), x)
		if want := e.inZoneSet(&s.desc, a); want != have {
			changes = append(changes, zoneChange{at: x, add: want})
		}
	}
	if len(changes) == 0 {
		return ps
	}
	slices.SortFunc(changes, func(a, b zoneChange) int { return rangeLess(a.at, b.at) })
	changes = slices.CompactFunc(changes, func(a, b zoneChange) bool { return a.at == b.at })

	// A change rewrites a window of ps: the prefixes of the range that
	// holds the address and of the ranges that end right before it or
	// start right after it. Ranges are maximal (normalized), so the
	// prefixes between windows stay as they are; windows that touch are
	// rewritten together.
	out := make([]netip.Prefix, 0, len(ps)+len(changes))
	done := 0
	var rs, del []ipRange
	flush := func(lo, hi int) {
		out = append(out, ps[done:lo]...)
		for i := lo; i < hi; i++ {
			rs = append(rs, at(i))
		}
		rs = normalize(rs)
		if len(del) > 0 {
			rs = subtract(rs, normalize(del))
		}
		out = append(out, toPrefixes(rs)...)
		rs, del, done = rs[:0], del[:0], hi
	}
	wlo, whi := -1, -1 // the open window
	for _, c := range changes {
		x := c.at
		first := search(x)
		lo := first
		if lo > 0 && (contiguous(at(lo-1), x) || lo < len(ps) && contiguous(at(lo-1), at(lo))) {
			lo--
			for lo > 0 && contiguous(at(lo-1), at(lo)) {
				lo--
			}
		}
		hi := first
		for hi < len(ps) {
			r := at(hi)
			inside := !rangeAfter(r, x)
			if !inside && !contiguous(x, r) && !(hi > lo && contiguous(at(hi-1), r)) {
				break
			}
			hi++
		}
		if wlo >= 0 && lo > whi {
			flush(wlo, whi)
			wlo = -1
		}
		if wlo < 0 {
			wlo = lo
		}
		whi = max(whi, hi)
		if c.add {
			rs = append(rs, x)
		} else {
			del = append(del, x)
		}
	}
	flush(wlo, whi)
	return append(out, ps[done:]...)
}

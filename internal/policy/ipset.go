package policy

import (
	"math/bits"
	"net/netip"
	"slices"
)

// u128 is an address as a 128-bit integer; IPv4 addresses live in their own
// space (flagged by v4) so that the two families never merge.
type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo) }
func (a u128) cmp(b u128) int {
	switch {
	case a == b:
		return 0
	case a.less(b):
		return -1
	}
	return 1
}
func (a u128) inc() u128 {
	lo := a.lo + 1
	hi := a.hi
	if lo == 0 {
		hi++
	}
	return u128{hi, lo}
}
func (a u128) dec() u128 {
	lo := a.lo - 1
	hi := a.hi
	if a.lo == 0 {
		hi--
	}
	return u128{hi, lo}
}

// ipRange is an inclusive address range within one family.
type ipRange struct {
	v4       bool
	from, to u128
}

func addrU(a netip.Addr) u128 {
	b := a.As16()
	var hi, lo uint64
	for i := 0; i < 8; i++ {
		hi = hi<<8 | uint64(b[i])
		lo = lo<<8 | uint64(b[i+8])
	}
	return u128{hi, lo}
}

func uAddr(u u128, v4 bool) netip.Addr {
	var b [16]byte
	for i := 7; i >= 0; i-- {
		b[i] = byte(u.hi)
		b[i+8] = byte(u.lo)
		u.hi >>= 8
		u.lo >>= 8
	}
	a := netip.AddrFrom16(b)
	if v4 {
		return a.Unmap()
	}
	return a
}

func prefixRange(p netip.Prefix) ipRange {
	p = p.Masked()
	a := p.Addr()
	v4 := a.Is4()
	bitsLen := p.Bits()
	if v4 {
		a = netip.AddrFrom16(a.As16())
		bitsLen += 96
	}
	from := addrU(a)
	to := from
	host := 128 - bitsLen
	if host >= 64 {
		to.lo = ^uint64(0)
		if host == 128 {
			to.hi = ^uint64(0)
		} else {
			to.hi |= (uint64(1) << (host - 64)) - 1
		}
	} else if host > 0 {
		to.lo |= (uint64(1) << host) - 1
	}
	return ipRange{v4: v4, from: from, to: to}
}

func rangeLess(a, b ipRange) int {
	if a.v4 != b.v4 {
		if a.v4 {
			return -1
		}
		return 1
	}
	if c := a.from.cmp(b.from); c != 0 {
		return c
	}
	return a.to.cmp(b.to)
}

// normalize sorts and merges overlapping or adjacent ranges.
func normalize(rs []ipRange) []ipRange {
	if len(rs) <= 1 {
		return rs
	}
	slices.SortFunc(rs, rangeLess)
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if r.v4 == last.v4 && (!last.to.less(r.from) || last.to.inc() == r.from) {
			if last.to.less(r.to) {
				last.to = r.to
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

func rangeBefore(s, cur ipRange) bool {
	return (s.v4 && !cur.v4) || (s.v4 == cur.v4 && s.to.less(cur.from))
}

func rangeAfter(s, cur ipRange) bool {
	return (!s.v4 && cur.v4) || (s.v4 == cur.v4 && cur.to.less(s.from))
}

// subtract returns a minus b; both must be normalized.
func subtract(a, b []ipRange) []ipRange {
	var out []ipRange
	j := 0
	for _, r := range a {
		cur := r
		alive := true
		for j < len(b) && rangeBefore(b[j], cur) {
			j++
		}
		for k := j; k < len(b); k++ {
			s := b[k]
			if rangeAfter(s, cur) {
				break
			}
			if cur.from.less(s.from) {
				out = append(out, ipRange{v4: cur.v4, from: cur.from, to: s.from.dec()})
			}
			if s.to.less(cur.to) {
				cur.from = s.to.inc()
			} else {
				alive = false
				break
			}
		}
		if alive {
			out = append(out, cur)
		}
	}
	return out
}

// intersect returns a and b; both must be normalized.
func intersect(a, b []ipRange) []ipRange {
	var out []ipRange
	for _, r := range a {
		for _, s := range b {
			if r.v4 != s.v4 || r.to.less(s.from) || s.to.less(r.from) {
				continue
			}
			lo, hi := r.from, r.to
			if lo.less(s.from) {
				lo = s.from
			}
			if s.to.less(hi) {
				hi = s.to
			}
			out = append(out, ipRange{v4: r.v4, from: lo, to: hi})
		}
	}
	return normalize(out)
}

func rangesOf(ps []netip.Prefix) []ipRange {
	out := make([]ipRange, 0, len(ps))
	for _, p := range ps {
		out = append(out, prefixRange(p))
	}
	return normalize(out)
}

// toPrefixes converts normalized ranges to the minimal list of prefixes.
func toPrefixes(rs []ipRange) []netip.Prefix {
	var out []netip.Prefix
	for _, r := range rs {
		from := r.from
		for {
			// largest block starting at from that fits in [from, r.to]
			var tz int
			if from.lo != 0 {
				tz = bits.TrailingZeros64(from.lo)
			} else if from.hi != 0 {
				tz = 64 + bits.TrailingZeros64(from.hi)
			} else {
				tz = 128
			}
			maxHost := 128
			if r.v4 {
				maxHost = 32
			}
			if tz > maxHost {
				tz = maxHost
			}
			host := tz
			for host > 0 {
				end := blockEnd(from, host)
				if !r.to.less(end) {
					break
				}
				host--
			}
			end := blockEnd(from, host)
			a := uAddr(from, r.v4)
			pl := 128 - host
			if r.v4 {
				pl = 32 - host
			}
			out = append(out, netip.PrefixFrom(a, pl))
			if end == r.to {
				break
			}
			from = end.inc()
		}
	}
	return out
}

func blockEnd(from u128, host int) u128 {
	end := from
	if host >= 64 {
		end.lo = ^uint64(0)
		if host >= 128 {
			end.hi = ^uint64(0)
		} else {
			end.hi |= (uint64(1) << (host - 64)) - 1
		}
	} else if host > 0 {
		end.lo |= (uint64(1) << host) - 1
	}
	return end
}

// prefixSet builds canonical prefixes: include minus exclude.
func prefixSet(include, exclude []netip.Prefix) []netip.Prefix {
	in := make([]ipRange, 0, len(include))
	for _, p := range include {
		in = append(in, prefixRange(p))
	}
	in = normalize(in)
	if len(exclude) > 0 {
		ex := make([]ipRange, 0, len(exclude))
		for _, p := range exclude {
			ex = append(ex, prefixRange(p))
		}
		in = subtract(in, normalize(ex))
	}
	return toPrefixes(in)
}

// hostPrefixes returns sorted unique host prefixes of addresses; this is
// the fast path for sets that hold only pod IPs.
func hostPrefixes(addrs []netip.Addr) []netip.Prefix {
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	addrs = slices.Compact(addrs)
	out := make([]netip.Prefix, len(addrs))
	for i, a := range addrs {
		out[i] = netip.PrefixFrom(a, a.BitLen())
	}
	return out
}

func hostPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

//go:build linux

package nftables

import (
	"container/heap"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/google/nftables/expr"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// A run of tiers (see endpointChains) is compiled into at most two
// verdict maps, so that one lookup decides it whatever its number of
// rules, plus drop-log maps and goto sets for logged verdicts:
//
//   - "<run>-m", keyed by peer address . l4proto . dport, holds every
//     (address range, protocol range, port range) cell that some rule
//     decides, with the verdict of the deciding rule. Protocols without
//     ports appear with the whole port range.
//   - "<run>-o", keyed by peer address . l4proto, repeats the cells of
//     protocols without ports. It is consulted when the first lookup
//     misses: a packet whose transport header is too short to read a port
//     (the first lookup cannot load its key) must still meet the run's
//     catch-all rules. Protocols with ports are left out of it where the
//     first map does not cover all their ports with a final verdict, so a
//     TCP, UDP, SCTP or UDP-Lite packet that missed the first map, or
//     came back from an Audit, misses this one too.
//
// The cells are the first-match resolution of the run's rules: the
// address space of the family is cut at every boundary of the sets the
// run names, each piece gets the ordered list of rules whose peer matches
// it, and the (protocol, port) plane of that list is cut the same way,
// tier by tier (resolve). Adjacent pieces with equal cells merge.

// portProtos are the protocols whose rules can name ports.
var portProtos = [...]uint8{uint8(ir.TCP), uint8(ir.UDP), uint8(ir.SCTP), 136}

func isPortProto(p int) bool {
	for _, q := range portProtos {
		if int(q) == p {
			return true
		}
	}
	return false
}

// tierRule is one effective rule of a tier.
type tierRule struct {
	r    *ir.Rule
	tier int // index of the rule's tier in the run
	set  int // index into the run's referenced sets, -1 for any peer
	neg  bool
	v    verdict
}

// cell is one resolved box of the (protocol, port) plane.
type cell struct {
	plo, phi uint8
	lo, hi   uint16
	v        verdict
}

// resolution is the outcome of one list of matching rules: the cells of
// the main map and of the no-port fallback map.
type resolution struct {
	main, other []cell
}

func (r *resolution) key() string {
	var b strings.Builder
	for _, cs := range [][]cell{r.main, {}, r.other} {
		for _, c := range cs {
			b.WriteString(strconv.Itoa(int(c.plo)))
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(int(c.phi)))
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(int(c.lo)))
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(int(c.hi)))
			b.WriteByte('=')
			b.WriteString(strconv.Itoa(int(c.v.kind)))
			b.WriteString(c.v.chain)
			b.WriteByte(';')
		}
		b.WriteByte('|')
	}
	return b.String()
}

// segment is a piece of the address space with one membership.
type segment struct {
	lo, hi netip.Addr
	mem    string
}

// compileTier returns the lookup rules of one tier (none when no rule
// can match) for a chain of direction d, and records the action chains
// its verdicts go to in actions.
func compileTier(tn string, rules []ir.Rule, d ir.Direction, v6 bool, o compileOptions, ids map[uint32]string, sets map[string]*cachedSet, actions map[string]*chainSpec) []ruleSpec {
	ts := newTierState(tn, rules, d, v6, o, ids, actions)
	if ts == nil {
		return nil
	}
	ts.build(sets)
	return ts.rules(d == ir.Ingress, o)
}

// piece is a maximal address range of one tier whose addresses all get
// the same resolution. Neighbouring pieces always differ in key.
type piece struct {
	lo, hi netip.Addr
	res    *resolution
	key    string
}

// tierState is one compiled run of tiers of one endpoint, direction and
// family: its effective rules, the pieces of the address space with their
// resolution, and the maps built from them. It is kept between Syncs,
// so that a change in the contents of a set the tier names recomputes
// only the pieces around the changed addresses (patch).
type tierState struct {
	name string
	v6   bool
	// gotoSets is set when the cells whose verdict is a goto go to sets
	// of their own, one per action chain (see splitGotos).
	gotoSets bool
	trs      []tierRule
	refs     []string
	refIdx   map[string]int
	// memo holds the resolution of each membership seen so far (the
	// rules never change for one tierState), keys their keys.
	memo        map[string]*resolution
	keys        map[*resolution]string
	pieces      []piece
	main, other *mapSpec
	// sets are the other maps and sets by name, only the non-empty
	// ones.
	sets map[string]*mapSpec
	// bg is the background: the resolution of the addresses in none of
	// the run's sets, when it decides something (else nil), and bgKey
	// its key. Then only pieces whose resolution differs from it have
	// elements; their addresses are the run's guard sets, and the
	// background's cells are looked up, for the addresses outside the
	// guard sets, in maps whose address field spans the family
	// ("<run>-b-m", ...), or are one rule when they decide every
	// packet alike. A zone boundary ("not in my zone: deny") thus costs
	// one element per member in hash maps instead of the ranges
	// between the members, which change with every member.
	bg    *resolution
	bgKey string
}

// guardV marks the elements of a run's guard sets (see tierState.bg).
var guardV = verdict{kind: expr.VerdictContinue, chain: "guard"}

// maxGotoSets is the most action chains a tier may reach through sets of
// their own (see splitGotos); a tier with more keeps its gotos in the
// verdict maps.
const maxGotoSets = 8

// splitGotos: the kernel validates the whole table (every chain reachable
// from the base chains, walking every element of every verdict map) when
// a transaction adds a jump or goto verdict, about 20 ms of kernel time
// at 10k rules. Adding a plain accept or drop, or an element of a data
// map or of a set without data, needs no validation. So cells whose
// verdict jumps to an action chain (an Audit, a logged Accept) are kept
// out of the verdict maps: each action chain gets a set of its own,
// "<map>-<action chain suffix>", matched by a rule of the endpoint chain
// "<key> @set jump <action chain>". Logged drops go to the run's
// drop-log maps "<map>d" instead, a data map of rule numbers (see
// lookupRule). The cells never overlap, so at most one lookup of a run
// decides, whatever the order. A packet pays one lookup more per such
// set; runs with more than maxGotoSets action chains keep them in the
// verdict map instead.

// goSetName returns the name of the goto set of map m for action chain c.
func goSetName(m, c string) string { return m + "-" + strings.TrimPrefix(c, "rule-") }

// newTierState collects the effective rules of a tier; nil when no rule
// can match.
func newTierState(tn string, rules []ir.Rule, d ir.Direction, v6 bool, o compileOptions, ids map[uint32]string, actions map[string]*chainSpec) *tierState {
	return newRunState(tn, []ir.Tier{{Rules: rules}}, d, v6, o, ids, actions)
}

// newRunState collects the effective rules of a run of tiers, compiled
// into one set of maps (see endpointChains); nil when no rule can match.
func newRunState(tn string, tiers []ir.Tier, d ir.Direction, v6 bool, o compileOptions, ids map[uint32]string, actions map[string]*chainSpec) *tierState {
	ts := &tierState{name: tn, v6: v6, refIdx: map[string]int{}, memo: map[string]*resolution{}, keys: map[*resolution]string{}, sets: map[string]*mapSpec{}}
	for ti := range tiers {
		rules := tiers[ti].Rules
		for i := range rules {
			r := &rules[i]
			if r.Peer.Set == "" && r.Peer.Negate {
				continue // "not any address" matches nothing
			}
			v, ac := ruleVerdict(r, d, o, ids)
			if ac != nil {
				actions[ac.name] = ac
			}
			tr := tierRule{r: r, tier: ti, set: -1, neg: r.Peer.Negate, v: v}
			if r.Peer.Set != "" {
				idx, ok := ts.refIdx[r.Peer.Set]
				if !ok {
					idx = len(ts.refs)
					ts.refIdx[r.Peer.Set] = idx
					ts.refs = append(ts.refs, r.Peer.Set)
				}
				tr.set = idx
			}
			ts.trs = append(ts.trs, tr)
		}
	}
	if len(ts.trs) == 0 {
		return nil
	}
	gotos := map[string]bool{}
	for _, tr := range ts.trs {
		if tr.v.kind == expr.VerdictJump {
			gotos[tr.v.chain] = true
		}
	}
	ts.gotoSets = len(gotos) <= maxGotoSets
	return ts
}

// maps returns the tier's non-empty maps and sets, grouped by key
// layout: the address maps, the main map with its goto sets, drop-log
// map and exact twins, then the fallback map with its own.
func (ts *tierState) maps() []*mapSpec {
	var out []*mapSpec
	names := sortedKeys(ts.sets)
	for _, bg := range []bool{false, true} {
		for _, kind := range []mapKind{mapAddr, mapAddrProtoPort, mapAddrProto} {
			if m := ts.base(kind); !bg && m != nil && len(m.elems) > 0 {
				out = append(out, m)
			}
			for _, n := range names {
				if g := ts.sets[n]; g.kind == kind && g.bg == bg && !g.guard {
					out = append(out, g)
				}
			}
		}
	}
	for _, n := range names {
		if g := ts.sets[n]; g.guard {
			out = append(out, g)
		}
	}
	return out
}

// rules returns the rules of the endpoint chain (of a chain judging
// peers by source address, src, or else by destination) that look the
// run's cells up: one per map or set of maps, the background's behind
// the guard sets, or, when one verdict decides the whole background, one
// rule with that verdict behind them.
func (ts *tierState) rules(src bool, o compileOptions) []ruleSpec {
	var guards []*mapSpec
	for _, n := range []string{ts.name + "-g", ts.name + "-g-r"} {
		if g := ts.sets[n]; g != nil {
			guards = append(guards, g)
		}
	}
	var out []ruleSpec
	for _, m := range ts.maps() {
		switch {
		case m.guard:
		case m.bg:
			out = append(out, lookupRule(m, src, o, guards))
		default:
			out = append(out, lookupRule(m, src, o, nil))
		}
	}
	if ts.bg != nil {
		if v, ok := wholePlane(ts.bg); ok {
			out = append(out, guardedRule(v, ts.v6, src, o, guards))
		}
	}
	return out
}

// base returns the interval map of a key layout: the main or the
// fallback map; nil for the address layout, whose maps are all exact
// and kept in sets.
func (ts *tierState) base(kind mapKind) *mapSpec {
	switch kind {
	case mapAddrProtoPort:
		return ts.main
	case mapAddrProto:
		return ts.other
	}
	return nil
}

// layoutSuffix is the name suffix of a run's maps of each key layout.
var layoutSuffix = [...]string{mapAddr: "-a", mapAddrProtoPort: "-m", mapAddrProto: "-o"}

// target returns the map or set that element e of key layout kind
// belongs in, and e as stored there. Every verdict but a logged drop
// goes to a set without data whose rule carries the verdict: accepts to
// the run's layout set itself ("<run>-m", "-o", "-a"), unlogged drops to
// "<that>-drop", jumps to the goto set of their action chain (or, past
// maxGotoSets, the verdict map "<that>-v"); logged drops go to the
// drop-log map "<that>d". An element without a key end (see pieceElems)
// goes to the exact twin "<name>-h" of that map. The spec is nil when
// the map does not exist yet.
//
// Sets without data matter for commits: the kernel validates the whole
// table when a transaction adds a rule with a jump (any endpoint chain
// rewritten), and that walks every element of every verdict map; sets
// and data maps it skips.
func (ts *tierState) target(e mapElem, kind mapKind) (string, *mapSpec, mapElem) {
	if e.v == guardV {
		n := ts.name + "-g"
		if e.keyEnd != nil {
			n += "-r"
		}
		return n, ts.sets[n], mapElem{key: e.key, keyEnd: e.keyEnd}
	}
	return ts.targetIn(ts.name, e, kind)
}

// targetIn is target for the maps named after run (the run's own name,
// or its background's, "<run>-b").
func (ts *tierState) targetIn(run string, e mapElem, kind mapKind) (string, *mapSpec, mapElem) {
	n := run + layoutSuffix[kind]
	switch {
	case e.v.logged():
		n += "d"
	case e.v.kind == expr.VerdictAccept:
		e.v = verdict{}
	case e.v.kind == expr.VerdictDrop:
		n += "-drop"
		e.v = verdict{}
	case ts.gotoSets && e.v.kind == expr.VerdictJump:
		n = goSetName(n, e.v.chain)
		e.v = verdict{}
	default:
		n += "-v"
	}
	if kind != mapAddr && e.keyEnd == nil {
		n += "-h"
	}
	return n, ts.spec(n), e
}

// spec returns the map or set named n, nil when it does not exist.
func (ts *tierState) spec(n string) *mapSpec {
	if n == ts.main.name {
		return ts.main
	}
	if n == ts.other.name {
		return ts.other
	}
	return ts.sets[n]
}

// add stores e (of key layout kind) where it belongs, creating its map
// or set when needed.
func (ts *tierState) add(e mapElem, kind mapKind) {
	n, m, se := ts.target(e, kind)
	if m == nil {
		m = ts.newSet(n, e.v, kind, kind == mapAddr || e.keyEnd == nil)
	}
	m.add(se)
}

// addBg stores e (of key layout kind) of the background's maps.
func (ts *tierState) addBg(e mapElem, kind mapKind) {
	n, m, se := ts.targetIn(ts.name+"-b", e, kind)
	if m == nil {
		m = ts.newSet(n, e.v, kind, false)
		m.bg = true
	}
	m.add(se)
}

// newSet creates the map or set n of key layout kind for elements of
// verdict v (see target): a drop-log map for a logged drop, a verdict map
// for a jump past maxGotoSets, else a set without data whose rule
// carries v.
func (ts *tierState) newSet(n string, v verdict, kind mapKind, exact bool) *mapSpec {
	m := &mapSpec{name: n, v6: ts.v6, kind: kind, exact: exact, elems: map[string]mapElem{}}
	switch {
	case v == guardV:
		m.set, m.guard = true, true
	case v.logged():
		m.logDrop = dropLogPrefix(v)
	case v.kind != expr.VerdictJump || ts.gotoSets:
		m.set, m.hit = true, v
	}
	ts.sets[n] = m
	return m
}

// logged reports whether v is a logged drop: a drop carrying the name
// its rule's action chain would have (rule-D<dir>-<number>), which drop-log
// maps and catch-all rules carry out without the chain.
func (v verdict) logged() bool { return v.kind == expr.VerdictDrop && v.chain != "" }

// dropLogPrefix returns the log prefix of the drop-log map of logged
// drop v: "bh D<dir>", the number going in the packet mark.
func dropLogPrefix(v verdict) string { return "bh " + v.chain[len("rule-"):len("rule-DI")] }

// catchAllLogPrefix returns the log prefix of logged drop v in a rule of
// its own: LogPrefix of its rule ("bh D<dir> <number>").
func catchAllLogPrefix(v verdict) string {
	return dropLogPrefix(v) + " " + v.chain[len("rule-DI-"):]
}

// loggedDrop returns the logged-drop verdict of rule number num in the
// drop-log map whose log prefix is prefix (dropLogPrefix inverted).
func loggedDrop(prefix string, num uint32) verdict {
	return verdict{kind: expr.VerdictDrop, chain: fmt.Sprintf("rule-%s-%08x", prefix[len("bh "):], num)}
}

// ruleNumberOf returns the rule number in the name of an action chain.
func ruleNumberOf(chain string) uint32 {
	if i := strings.LastIndexByte(chain, '-'); i >= 0 {
		if n, err := strconv.ParseUint(chain[i+1:], 16, 32); err == nil {
			return uint32(n)
		}
	}
	return 0
}

// familySpace returns the first and last address of the tier's family.
func familySpace(v6 bool) (netip.Addr, netip.Addr) {
	if v6 {
		return netip.IPv6Unspecified(), netip.AddrFrom16([16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	}
	return netip.IPv4Unspecified(), netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// build computes the pieces of the whole address space and the maps.
func (ts *tierState) build(sets map[string]*cachedSet) {
	lo, hi := familySpace(ts.v6)
	if len(ts.refs) > 0 {
		res, k := ts.resolution(string(make([]byte, (len(ts.refs)+7)/8)))
		if len(res.main) > 0 || len(res.other) > 0 {
			ts.bg, ts.bgKey = res, k
		}
	}
	ts.pieces = ts.piecesIn(sets, lo, hi)
	nm, no := 0, 0
	for _, p := range ts.pieces {
		nm += len(p.res.main)
		no += len(p.res.other)
	}
	accept := verdict{kind: expr.VerdictAccept}
	ts.main = &mapSpec{name: ts.name + "-m", v6: ts.v6, kind: mapAddrProtoPort, set: true, hit: accept, elems: make(map[string]mapElem, nm)}
	ts.other = &mapSpec{name: ts.name + "-o", v6: ts.v6, kind: mapAddrProto, set: true, hit: accept, elems: make(map[string]mapElem, no)}
	clear(ts.sets)
	for _, p := range ts.pieces {
		ts.pieceElems(p, ts.add)
	}
	if ts.bg != nil {
		if _, ok := wholePlane(ts.bg); !ok {
			cellElems(piece{lo: lo, hi: hi, res: ts.bg}, ts.addBg)
		}
	}
}

// resolution returns the first-match cells of the addresses whose
// membership in the tier's sets is mem.
func (ts *tierState) resolution(mem string) (*resolution, string) {
	if res, ok := ts.memo[mem]; ok {
		return res, ts.keys[res]
	}
	var matching []*tierRule
	for i := range ts.trs {
		tr := &ts.trs[i]
		m := true
		if tr.set >= 0 {
			m = (mem[tr.set/8]&(1<<(tr.set%8)) != 0) != tr.neg
		}
		if m {
			matching = append(matching, tr)
		}
	}
	res := resolve(matching)
	ts.memo[mem] = res
	ts.keys[res] = res.key()
	return res, ts.keys[res]
}

// piecesIn returns the merged pieces of the range [lo, hi].
func (ts *tierState) piecesIn(sets map[string]*cachedSet, lo, hi netip.Addr) []piece {
	var out []piece
	for _, s := range segments(ts.refs, sets, ts.v6, lo, hi) {
		res, k := ts.resolution(s.mem)
		if n := len(out); n > 0 && out[n-1].key == k {
			out[n-1].hi = s.hi
			continue
		}
		out = append(out, piece{lo: s.lo, hi: s.hi, res: res, key: k})
	}
	return out
}

// exactMax is the most single keys a piece of a run's address space is
// spelled out as. The kernel's concatenated interval maps (pipapo) find an element
// to delete by searching the whole map, so a delete costs more the more
// ranges the map holds (1.5-2.7 ms at a few hundred; see benchmarks.md);
// a hash map deletes in constant time. A piece whose cells come to at
// most exactMax single keys (addresses x protocols x ports: a few pod
// addresses on one port, one address on a few ports) therefore goes to
// the exact twins of the maps as single keys, and a piece of at most
// exactMax addresses whose every packet gets one verdict (a peer allowed
// or denied on everything) to the run's address map. Wider pieces stay
// ranges. Pod churn in a peer set of single addresses then touches hash
// maps only, whatever the size of the ranges beside them.
const exactMax = 16

// addrCount returns the number of addresses in [lo, hi] when it is at
// most limit, and limit+1 otherwise.
func addrCount(lo, hi netip.Addr, limit int) int {
	var d uint64
	if lo.Is4() {
		l, h := lo.As4(), hi.As4()
		d = uint64(binary.BigEndian.Uint32(h[:]) - binary.BigEndian.Uint32(l[:]))
	} else {
		l, h := lo.As16(), hi.As16()
		if binary.BigEndian.Uint64(l[:8]) != binary.BigEndian.Uint64(h[:8]) {
			return limit + 1
		}
		d = binary.BigEndian.Uint64(h[8:]) - binary.BigEndian.Uint64(l[8:])
	}
	if d >= uint64(limit) {
		return limit + 1
	}
	return int(d) + 1
}

// wholePlane reports whether res gives every packet of its addresses one
// final verdict v: one cell of every protocol and port in the main map,
// repeated in the fallback map.
func wholePlane(res *resolution) (verdict, bool) {
	if len(res.main) != 1 || len(res.other) != 1 {
		return verdict{}, false
	}
	m, o := res.main[0], res.other[0]
	if m.plo != 0 || m.phi != 255 || m.lo != 0 || m.hi != 65535 || o.plo != 0 || o.phi != 255 || o.v != m.v {
		return verdict{}, false
	}
	return m.v, true
}

// exactKeys returns the number of single keys the cells of res spell
// out to, per address.
func exactKeys(res *resolution) int {
	n := 0
	for _, c := range res.main {
		n += (int(c.phi) - int(c.plo) + 1) * (int(c.hi) - int(c.lo) + 1)
	}
	for _, c := range res.other {
		n += int(c.phi) - int(c.plo) + 1
	}
	return n
}

// pieceElems passes the elements of p to add with their key layout:
// when the run has a background, nothing for a piece that resolves like
// it, and the guard elements of any other piece (its single addresses,
// or its range with every protocol: pipapo needs two fields); then the
// elements of its cells (cellElems).
func (ts *tierState) pieceElems(p piece, add func(mapElem, mapKind)) {
	if ts.bg != nil {
		if p.key == ts.bgKey {
			return // the background's lookups decide it
		}
		if na := addrCount(p.lo, p.hi, exactMax); na <= exactMax {
			forAddrs(p.lo, na, func(a []byte) { add(mapElem{key: a, v: guardV}, mapAddr) })
		} else {
			add(mapElem{key: protoKey(p.lo.AsSlice(), 0), keyEnd: protoKey(p.hi.AsSlice(), 255), v: guardV}, mapAddrProto)
		}
	}
	cellElems(p, add)
}

// forAddrs calls f with each of the n addresses from lo.
func forAddrs(lo netip.Addr, n int, f func([]byte)) {
	for a := lo; n > 0; n-- {
		f(a.AsSlice())
		a = a.Next()
	}
}

// protoPortKey and protoKey return the key address . proto . port, and
// address . proto, each field padded to 4 bytes.
func protoPortKey(a []byte, proto uint8, port uint16) []byte {
	return append(append(make([]byte, 0, len(a)+8), a...), proto, 0, 0, 0, byte(port>>8), byte(port), 0, 0)
}

func protoKey(a []byte, proto uint8) []byte {
	return append(append(make([]byte, 0, len(a)+4), a...), proto, 0, 0, 0)
}

// cellElems passes the elements of the cells of p to add. A piece of at
// most exactMax keys goes whole to the exact maps: single addresses to
// the address map when one verdict decides its every packet, else single
// keys (no key end) to the exact twins of the main and fallback maps.
// Any other piece is ranges of the main and fallback maps. So the
// addresses of one piece are in hash maps only or in interval maps only
// (see exactMax).
func cellElems(p piece, add func(mapElem, mapKind)) {
	if na := addrCount(p.lo, p.hi, exactMax); na <= exactMax {
		if v, ok := wholePlane(p.res); ok {
			forAddrs(p.lo, na, func(a []byte) { add(mapElem{key: a, v: v}, mapAddr) })
			return
		}
		if na*exactKeys(p.res) <= exactMax {
			forAddrs(p.lo, na, func(a []byte) {
				for _, c := range p.res.main {
					for q := int(c.plo); q <= int(c.phi); q++ {
						for port := int(c.lo); port <= int(c.hi); port++ {
							add(mapElem{key: protoPortKey(a, uint8(q), uint16(port)), v: c.v}, mapAddrProtoPort)
						}
					}
				}
				for _, c := range p.res.other {
					for q := int(c.plo); q <= int(c.phi); q++ {
						add(mapElem{key: protoKey(a, uint8(q)), v: c.v}, mapAddrProto)
					}
				}
			})
			return
		}
	}
	lo, hi := p.lo.AsSlice(), p.hi.AsSlice()
	for _, c := range p.res.main {
		add(mapElem{key: protoPortKey(lo, c.plo, c.lo), keyEnd: protoPortKey(hi, c.phi, c.hi), v: c.v}, mapAddrProtoPort)
	}
	for _, c := range p.res.other {
		add(mapElem{key: protoKey(lo, c.plo), keyEnd: protoKey(hi, c.phi), v: c.v}, mapAddrProto)
	}
}

// segments cuts the range [lo, hi] of the family's address space at every
// boundary of the referenced sets inside it. Each segment's mem has bit i
// set when it lies in refs[i]. The segments cover [lo, hi], in order.
func segments(refs []string, sets map[string]*cachedSet, v6 bool, lo, hi netip.Addr) []segment {
	type event struct {
		at  netip.Addr
		set int
	}
	var evs []event
	mem := make([]byte, (len(refs)+7)/8)
	for i, n := range refs {
		cs := sets[n]
		if cs == nil {
			continue
		}
		rs := cs.r4
		if v6 {
			rs = cs.r6
		}
		// the first range that ends at or after lo
		k := sort.Search(len(rs), func(j int) bool { return !rs[j].to.Less(lo) })
		for ; k < len(rs) && !hi.Less(rs[k].from); k++ {
			r := rs[k]
			if r.from.Compare(lo) <= 0 {
				mem[i/8] |= 1 << (i % 8) // lo lies in r
			} else {
				evs = append(evs, event{r.from, i})
			}
			if nx := r.to.Next(); nx.IsValid() && !hi.Less(nx) {
				evs = append(evs, event{nx, i})
			}
		}
	}
	slices.SortFunc(evs, func(a, b event) int { return a.at.Compare(b.at) })
	out := make([]segment, 0, len(evs)+1)
	cur := lo
	for i := 0; i < len(evs); {
		at := evs[i].at
		if cur.Less(at) {
			out = append(out, segment{lo: cur, hi: at.Prev(), mem: string(mem)})
		}
		for ; i < len(evs) && evs[i].at == at; i++ {
			mem[evs[i].set/8] ^= 1 << (evs[i].set % 8)
		}
		cur = at
	}
	out = append(out, segment{lo: cur, hi: hi, mem: string(mem)})
	return out
}

// portCell is a resolved port interval of one protocol.
type portCell struct {
	lo, hi uint16
	v      verdict
}

// decided is the outcome of one tier, or of a run of tiers overlaid, for
// one membership: per protocol, the port cells (holes: no rule matches)
// and, for protocols without ports, the verdict (ok false: none).
type decided struct {
	byProto [256][]portCell
	noPort  [256]verdict
	ok      [256]bool
}

// final reports whether v ends the packet's evaluation: accept, drop, or
// an action chain that accepts or drops. Pass (return) and Audit (an
// action chain that marks and returns) hand the packet on.
func (v verdict) final() bool {
	switch v.kind {
	case expr.VerdictAccept, expr.VerdictDrop:
		return true
	case expr.VerdictJump:
		return !strings.HasPrefix(v.chain, "rule-A")
	}
	return false
}

// resolve computes the cells of an ordered list of rules that all match
// the peer, grouped by tier in order: within a tier the first matching
// rule decides; where it is a Pass, or no rule of the tier matches, the
// next tier decides. Cells that no tier decides, or that a Pass decides,
// are left out of the maps: the packet goes on to the endpoint chain's
// next rule.
func resolve(rules []*tierRule) *resolution {
	var acc *decided
	for i := 0; i < len(rules); {
		j := i
		for j < len(rules) && rules[j].tier == rules[i].tier {
			j++
		}
		t := resolveTier(rules[i:j])
		if acc == nil {
			acc = t
		} else {
			acc.overlay(t)
		}
		i = j
	}
	if acc == nil {
		acc = &decided{}
	}
	return acc.cells()
}

// resolveTier computes the first-match outcome of one tier's matching
// rules.
func resolveTier(rules []*tierRule) *decided {
	d := &decided{}
	// Port protocols: the first rule covering each port.
	for _, p := range portProtos {
		var ivs []interval
		for i, tr := range rules {
			if len(tr.r.Ports) == 0 {
				ivs = append(ivs, interval{0, 65535, i})
				continue
			}
			for _, pr := range tr.r.Ports {
				if uint8(pr.Protocol) != p {
					continue
				}
				if pr.AllPorts() {
					ivs = append(ivs, interval{0, 65535, i})
				} else {
					ivs = append(ivs, interval{uint32(pr.From), uint32(pr.To), i})
				}
			}
		}
		for _, iv := range firstCover(ivs) {
			d.byProto[p] = appendCell(d.byProto[p], portCell{uint16(iv.lo), uint16(iv.hi), rules[iv.rule].v})
		}
	}
	// Protocols without ports: the first rule with no ports or naming
	// the protocol (always with every port; Validate refuses others).
	anyRule := -1
	specific := map[int]int{}
	for i, tr := range rules {
		if len(tr.r.Ports) == 0 {
			if anyRule < 0 {
				anyRule = i
			}
			continue
		}
		for _, pr := range tr.r.Ports {
			p := int(pr.Protocol)
			if isPortProto(p) {
				continue
			}
			if _, ok := specific[p]; !ok {
				specific[p] = i
			}
		}
	}
	var anyCells []portCell // shared by every protocol the any-rule decides
	if anyRule >= 0 {
		anyCells = []portCell{{0, 65535, rules[anyRule].v}}
	}
	for p := 0; p < 256; p++ {
		if isPortProto(p) {
			continue
		}
		r := anyRule
		if s, ok := specific[p]; ok && (r < 0 || s < r) {
			r = s
		}
		switch {
		case r < 0:
			continue
		case r == anyRule:
			d.byProto[p] = anyCells
		default:
			d.byProto[p] = []portCell{{0, 65535, rules[r].v}}
		}
		d.noPort[p], d.ok[p] = rules[r].v, true
	}
	return d
}

// appendCell appends c to cs, merging it into the last cell when they
// touch and agree.
func appendCell(cs []portCell, c portCell) []portCell {
	if n := len(cs); n > 0 && cs[n-1].v == c.v && uint32(cs[n-1].hi)+1 == uint32(c.lo) {
		cs[n-1].hi = c.hi
		return cs
	}
	return append(cs, c)
}

// overlay lets the next tier n decide where d hands the packet on: its
// holes and its Pass cells.
func (d *decided) overlay(n *decided) {
	for p := 0; p < 256; p++ {
		if isPortProto(p) {
			d.byProto[p] = overlayCells(d.byProto[p], n.byProto[p])
			continue
		}
		if (!d.ok[p] || d.noPort[p].kind == expr.VerdictReturn) && n.ok[p] {
			d.noPort[p], d.ok[p], d.byProto[p] = n.noPort[p], true, n.byProto[p]
		}
	}
}

// overlayCells returns the cells of a, with the holes and Pass cells of a
// filled by the cells of b.
func overlayCells(a, b []portCell) []portCell {
	if len(b) == 0 {
		return a
	}
	out := make([]portCell, 0, len(a)+len(b))
	fill := func(lo, hi uint32) {
		for _, c := range b {
			l, h := max(lo, uint32(c.lo)), min(hi, uint32(c.hi))
			if l <= h {
				out = appendCell(out, portCell{uint16(l), uint16(h), c.v})
			}
		}
	}
	pos := uint32(0)
	for _, c := range a {
		if c.v.kind == expr.VerdictReturn {
			continue
		}
		if pos < uint32(c.lo) {
			fill(pos, uint32(c.lo)-1)
		}
		out = appendCell(out, c)
		pos = uint32(c.hi) + 1
	}
	if pos <= 65535 {
		fill(pos, 65535)
	}
	return out
}

// cells turns the outcome into the main and fallback map cells.
func (d *decided) cells() *resolution {
	res := &resolution{}
	var main [256][]portCell
	for p := 0; p < 256; p++ {
		cs := d.byProto[p]
		if !isPortProto(p) && d.ok[p] && !d.noPort[p].final() {
			// An Audit hands the packet on to the endpoint chain's
			// next rules, the fallback lookup among them: it is
			// decided there alone, so that it is audited once.
			continue
		}
		isPass := func(c portCell) bool { return c.v.kind == expr.VerdictReturn }
		if slices.ContainsFunc(cs, isPass) {
			// a copy: cs may be shared between protocols
			cs = slices.DeleteFunc(slices.Clone(cs), isPass)
		}
		main[p] = cs
	}
	// Main map: merge runs of protocols with equal port cells.
	equal := func(a, b []portCell) bool {
		if len(a) != len(b) {
			return false
		}
		if len(a) == 0 || &a[0] == &b[0] {
			return true
		}
		for i := range a {
			if a[i] != b[i] {
				return false
			}
		}
		return true
	}
	for p := 0; p < 256; {
		q := p
		for q+1 < 256 && equal(main[q+1], main[p]) {
			q++
		}
		for _, c := range main[p] {
			res.main = append(res.main, cell{plo: uint8(p), phi: uint8(q), lo: c.lo, hi: c.hi, v: c.v})
		}
		p = q + 1
	}
	// Fallback map: protocols without ports; a port protocol is a wild
	// card where the main map covers all its ports with a final verdict
	// (a packet that reaches the fallback lookup never has it), and a
	// break otherwise.
	start := -1
	var cur verdict
	closeRun := func(end int) {
		if start >= 0 {
			res.other = append(res.other, cell{plo: uint8(start), phi: uint8(end), lo: 0, hi: 65535, v: cur})
		}
		start = -1
	}
	for p := 0; p < 256; p++ {
		if isPortProto(p) {
			cs := main[p]
			if len(cs) == 1 && cs[0].lo == 0 && cs[0].hi == 65535 && cs[0].v.final() {
				continue // wild card: extends a run
			}
			closeRun(p - 1)
			continue
		}
		if !d.ok[p] || d.noPort[p].kind == expr.VerdictReturn {
			closeRun(p - 1)
			continue
		}
		v := d.noPort[p]
		if start >= 0 && v != cur {
			closeRun(p - 1)
		}
		if start < 0 {
			start, cur = p, v
		}
	}
	closeRun(255)
	return res
}

// interval is an inclusive range owned by a rule (its index: lower is
// earlier).
type interval struct {
	lo, hi uint32
	rule   int
}

type intHeap []int

func (h intHeap) Len() int           { return len(h) }
func (h intHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h intHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *intHeap) Push(x any)        { *h = append(*h, x.(int)) }
func (h *intHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// firstCover returns the sorted, disjoint pieces of the union of ivs,
// each owned by the earliest rule that covers it. Adjacent pieces of one
// rule are merged.
func firstCover(ivs []interval) []interval {
	if len(ivs) == 0 {
		return nil
	}
	type ev struct {
		at   uint32
		rule int
		add  bool
	}
	evs := make([]ev, 0, 2*len(ivs))
	for _, iv := range ivs {
		evs = append(evs, ev{iv.lo, iv.rule, true}, ev{iv.hi + 1, iv.rule, false})
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].at < evs[j].at })
	active := map[int]int{}
	h := &intHeap{}
	var out []interval
	for i := 0; i < len(evs); {
		at := evs[i].at
		for ; i < len(evs) && evs[i].at == at; i++ {
			if evs[i].add {
				if active[evs[i].rule] == 0 {
					heap.Push(h, evs[i].rule)
				}
				active[evs[i].rule]++
			} else {
				active[evs[i].rule]--
			}
		}
		for h.Len() > 0 && active[(*h)[0]] == 0 {
			heap.Pop(h)
		}
		if h.Len() == 0 || i == len(evs) {
			continue
		}
		next := evs[i].at
		r := (*h)[0]
		if n := len(out); n > 0 && out[n-1].rule == r && out[n-1].hi+1 == at {
			out[n-1].hi = next - 1
		} else {
			out = append(out, interval{at, next - 1, r})
		}
	}
	return out
}

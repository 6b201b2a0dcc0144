//go:build linux

package nftables

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"hash/maphash"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// Names of the fixed objects in the table.
const (
	chainEgress  = "egress"
	chainIngress = "ingress"
	mapEgress4   = "egress4"
	mapEgress6   = "egress6"
	mapIngress4  = "ingress4"
	mapIngress6  = "ingress6"
	// chainOpen is the endpoint chain of every endpoint direction that
	// no tier restricts.
	chainOpen     = "ep-open"
	prioEgress    = 0
	prioIngress   = 10
	maxCommentLen = 200
)

// AuditMark is the conntrack mark bit an Audit rule sets on a connection.
const AuditMark uint32 = 0x00b10000

// ipRange is an inclusive address range of one family.
type ipRange struct{ from, to netip.Addr }

// ruleSpec is one nft rule. key describes it canonically: two rules with
// equal keys have equal expressions.
type ruleSpec struct {
	key     string
	comment string
	exprs   []expr.Any
	// lookup is the map a lookup rule of an endpoint chain consults, and
	// fixed the verdict of a catch-all rule (tests interpret chains
	// through them).
	lookup *mapSpec
	fixed  *verdict
	// guards are the sets the packet's key must not be in for the rule
	// to match (a run's background behind its guard sets).
	guards []*mapSpec
}

// chainSpec is one chain with its rules. Base chains have hook set.
type chainSpec struct {
	name  string
	base  bool
	prio  int32
	rules []ruleSpec
}

// verdict is the data of a verdict map element.
type verdict struct {
	kind  expr.VerdictKind
	chain string
}

// mapElem is one verdict map element. keyEnd is set for the ranges of a
// concatenated interval map (the inclusive end of every field); an
// element of an exact map (mapSpec.exact, or a mapAddr map) has none.
type mapElem struct {
	key, keyEnd []byte
	v           verdict
}

// mapKind is the key layout of a verdict map.
type mapKind uint8

const (
	// mapAddr: exact address -> verdict (the dispatch maps, and a run's
	// address map).
	mapAddr mapKind = iota
	// mapAddrProtoPort: address . l4proto . dport ranges -> verdict.
	mapAddrProtoPort
	// mapAddrProto: address . l4proto ranges -> verdict.
	mapAddrProto
)

// mapSpec is a verdict map. elems is keyed by elemID.
type mapSpec struct {
	name string
	v6   bool
	kind mapKind
	// set: a set without data, whose matching rule has the verdict
	// hit (a tier's accept, drop and goto sets); its elements carry no
	// verdict.
	set bool
	hit verdict
	// guard: a run's guard set (see tierState.bg), looked up by the
	// rules of the run's background; bg: a map of the background.
	guard, bg bool
	// logDrop, when set, makes the map a data map of rule numbers (a
	// tier's drop-log map): its lookup rule sets the packet mark to the
	// number found, logs with this prefix and drops. Its elements carry
	// the logged-drop verdict of their rule.
	logDrop string
	// exact: a hash map of single keys instead of an interval map of
	// ranges (a run's exact twins, see exactMax). mapAddr maps are
	// always exact.
	exact bool
	elems map[string]mapElem
}

func elemID(e mapElem) string { return string(e.key) + "|" + string(e.keyEnd) }

// state is everything the backend programs into its table, derived from an
// ir.NodePolicy by compile.
type state struct {
	chains map[string]*chainSpec
	maps   map[string]*mapSpec
	// endpointSets lists, per endpoint, the set names its chains use,
	// and endpointKey a digest of its chains, for revocation.
	endpointKey  map[string]string
	endpointSets map[string][]string
	// changedSets names the sets whose contents differ from the previous
	// compile with the same cache.
	changedSets map[string]bool
	// patches holds the element changes made in place to maps that the
	// previous state shares (set-membership deltas); diff uses them
	// instead of comparing those maps.
	patches map[string]*elemPatch
	// shape is shared by states that share their chains and maps (the
	// same endpoints compiled, set contents patched in place): between
	// two such states only patches differ.
	shape *int
}

// compileOptions tune what compile emits.
type compileOptions struct {
	logGroup uint16
	logOn    bool
}

// hashName returns a short, stable, nft-safe digest of s.
func hashName(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])[:12]
}

// RuleNumber is the numeric id of a rule ID used in nflog prefixes.
// It is never 0: a drop-log map carries it in the packet mark, which
// nflog reports only when it is not 0.
func RuleNumber(id string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return max(h.Sum32(), 1)
}

// endpointChainName returns the nft chain name of one endpoint direction
// and family.
func endpointChainName(ep string, d ir.Direction, v6 bool) string {
	fam := "4"
	if v6 {
		fam = "6"
	}
	dir := "i"
	if d == ir.Egress {
		dir = "e"
	}
	return "ep-" + hashName(ep) + "-" + dir + fam
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Validate reports every problem of np that the backend cannot enforce,
// naming the endpoint, direction, tier and rule.
func Validate(np *ir.NodePolicy) error {
	if np == nil {
		return errors.New("policy is nil")
	}
	var errs []error
	names := make(map[string]bool, len(np.Sets))
	hashes := make(map[string]string, len(np.Sets))
	for i := range np.Sets {
		s := &np.Sets[i]
		if i > 0 && np.Sets[i-1].Name > s.Name {
			errs = append(errs, fmt.Errorf("sets[%d] %q: sets are not sorted by name", i, s.Name))
		}
		hn := hashName(s.Name)
		if o, ok := hashes[hn]; ok && o != s.Name {
			errs = append(errs, fmt.Errorf("set %q: name hash collides with set %q", s.Name, o))
		}
		hashes[hn] = s.Name
		if s.Name == "" {
			errs = append(errs, fmt.Errorf("sets[%d]: empty name", i))
		}
		if names[s.Name] {
			errs = append(errs, fmt.Errorf("set %q: duplicate name", s.Name))
		}
		names[s.Name] = true
		for _, p := range s.Prefixes {
			if !p.IsValid() {
				errs = append(errs, fmt.Errorf("set %q: invalid prefix %v", s.Name, p))
			}
		}
	}
	ipOwner := make(map[netip.Addr]string, 2*len(np.Endpoints))
	epNames := make(map[string]bool, len(np.Endpoints))
	epHashes := make(map[string]string, len(np.Endpoints))
	for i := range np.Endpoints {
		ep := &np.Endpoints[i]
		if i > 0 && np.Endpoints[i-1].Name > ep.Name {
			errs = append(errs, fmt.Errorf("endpoints[%d] %q: endpoints are not sorted by name", i, ep.Name))
		}
		hn := hashName(ep.Name)
		if o, ok := epHashes[hn]; ok && o != ep.Name {
			errs = append(errs, fmt.Errorf("endpoint %q: name hash collides with endpoint %q", ep.Name, o))
		}
		epHashes[hn] = ep.Name
		if ep.Name == "" {
			errs = append(errs, fmt.Errorf("endpoints[%d]: empty name", i))
		}
		if epNames[ep.Name] {
			errs = append(errs, fmt.Errorf("endpoint %q: duplicate name", ep.Name))
		}
		epNames[ep.Name] = true
		for _, a := range ep.IPs {
			if !a.IsValid() {
				errs = append(errs, fmt.Errorf("endpoint %q: invalid IP", ep.Name))
				continue
			}
			a = a.Unmap()
			if o, ok := ipOwner[a]; ok {
				errs = append(errs, fmt.Errorf("endpoint %q: IP %v already belongs to endpoint %q", ep.Name, a, o))
			}
			ipOwner[a] = ep.Name
		}
		for _, d := range []ir.Direction{ir.Ingress, ir.Egress} {
			c := &ep.Ingress
			if d == ir.Egress {
				c = &ep.Egress
			}
			for _, t := range c.Tiers {
				for j, r := range t.Rules {
					where := func() string { return fmt.Sprintf("endpoint %q %s tier %s rule %d (%q)", ep.Name, d, t.Kind, j, r.ID) }
					if r.Peer.Set != "" && !names[r.Peer.Set] {
						errs = append(errs, fmt.Errorf("%s: unknown address set %q", where(), r.Peer.Set))
					}
					if r.Action > ir.Audit {
						errs = append(errs, fmt.Errorf("%s: unknown action %d", where(), r.Action))
					}
					for k, p := range r.Ports {
						if p.AllPorts() {
							continue
						}
						switch p.Protocol {
						case ir.TCP, ir.UDP, ir.SCTP, 136: // 136: UDP-Lite
						default:
							errs = append(errs, fmt.Errorf("%s: ports[%d]: protocol %v has no ports", where(), k, p.Protocol))
						}
						if p.From > p.To {
							errs = append(errs, fmt.Errorf("%s: ports[%d]: from %d is above to %d", where(), k, p.From, p.To))
						}
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

// compileCache keeps the compiled chains and maps of each endpoint between
// Syncs, keyed by a fingerprint of the endpoint and of the contents of
// the sets it references, so that a Sync only compiles the endpoints that
// changed. Compiled chains and maps are never modified.
type compileCache struct {
	eps  map[string]*cachedEndpoint
	seen map[string]bool
	sets map[string]*cachedSet
	// fpBuf is fingerprint's scratch space.
	fpBuf []byte
	// ids collects the rule numbers of freshly compiled endpoints.
	ids map[uint32]string
	// patches collects the in-place map changes of one compile.
	patches map[string]*elemPatch
	// patchedTiers and compiledEndpoints count set-membership patches
	// and full endpoint compiles, for tests.
	patchedTiers, compiledEndpoints int
	// lastChains and lastMaps size the next state.
	lastChains, lastMaps int
	// last is the previous compile's state and lastEps its endpoints in
	// order: when a compile yields the very same compiled endpoints
	// (patched in place or untouched), it reuses last's chains and maps.
	last    *state
	lastEps []*cachedEndpoint
}

type cachedSet struct {
	prefixes []netip.Prefix
	r4, r6   []ipRange
	hash     uint64
}

type cachedEndpoint struct {
	// fp is the fingerprint of the endpoint alone; setVer holds the
	// cached contents of each referenced set that the compiled maps
	// reflect.
	fp      uint64
	setVer  map[string]*cachedSet
	tiers   []*tierState
	names   [4]string // egress4, ingress4, egress6, ingress6 chain names
	chains  []*chainSpec
	maps    []*mapSpec
	ruleIDs map[uint32]string
	key     string
	sets    []string
}

func newCompileCache() *compileCache {
	return &compileCache{eps: map[string]*cachedEndpoint{}, seen: map[string]bool{}, sets: map[string]*cachedSet{}, ids: map[uint32]string{}, patches: map[string]*elemPatch{}}
}

// referencedSets returns the sorted names of the sets ep's rules name.
func referencedSets(ep *ir.Endpoint) []string {
	used := map[string]bool{}
	for _, c := range []*ir.Chain{&ep.Ingress, &ep.Egress} {
		for _, t := range c.Tiers {
			for _, r := range t.Rules {
				if r.Peer.Set != "" {
					used[r.Peer.Set] = true
				}
			}
		}
	}
	out := make([]string, 0, len(used))
	for s := range used {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// endpoint returns the compiled chains and maps of ep: from the cache
// when neither ep nor the sets it references changed, patched in place
// when only the contents of referenced sets changed, compiled otherwise.
func (c *compileCache) endpoint(ep *ir.Endpoint, has4, has6 bool, o compileOptions) *cachedEndpoint {
	base, buf := fingerprint(ep, o, c.fpBuf)
	c.fpBuf = buf
	c.seen[ep.Name] = true
	if ce, ok := c.eps[ep.Name]; ok && ce.fp == base {
		if c.patchEndpoint(ce) {
			return ce
		}
	}
	refs := referencedSets(ep)
	c.compiledEndpoints++
	ce := &cachedEndpoint{fp: base, setVer: make(map[string]*cachedSet, len(refs)), ruleIDs: map[uint32]string{}, sets: refs, key: fmt.Sprintf("%016x", base), names: [4]string{
		endpointChainName(ep.Name, ir.Egress, false), endpointChainName(ep.Name, ir.Ingress, false),
		endpointChainName(ep.Name, ir.Egress, true), endpointChainName(ep.Name, ir.Ingress, true),
	}}
	for _, s := range refs {
		ce.setVer[s] = c.sets[s]
	}
	for _, d := range []ir.Direction{ir.Ingress, ir.Egress} {
		ch := &ep.Ingress
		if d == ir.Egress {
			ch = &ep.Egress
		}
		for _, v6 := range []bool{false, true} {
			if (v6 && !has6) || (!v6 && !has4) {
				continue
			}
			chains, maps, tiers, open := endpointChains(ep.Name, d, v6, ch, o, ce.ruleIDs, c.sets)
			if open {
				i := 0
				if d == ir.Ingress {
					i = 1
				}
				if v6 {
					i += 2
				}
				if !slices.Contains(ce.names[:], chainOpen) {
					ce.chains = append(ce.chains, openChain())
				}
				ce.names[i] = chainOpen
				// Tiers whose maps are empty still watch their sets:
				// a set that fills compiles the endpoint again.
				ce.tiers = append(ce.tiers, tiers...)
				continue
			}
			ce.chains = append(ce.chains, chains...)
			ce.maps = append(ce.maps, maps...)
			ce.tiers = append(ce.tiers, tiers...)
		}
	}
	for k, v := range ce.ruleIDs {
		c.ids[k] = v
	}
	c.eps[ep.Name] = ce
	return ce
}

// patchEndpoint brings ce up to date with the current set contents by
// patching the tier maps of the sets that changed. It reports false when
// ce must be compiled again instead (a map empties or fills).
func (c *compileCache) patchEndpoint(ce *cachedEndpoint) bool {
	var old map[string]*cachedSet
	for _, s := range ce.sets {
		if cur := c.sets[s]; cur != ce.setVer[s] {
			if cur == nil {
				return false
			}
			if old == nil {
				old = map[string]*cachedSet{}
			}
			old[s] = ce.setVer[s]
		}
	}
	if old == nil {
		return true
	}
	var ps []*tierPatch
	for _, ts := range ce.tiers {
		p, ok := ts.patch(c.sets, old)
		if !ok {
			return false
		}
		if p != nil {
			ps = append(ps, p)
		}
	}
	for _, p := range ps {
		p.apply(c.patches)
	}
	c.patchedTiers += len(ps)
	for s := range old {
		ce.setVer[s] = c.sets[s]
	}
	return true
}

// sweep forgets endpoints not seen since the last sweep.
func (c *compileCache) sweep() {
	for n := range c.eps {
		if !c.seen[n] {
			delete(c.eps, n)
		}
	}
	clear(c.seen)
}

// fpSeed seeds the in-process digests of endpoints and set contents
// (fingerprint, prefixHash). They are compared only within one process:
// after a restart the previous state is read from the kernel.
var fpSeed = maphash.MakeSeed()

// fingerprint hashes everything of ep that its chains depend on. buf is
// scratch space, returned for the next call.
func fingerprint(ep *ir.Endpoint, o compileOptions, buf []byte) (uint64, []byte) {
	b := buf[:0]
	num := func(v uint64) { b = binary.LittleEndian.AppendUint64(b, v) }
	str := func(s string) {
		num(uint64(len(s)))
		b = append(b, s...)
	}
	str(ep.Name)
	num(uint64(o.logGroup))
	if o.logOn {
		num(1)
	} else {
		num(0)
	}
	num(uint64(len(ep.IPs)))
	for _, a := range ep.IPs {
		b = appendAddr(b, a)
	}
	for _, c := range []*ir.Chain{&ep.Ingress, &ep.Egress} {
		num(uint64(len(c.Tiers)))
		for _, t := range c.Tiers {
			num(uint64(t.Kind))
			num(uint64(len(t.Rules)))
			for _, r := range t.Rules {
				str(r.ID)
				str(r.Peer.Set)
				flags := uint64(r.Action) << 8
				if r.Peer.Negate {
					flags |= 1
				}
				if r.Log {
					flags |= 2
				}
				num(flags)
				num(uint64(len(r.Ports)))
				for _, p := range r.Ports {
					num(uint64(p.Protocol)<<32 | uint64(p.From)<<16 | uint64(p.To))
				}
			}
		}
	}
	return maphash.Bytes(fpSeed, b), b
}

// appendAddr appends a to b: its 16 bytes and whether it is IPv4.
func appendAddr(b []byte, a netip.Addr) []byte {
	a16 := a.As16()
	if a.Is4() {
		return append(append(b, a16[:]...), 4)
	}
	return append(append(b, a16[:]...), 6)
}

func prefixHash(ps []netip.Prefix) uint64 {
	b := make([]byte, 0, 18*len(ps))
	for _, p := range ps {
		b = append(appendAddr(b, p.Addr()), byte(p.Bits()))
	}
	return maphash.Bytes(fpSeed, b)
}

// compile turns a validated policy into the table's desired state.
func compile(np *ir.NodePolicy, o compileOptions) *state {
	return compileWith(newCompileCache(), np, o)
}

// compileWith is compile with a cache of compiled endpoints.
func compileWith(cache *compileCache, np *ir.NodePolicy, o compileOptions) *state {
	st := &state{
		// sized like the last state, so that the maps do not grow
		// step by step
		chains:       make(map[string]*chainSpec, cache.lastChains),
		maps:         make(map[string]*mapSpec, cache.lastMaps),
		endpointKey:  make(map[string]string, len(np.Endpoints)),
		endpointSets: make(map[string][]string, len(np.Endpoints)),
		changedSets:  map[string]bool{},
	}
	seenSets := map[string]bool{}
	for _, s := range np.Sets {
		seenSets[s.Name] = true
		cs, ok := cache.sets[s.Name]
		if !ok || !equalPrefixes(cs.prefixes, s.Prefixes) {
			// A copy: the caller may change its policy in place later.
			ps := slices.Clone(s.Prefixes)
			cache.sets[s.Name] = &cachedSet{prefixes: ps, r4: toRanges(ps, false), r6: toRanges(ps, true), hash: prefixHash(ps)}
			st.changedSets[s.Name] = true
		}
	}
	for n := range cache.sets {
		if !seenSets[n] {
			delete(cache.sets, n)
		}
	}
	for _, n := range []string{mapEgress4, mapEgress6, mapIngress4, mapIngress6} {
		st.maps[n] = &mapSpec{name: n, v6: strings.HasSuffix(n, "6"), kind: mapAddr, elems: map[string]mapElem{}}
	}
	st.chains[chainEgress] = baseChain(chainEgress, prioEgress, mapEgress4, mapEgress6, true)
	st.chains[chainIngress] = baseChain(chainIngress, prioIngress, mapIngress4, mapIngress6, false)

	ces := make([]*cachedEndpoint, len(np.Endpoints))
	same := cache.last != nil && len(cache.lastEps) == len(np.Endpoints)
	for i := range np.Endpoints {
		ep := &np.Endpoints[i]
		var has4, has6 bool
		for _, a := range ep.IPs {
			if a.Unmap().Is4() {
				has4 = true
			} else {
				has6 = true
			}
		}
		ces[i] = cache.endpoint(ep, has4, has6, o)
		same = same && ces[i] == cache.lastEps[i]
	}
	if same {
		// The fingerprint of each endpoint covers its name and IPs, so
		// the dispatch maps, chains and maps are those of the last
		// state; only the in-place patches differ.
		last := cache.last
		st.chains, st.maps, st.endpointKey, st.endpointSets, st.shape = last.chains, last.maps, last.endpointKey, last.endpointSets, last.shape
	} else {
		st.shape = new(int)
		for i := range np.Endpoints {
			ep := &np.Endpoints[i]
			ce := ces[i]
			for _, a := range ep.IPs {
				a = a.Unmap()
				e, in := mapEgress4, mapIngress4
				cE, cI := ce.names[0], ce.names[1]
				if a.Is6() {
					e, in = mapEgress6, mapIngress6
					cE, cI = ce.names[2], ce.names[3]
				}
				st.maps[e].add(mapElem{key: a.AsSlice(), v: verdict{kind: expr.VerdictJump, chain: cE}})
				st.maps[in].add(mapElem{key: a.AsSlice(), v: verdict{kind: expr.VerdictJump, chain: cI}})
			}
			for _, ch := range ce.chains {
				st.chains[ch.name] = ch
			}
			for _, m := range ce.maps {
				st.maps[m.name] = m
			}
			st.endpointKey[ep.Name] = ce.key
			st.endpointSets[ep.Name] = ce.sets
		}
	}
	cache.last, cache.lastEps = st, ces
	cache.sweep()
	cache.lastChains, cache.lastMaps = len(st.chains), len(st.maps)
	st.patches = cache.patches
	cache.patches = map[string]*elemPatch{}
	return st
}

func (m *mapSpec) add(e mapElem) { m.elems[elemID(e)] = e }

// toRanges merges the prefixes of one family into sorted, disjoint,
// non-adjacent inclusive ranges.
func toRanges(ps []netip.Prefix, v6 bool) []ipRange {
	var rs []ipRange
	for _, p := range ps {
		p = p.Masked()
		a := p.Addr().Unmap()
		if a.Is6() != v6 {
			continue
		}
		bits := p.Bits()
		if p.Addr().Is4In6() {
			bits -= 96
		}
		from := netip.PrefixFrom(a, bits).Masked().Addr()
		rs = append(rs, ipRange{from: from, to: lastAddr(from, bits)})
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].from.Less(rs[j].from) })
	var out []ipRange
	for _, r := range rs {
		if n := len(out); n > 0 {
			last := &out[n-1]
			next := last.to.Next() // invalid when last ends at the family's end
			if !next.IsValid() || !next.Less(r.from) {
				// overlapping or adjacent: merge
				if last.to.Less(r.to) {
					last.to = r.to
				}
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// lastAddr returns the last address of the prefix from/bits.
func lastAddr(from netip.Addr, bits int) netip.Addr {
	b := from.AsSlice()
	for i := bits; i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func le32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }
func be16(v uint16) []byte { return binaryutil.BigEndian.PutUint16(v) }

func ctStateIs(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: le32(bits), Xor: le32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: le32(0)},
	}
}

// midstreamDrop drops a TCP packet that conntrack saw as a new
// connection although it is not a SYN: with the kernel's default loose
// pickup (nf_conntrack_tcp_loose=1) the next packet of a connection whose
// entry was deleted (a revocation or quarantine cut) would otherwise start
// a new, reversed entry, evaluated as a flow from the server, and the cut
// connection would carry on. It is the first rule of every endpoint's
// chains, so only traffic of local endpoints is affected.
func midstreamDrop() ruleSpec {
	const tcpFlagsMask = 0x01 | 0x02 | 0x04 | 0x10 // fin, syn, rst, ack
	ex := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
	ex = append(ex, ctStateIs(expr.CtStateBitNEW)...)
	ex = append(ex,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{tcpFlagsMask}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0x02}},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
	return ruleSpec{key: "tcp new without syn drop", exprs: ex}
}

func nfproto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

// addrLoad loads the source (src) or destination address into register 1.
func addrLoad(v6, src bool) *expr.Payload {
	p := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}
	switch {
	case v6 && src:
		p.Offset, p.Len = 8, 16
	case v6:
		p.Offset, p.Len = 24, 16
	case src:
		p.Offset = 12
	}
	return p
}

func baseChain(name string, prio int32, m4, m6 string, src bool) *chainSpec {
	c := &chainSpec{name: name, base: true, prio: prio}
	c.rules = append(c.rules,
		ruleSpec{key: "ct established,related accept", exprs: append(ctStateIs(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), &expr.Verdict{Kind: expr.VerdictAccept})},
		ruleSpec{key: "ct invalid drop", exprs: append(ctStateIs(expr.CtStateBitINVALID), &expr.Verdict{Kind: expr.VerdictDrop})},
	)
	for _, fam := range []struct {
		p  byte
		m  string
		v6 bool
	}{{unix.NFPROTO_IPV4, m4, false}, {unix.NFPROTO_IPV6, m6, true}} {
		ex := nfproto(fam.p)
		ex = append(ex, addrLoad(fam.v6, src), &expr.Lookup{SourceRegister: 1, SetName: fam.m, IsDestRegSet: true, DestRegister: 0})
		c.rules = append(c.rules, ruleSpec{key: fmt.Sprintf("dispatch %s src=%v", fam.m, src), exprs: ex})
	}
	return c
}

// endpointChains returns the chain of one endpoint direction and family,
// the action chains its verdicts go to, the maps it looks up and their
// tier states; open is set when no tier restricts the direction (the
// chain would hold only midstreamDrop and the default accept, and the
// shared chainOpen stands in for it).
//
// The tiers are compiled in runs: consecutive tiers share one set of
// maps (resolve overlays them: where a tier passes or has no matching
// rule, the next one decides), looked up by rules of the endpoint chain
// itself. A run ends after a tier with an Audit rule, since an Audit
// hands the packet on to the rules after the lookup. A tier whose first
// rule matches every packet (any peer, any port: a zone's baseline) is
// one rule with that verdict, without maps; after it nothing is
// reachable unless it is an Audit or a Pass.
func endpointChains(ep string, d ir.Direction, v6 bool, c *ir.Chain, o compileOptions, ids map[uint32]string, sets map[string]*cachedSet) (chains []*chainSpec, maps []*mapSpec, tiers []*tierState, open bool) {
	name := endpointChainName(ep, d, v6)
	top := &chainSpec{name: name, rules: []ruleSpec{midstreamDrop()}}
	actions := map[string]*chainSpec{}
	kinds := map[ir.TierKind]int{}
	var run []ir.Tier
	runName := ""
	flush := func() {
		if len(run) == 0 {
			return
		}
		if ts := newRunState(runName, run, d, v6, o, ids, actions); ts != nil {
			ts.build(sets)
			tiers = append(tiers, ts)
			top.rules = append(top.rules, ts.rules(d == ir.Ingress, o)...)
			maps = append(maps, ts.maps()...)
		}
		run = nil
	}
	final := false
	for _, t := range c.Tiers {
		// Maps are named by the kind of the run's first tier, so that
		// adding a tier in front (a quarantine) renames nothing after
		// it; a repeated kind gets a suffix.
		tn := name + "-" + t.Kind.String()
		if n := kinds[t.Kind]; n > 0 {
			tn = fmt.Sprintf("%s-%d", tn, n)
		}
		kinds[t.Kind]++
		if r := catchAll(t); r != nil {
			flush()
			v, ac := ruleVerdict(r, d, o, ids)
			if ac != nil {
				actions[ac.name] = ac
			}
			if v.kind == expr.VerdictReturn {
				continue // a Pass for everything: the next tier decides
			}
			ex := []expr.Any{&expr.Verdict{Kind: v.kind, Chain: v.chain}}
			if v.logged() {
				ex = []expr.Any{logExpr(o, LogPrefix('D', d, RuleNumber(r.ID))), &expr.Verdict{Kind: expr.VerdictDrop}}
			}
			top.rules = append(top.rules, ruleSpec{
				key:     fmt.Sprintf("all %d %s", v.kind, v.chain),
				comment: truncate(r.ID, maxCommentLen),
				exprs:   ex,
				fixed:   &v,
			})
			if v.final() {
				final = true
				break
			}
			continue
		}
		if len(run) == 0 {
			runName = tn
		}
		run = append(run, t)
		if hasAudit(t) {
			flush()
		}
	}
	flush()
	if !final {
		if len(top.rules) == 1 {
			return nil, nil, tiers, true
		}
		top.rules = append(top.rules, ruleSpec{
			key:     "default accept",
			comment: truncate(ep, maxCommentLen),
			exprs:   []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}},
			fixed:   &verdict{kind: expr.VerdictAccept},
		})
	}
	chains = []*chainSpec{top}
	for _, n := range sortedKeys(actions) {
		chains = append(chains, actions[n])
	}
	return chains, maps, tiers, false
}

// openChain is chainOpen: the chain of endpoint directions that no tier
// restricts.
func openChain() *chainSpec {
	return &chainSpec{name: chainOpen, rules: []ruleSpec{midstreamDrop(), {
		key:     "default accept",
		comment: "no tier",
		exprs:   []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}},
		fixed:   &verdict{kind: expr.VerdictAccept},
	}}}
}

// catchAll returns the rule that decides every packet the tier sees (its
// first effective rule, when that matches any peer and any port), or nil.
func catchAll(t ir.Tier) *ir.Rule {
	for i := range t.Rules {
		r := &t.Rules[i]
		if r.Peer.Set == "" && r.Peer.Negate {
			continue // matches nothing
		}
		if r.Peer.Set == "" && len(r.Ports) == 0 {
			return r
		}
		return nil
	}
	return nil
}

// hasAudit reports whether the tier holds an Audit rule.
func hasAudit(t ir.Tier) bool {
	for i := range t.Rules {
		if t.Rules[i].Action == ir.Audit {
			return true
		}
	}
	return false
}

// lookupRule is the one rule of a tier chain that consults map m: the
// peer address (the source for ingress) and, but for a mapAddr map, the
// layer 4 protocol and, for mapAddrProtoPort, the transport destination
// port, concatenated in registers 1.. (each field padded to 4 bytes).
func lookupRule(m *mapSpec, src bool, o compileOptions, guards []*mapSpec) ruleSpec {
	ex, key := keyLoads(m.kind, m.v6, src, guards)
	r := lookupVerdict(m, src, o, ex, key)
	r.guards = guards
	return r
}

// keyLoads returns the expressions that load the key of layout kind into
// registers 1.., then require the key to be in none of guards (each
// looked up by the leading fields of its own layout), and a text for
// them.
func keyLoads(kind mapKind, v6, src bool, guards []*mapSpec) ([]expr.Any, string) {
	r1, r2 := uint32(9), uint32(10) // 32-bit registers after a 4-byte address
	if v6 {
		// after a 16-byte address: 32-bit register 12 is the 128-bit
		// register 2, which is how the kernel lists it
		r1, r2 = 2, 13
	}
	ex := []expr.Any{addrLoad(v6, src)}
	key := "peer"
	proto := kind != mapAddr
	for _, g := range guards {
		proto = proto || g.kind != mapAddr
	}
	if proto {
		ex = append(ex, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: r1})
		key += " . l4proto"
	}
	if kind == mapAddrProtoPort {
		ex = append(ex, &expr.Payload{DestRegister: r2, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
		key += " . dport"
	}
	for _, g := range guards {
		ex = append(ex, &expr.Lookup{SourceRegister: 1, SetName: g.name, Invert: true})
		key += " !@" + g.name
	}
	return ex, key
}

// guardedRule is the rule of a background that one verdict decides
// whole (see tierState.bg): v for every packet whose peer is in none of
// guards, with a logged drop's log.
func guardedRule(v verdict, v6, src bool, o compileOptions, guards []*mapSpec) ruleSpec {
	ex, key := keyLoads(mapAddr, v6, src, guards)
	if v.logged() {
		ex = append(ex, logExpr(o, catchAllLogPrefix(v)), &expr.Verdict{Kind: expr.VerdictDrop})
	} else {
		ex = append(ex, &expr.Verdict{Kind: v.kind, Chain: v.chain})
	}
	return ruleSpec{key: fmt.Sprintf("%s src=%v background %d %s", key, src, v.kind, v.chain), exprs: ex, fixed: &v, guards: guards}
}

// lookupVerdict completes the lookup rule of map m after the key loads
// ex (described by key).
func lookupVerdict(m *mapSpec, src bool, o compileOptions, ex []expr.Any, key string) ruleSpec {
	if m.logDrop != "" {
		ex = append(ex,
			&expr.Lookup{SourceRegister: 1, SetName: m.name, IsDestRegSet: true, DestRegister: 1},
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
			logExpr(o, m.logDrop),
			&expr.Verdict{Kind: expr.VerdictDrop})
		return ruleSpec{key: fmt.Sprintf("%s src=%v mark map %s log %q drop", key, src, m.name, m.logDrop), exprs: ex, lookup: m}
	}
	if m.set {
		ex = append(ex, &expr.Lookup{SourceRegister: 1, SetName: m.name}, &expr.Verdict{Kind: m.hit.kind, Chain: m.hit.chain})
		return ruleSpec{key: fmt.Sprintf("%s src=%v @%s verdict %d %s", key, src, m.name, m.hit.kind, m.hit.chain), exprs: ex, lookup: m}
	}
	ex = append(ex, &expr.Lookup{SourceRegister: 1, SetName: m.name, IsDestRegSet: true, DestRegister: 0})
	return ruleSpec{key: fmt.Sprintf("%s src=%v vmap %s", key, src, m.name), exprs: ex, lookup: m}
}

// LogPrefix returns the nflog prefix of a rule: "bh <verdict><dir> <id>"
// with verdict D (drop), A (audit) or F (an accept rule with Log set), dir
// E or I, and id the rule's RuleNumber in hex. It is 14 bytes. A
// drop-log map logs "bh D<dir>" and carries the number in the packet
// mark.
func LogPrefix(verdict byte, d ir.Direction, num uint32) string {
	dir := byte('I')
	if d == ir.Egress {
		dir = 'E'
	}
	return fmt.Sprintf("bh %c%c %08x", verdict, dir, num)
}

func logExpr(o compileOptions, prefix string) *expr.Log {
	return &expr.Log{
		Key:   1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX,
		Group: o.logGroup,
		Data:  []byte(prefix),
	}
}

// actionChainName names the chain that carries out one rule's logged
// verdict in one direction: "rule-<D|A|F><E|I>-<rule number>".
func actionChainName(letter byte, d ir.Direction, num uint32) string {
	dir := byte('I')
	if d == ir.Egress {
		dir = 'E'
	}
	return fmt.Sprintf("rule-%c%c-%08x", letter, dir, num)
}

// ruleVerdict returns the map verdict of a matching rule and, when the
// verdict needs statements (a log, a conntrack mark), the action chain it
// goes to. Action chains are shared by every endpoint and family whose
// tiers hold the rule.
func ruleVerdict(r *ir.Rule, d ir.Direction, o compileOptions, ids map[uint32]string) (verdict, *chainSpec) {
	num := RuleNumber(r.ID)
	ids[num] = r.ID
	action := func(letter byte, key string, ex []expr.Any) (verdict, *chainSpec) {
		n := actionChainName(letter, d, num)
		return verdict{kind: expr.VerdictJump, chain: n}, &chainSpec{name: n, rules: []ruleSpec{{key: key, comment: truncate(r.ID, maxCommentLen), exprs: ex}}}
	}
	switch r.Action {
	case ir.Accept:
		if o.logOn && r.Log {
			return action('F', "log accept", []expr.Any{logExpr(o, LogPrefix('F', d, num)), &expr.Verdict{Kind: expr.VerdictAccept}})
		}
		return verdict{kind: expr.VerdictAccept}, nil
	case ir.Deny:
		if o.logOn {
			// No action chain: the cells go to the run's drop-log
			// maps (see tierState.target), a catch-all logs in its
			// rule.
			return verdict{kind: expr.VerdictDrop, chain: actionChainName('D', d, num)}, nil
		}
		return verdict{kind: expr.VerdictDrop}, nil
	case ir.Pass:
		// Log is not honoured on Pass: the final verdict is not known
		// here; the deciding rule below logs it.
		return verdict{kind: expr.VerdictReturn}, nil
	default: // ir.Audit
		var ex []expr.Any
		if o.logOn {
			ex = append(ex, logExpr(o, LogPrefix('A', d, num)))
		}
		ex = append(ex,
			&expr.Ct{Register: 1, Key: expr.CtKeyMARK},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: le32(^AuditMark), Xor: le32(AuditMark)},
			&expr.Ct{Register: 1, Key: expr.CtKeyMARK, SourceRegister: true},
			// The action chain is entered by jump from the endpoint
			// chain, so return goes on with its next rule: Audit
			// goes on as Pass does.
			&expr.Verdict{Kind: expr.VerdictReturn},
		)
		return action('A', fmt.Sprintf("audit log=%v", o.logOn), ex)
	}
}

// ruleCount returns the number of rules in the state.
func (st *state) ruleCount() int {
	n := 0
	for _, c := range st.chains {
		n += len(c.rules)
	}
	return n
}

// elementCount returns the number of kernel map elements.
func (st *state) elementCount() int {
	n := 0
	for _, m := range st.maps {
		n += len(m.elems)
	}
	return n
}

// sortedChains returns the chain names in a stable order: regular chains
// first, then base chains.
func (st *state) sortedChains() []string {
	names := make([]string, 0, len(st.chains))
	for n := range st.chains {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		bi, bj := st.chains[names[i]].base, st.chains[names[j]].base
		if bi != bj {
			return !bi
		}
		return names[i] < names[j]
	})
	return names
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func equalRules(a, b []ruleSpec) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].key != b[i].key || a[i].comment != b[i].comment {
			return false
		}
	}
	return true
}

func equalPrefixes(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

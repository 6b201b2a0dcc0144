//go:build linux

package nftables

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"sort"
	"strings"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// Names of the fixed objects in the table.
const (
	chainEgress   = "egress"
	chainIngress  = "ingress"
	mapEgress4    = "egress4"
	mapEgress6    = "egress6"
	mapIngress4   = "ingress4"
	mapIngress6   = "ingress6"
	prioEgress    = 0
	prioIngress   = 10
	maxCommentLen = 200
)

// AuditMark is the conntrack mark bit an Audit rule sets on a connection.
const AuditMark uint32 = 0x00b10000

// ipRange is an inclusive address range of one family.
type ipRange struct{ from, to netip.Addr }

// setSpec is one named interval set of one address family.
type setSpec struct {
	name    string
	v6      bool
	comment string
	ranges  []ipRange
}

// ruleSpec is one nft rule. key describes it canonically: two rules with
// equal keys have equal expressions.
type ruleSpec struct {
	key     string
	comment string
	exprs   []expr.Any
}

// chainSpec is one chain with its rules. Base chains have hook set.
type chainSpec struct {
	name  string
	base  bool
	prio  int32
	rules []ruleSpec
}

// vmapSpec is a verdict map from an address to a chain to jump to.
type vmapSpec struct {
	name  string
	v6    bool
	elems map[netip.Addr]string
}

// state is everything the backend programs into its table, derived from an
// ir.NodePolicy by compile.
type state struct {
	sets   map[string]*setSpec
	chains map[string]*chainSpec
	vmaps  map[string]*vmapSpec
	// endpointSets lists, per endpoint, the set names its chains use,
	// and endpointKey a digest of its chains, for revocation.
	endpointKey  map[string]string
	endpointSets map[string][]string
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
func RuleNumber(id string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return h.Sum32()
}

// setName returns the nft set name for an IR address set and family.
func setName(name string, v6 bool) string {
	if v6 {
		return "a6-" + hashName(name)
	}
	return "a4-" + hashName(name)
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
	names := map[string]bool{}
	hashes := map[string]string{}
	for i := range np.Sets {
		s := &np.Sets[i]
		if i > 0 && np.Sets[i-1].Name > s.Name {
			errs = append(errs, fmt.Errorf("sets[%d] %q: sets are not sorted by name", i, s.Name))
		}
		if o, ok := hashes[hashName(s.Name)]; ok && o != s.Name {
			errs = append(errs, fmt.Errorf("set %q: name hash collides with set %q", s.Name, o))
		}
		hashes[hashName(s.Name)] = s.Name
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
	ipOwner := map[netip.Addr]string{}
	epNames := map[string]bool{}
	epHashes := map[string]string{}
	for i := range np.Endpoints {
		ep := &np.Endpoints[i]
		if i > 0 && np.Endpoints[i-1].Name > ep.Name {
			errs = append(errs, fmt.Errorf("endpoints[%d] %q: endpoints are not sorted by name", i, ep.Name))
		}
		if o, ok := epHashes[hashName(ep.Name)]; ok && o != ep.Name {
			errs = append(errs, fmt.Errorf("endpoint %q: name hash collides with endpoint %q", ep.Name, o))
		}
		epHashes[hashName(ep.Name)] = ep.Name
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

// compileCache keeps the compiled chains of each endpoint between Syncs,
// keyed by a fingerprint of the endpoint, so that a Sync only compiles the
// endpoints that changed. Compiled chains are never modified.
type compileCache struct {
	eps  map[string]*cachedEndpoint
	seen map[string]bool
	sets map[string]cachedSet
	// ids collects the rule numbers of freshly compiled endpoints.
	ids map[uint32]string
}

type cachedSet struct {
	prefixes []netip.Prefix
	r4, r6   []ipRange
}

type cachedEndpoint struct {
	fp      uint64
	names   [4]string // egress4, ingress4, egress6, ingress6 chain names
	chains  []*chainSpec
	ruleIDs map[uint32]string
	key     string
	sets    []string
}

func newCompileCache() *compileCache {
	return &compileCache{eps: map[string]*cachedEndpoint{}, seen: map[string]bool{}, sets: map[string]cachedSet{}, ids: map[uint32]string{}}
}

// endpoint returns the compiled chains of ep, from the cache when its
// fingerprint is unchanged.
func (c *compileCache) endpoint(ep *ir.Endpoint, has4, has6 bool, o compileOptions) *cachedEndpoint {
	fp := fingerprint(ep, o)
	c.seen[ep.Name] = true
	if ce, ok := c.eps[ep.Name]; ok && ce.fp == fp {
		return ce
	}
	ce := &cachedEndpoint{fp: fp, ruleIDs: map[uint32]string{}, names: [4]string{
		endpointChainName(ep.Name, ir.Egress, false), endpointChainName(ep.Name, ir.Ingress, false),
		endpointChainName(ep.Name, ir.Egress, true), endpointChainName(ep.Name, ir.Ingress, true),
	}}
	defer func() {
		for k, v := range ce.ruleIDs {
			c.ids[k] = v
		}
	}()
	var keys []string
	used := map[string]bool{}
	for _, d := range []ir.Direction{ir.Ingress, ir.Egress} {
		ch := &ep.Ingress
		if d == ir.Egress {
			ch = &ep.Egress
		}
		for _, v6 := range []bool{false, true} {
			if (v6 && !has6) || (!v6 && !has4) {
				continue
			}
			for _, cs := range endpointChains(ep.Name, d, v6, ch, o, ce.ruleIDs) {
				ce.chains = append(ce.chains, cs)
				for _, r := range cs.rules {
					keys = append(keys, r.key)
				}
			}
		}
		for _, t := range ch.Tiers {
			for _, r := range t.Rules {
				if r.Peer.Set != "" {
					used[r.Peer.Set] = true
				}
			}
		}
	}
	ce.key = strings.Join(keys, "\n")
	for s := range used {
		ce.sets = append(ce.sets, s)
	}
	sort.Strings(ce.sets)
	c.eps[ep.Name] = ce
	return ce
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

// fingerprint hashes everything of ep that its chains depend on.
func fingerprint(ep *ir.Endpoint, o compileOptions) uint64 {
	h := fnv.New64a()
	var buf [8]byte
	num := func(v uint64) {
		binary.LittleEndian.PutUint64(buf[:], v)
		_, _ = h.Write(buf[:])
	}
	str := func(s string) {
		num(uint64(len(s)))
		_, _ = h.Write([]byte(s))
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
		b, _ := a.MarshalBinary()
		str(string(b))
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
	return h.Sum64()
}

// compile turns a validated policy into the table's desired state.
func compile(np *ir.NodePolicy, o compileOptions) *state {
	return compileWith(newCompileCache(), np, o)
}

// compileWith is compile with a cache of compiled endpoints.
func compileWith(cache *compileCache, np *ir.NodePolicy, o compileOptions) *state {
	st := &state{
		sets:         map[string]*setSpec{},
		chains:       map[string]*chainSpec{},
		vmaps:        map[string]*vmapSpec{},
		endpointKey:  map[string]string{},
		endpointSets: map[string][]string{},
	}
	seenSets := map[string]bool{}
	for _, s := range np.Sets {
		seenSets[s.Name] = true
		cs, ok := cache.sets[s.Name]
		if !ok || !equalPrefixes(cs.prefixes, s.Prefixes) {
			cs = cachedSet{prefixes: s.Prefixes, r4: toRanges(s.Prefixes, false), r6: toRanges(s.Prefixes, true)}
			cache.sets[s.Name] = cs
		}
		for _, v6 := range []bool{false, true} {
			rs := cs.r4
			if v6 {
				rs = cs.r6
			}
			st.sets[setName(s.Name, v6)] = &setSpec{
				name:    setName(s.Name, v6),
				v6:      v6,
				comment: truncate(s.Name, maxCommentLen),
				ranges:  rs,
			}
		}
	}
	for n := range cache.sets {
		if !seenSets[n] {
			delete(cache.sets, n)
		}
	}
	for _, n := range []string{mapEgress4, mapEgress6, mapIngress4, mapIngress6} {
		st.vmaps[n] = &vmapSpec{name: n, v6: strings.HasSuffix(n, "6"), elems: map[netip.Addr]string{}}
	}
	st.chains[chainEgress] = baseChain(chainEgress, prioEgress, mapEgress4, mapEgress6, true)
	st.chains[chainIngress] = baseChain(chainIngress, prioIngress, mapIngress4, mapIngress6, false)

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
		ce := cache.endpoint(ep, has4, has6, o)
		for _, a := range ep.IPs {
			a = a.Unmap()
			if a.Is4() {
				st.vmaps[mapEgress4].elems[a] = ce.names[0]
				st.vmaps[mapIngress4].elems[a] = ce.names[1]
			} else {
				st.vmaps[mapEgress6].elems[a] = ce.names[2]
				st.vmaps[mapIngress6].elems[a] = ce.names[3]
			}
		}
		for _, ch := range ce.chains {
			st.chains[ch.name] = ch
		}
		st.endpointKey[ep.Name] = ce.key
		st.endpointSets[ep.Name] = ce.sets
	}
	cache.sweep()
	return st
}

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

func addrBytes(a netip.Addr) []byte { return a.AsSlice() }

// elements returns the kernel interval elements of a set: each range is a
// start element and an end+1 element flagged IntervalEnd (omitted when the
// range ends at the family's last address).
func (s *setSpec) elementsOf(rs []ipRange) []elem {
	out := make([]elem, 0, 2*len(rs))
	for _, r := range rs {
		out = append(out, elem{key: addrBytes(r.from)})
		if n := r.to.Next(); n.IsValid() {
			out = append(out, elem{key: addrBytes(n), end: true})
		}
	}
	return out
}

type elem struct {
	key []byte
	end bool
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

// endpointChains returns the dispatch chain of one endpoint direction and
// family followed by its tier chains.
func endpointChains(ep string, d ir.Direction, v6 bool, c *ir.Chain, o compileOptions, ids map[uint32]string) []*chainSpec {
	name := endpointChainName(ep, d, v6)
	top := &chainSpec{name: name}
	out := []*chainSpec{top}
	kinds := map[ir.TierKind]int{}
	for _, t := range c.Tiers {
		// Named by tier kind, so that adding a tier (a quarantine) leaves
		// the other tiers' chains untouched; a repeated kind gets a suffix.
		tn := name + "-" + t.Kind.String()
		if n := kinds[t.Kind]; n > 0 {
			tn = fmt.Sprintf("%s-%d", tn, n)
		}
		kinds[t.Kind]++
		tc := &chainSpec{name: tn}
		for _, r := range t.Rules {
			tc.rules = append(tc.rules, tierRules(r, d, v6, o, ids)...)
		}
		top.rules = append(top.rules, ruleSpec{
			key:   "jump " + tn,
			exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: tn}},
		})
		out = append(out, tc)
	}
	top.rules = append(top.rules, ruleSpec{
		key:     "default accept",
		comment: truncate(ep, maxCommentLen),
		exprs:   []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}},
	})
	return out
}

// tierRules returns the nft rules of one IR rule: one per port range (an
// OR of consecutive rules with the same action is the same first match).
func tierRules(r ir.Rule, d ir.Direction, v6 bool, o compileOptions, ids map[uint32]string) []ruleSpec {
	var peer []expr.Any
	peerKey := "any"
	if r.Peer.Set != "" {
		sn := setName(r.Peer.Set, v6)
		peer = []expr.Any{addrLoad(v6, d == ir.Ingress), &expr.Lookup{SourceRegister: 1, SetName: sn, Invert: r.Peer.Negate}}
		peerKey = sn
		if r.Peer.Negate {
			peerKey = "!" + sn
		}
	} else if r.Peer.Negate {
		return nil // "not any address" matches nothing
	}
	num := RuleNumber(r.ID)
	ids[num] = r.ID
	act, actKey := actionExprs(r, d, num, o)
	type portMatch struct {
		key string
		ex  []expr.Any
	}
	var ports []portMatch
	if len(r.Ports) == 0 {
		ports = []portMatch{{key: "all"}}
	}
	for _, p := range r.Ports {
		ex := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(p.Protocol)}},
		}
		key := p.Protocol.String()
		if !p.AllPorts() {
			ex = append(ex, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
			if p.From == p.To {
				ex = append(ex, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(p.From)})
			} else {
				ex = append(ex, &expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: be16(p.From), ToData: be16(p.To)})
			}
			key += fmt.Sprintf(":%d-%d", p.From, p.To)
		}
		ports = append(ports, portMatch{key: key, ex: ex})
	}
	out := make([]ruleSpec, 0, len(ports))
	for _, pm := range ports {
		ex := make([]expr.Any, 0, len(peer)+len(pm.ex)+len(act))
		ex = append(ex, peer...)
		ex = append(ex, pm.ex...)
		ex = append(ex, act...)
		out = append(out, ruleSpec{
			key:     fmt.Sprintf("%s peer=%s ports=%s %s", r.ID, peerKey, pm.key, actKey),
			comment: truncate(r.ID, maxCommentLen),
			exprs:   ex,
		})
	}
	return out
}

// LogPrefix returns the nflog prefix of a rule: "bh <verdict><dir> <id>"
// with verdict D (drop), A (audit) or F (an accept rule with Log set), dir
// E or I, and id the rule's RuleNumber in hex. It is 14 bytes.
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

func actionExprs(r ir.Rule, d ir.Direction, num uint32, o compileOptions) ([]expr.Any, string) {
	var ex []expr.Any
	switch r.Action {
	case ir.Accept:
		if o.logOn && r.Log {
			ex = append(ex, logExpr(o, LogPrefix('F', d, num)))
		}
		return append(ex, &expr.Verdict{Kind: expr.VerdictAccept}), "accept"
	case ir.Deny:
		if o.logOn {
			ex = append(ex, logExpr(o, LogPrefix('D', d, num)))
		}
		return append(ex, &expr.Verdict{Kind: expr.VerdictDrop}), "drop"
	case ir.Pass:
		// Log is not honoured on Pass: the final verdict is not known
		// here; the deciding rule below logs it.
		return append(ex, &expr.Verdict{Kind: expr.VerdictReturn}), "return"
	default: // ir.Audit
		if o.logOn {
			ex = append(ex, logExpr(o, LogPrefix('A', d, num)))
		}
		ex = append(ex,
			&expr.Ct{Register: 1, Key: expr.CtKeyMARK},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: le32(^AuditMark), Xor: le32(AuditMark)},
			&expr.Ct{Register: 1, Key: expr.CtKeyMARK, SourceRegister: true},
			&expr.Verdict{Kind: expr.VerdictReturn},
		)
		return ex, "audit"
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

// elementCount returns the number of kernel set and map elements.
func (st *state) elementCount() int {
	n := 0
	for _, s := range st.sets {
		n += len(s.elementsOf(s.ranges))
	}
	for _, m := range st.vmaps {
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

func equalRanges(a, b []ipRange) bool {
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

package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// Verdict flags, as VF_* in bpf/policy.c.
const (
	flagDeny  uint8 = 1
	flagAudit uint8 = 2
	flagLog   uint8 = 4
)

// protoOther is the protocol class of every protocol without ports.
const protoOther = 0

// portProtos are the protocols whose destination port the datapath
// matches; every other protocol is judged as protoOther with port 0.
var portProtos = []ir.Protocol{ir.TCP, ir.UDP, ir.SCTP}

// allProtos are the protocol classes of the policy trie.
var allProtos = [4]ir.Protocol{protoOther, ir.TCP, ir.UDP, ir.SCTP}

// identKey is an entry of the identity LPM trie: a prefix of one address
// family (IPv4 in the first 4 bytes of Addr). The family is part of the
// key, so that ::/0 does not cover IPv4 addresses.
type identKey struct {
	Fam  uint8 // 4 or 6
	Addr [16]byte
	Bits uint8 // prefix length within the family
}

// clsKey is an entry of the class hash: which class of its chain an
// identity belongs to. A missing entry means class 0.
type clsKey struct {
	Ifindex  uint32
	Identity uint32
	Dir      ir.Direction
}

// polKey is an entry of the policy LPM trie.
type polKey struct {
	Ifindex  uint32
	Class    uint32
	Dir      ir.Direction
	Proto    uint8
	Port     uint16
	PortBits uint8 // 0..16: how many leading bits of Port are matched
}

// verdict is the value of a policy entry.
type verdict struct {
	Rule  uint32 // index in the rule table; 0 for the default
	Flags uint8
	Tier  ir.TierKind
}

// plain is the default verdict: allowed, not audited, no rule. Entries
// with it are left out of the policy map (a miss means the same).
var plain = verdict{Tier: ir.TierBaseline}

// chainKey names the chain of one endpoint interface and direction.
type chainKey struct {
	Ifindex uint32
	Dir     ir.Direction
}

// chainProg is what one chain compiles to: its class and policy entries.
// A chainProg is never changed once compiled, so programs share the
// chainProgs of chains that did not change, and a diff skips a chain
// whose chainProg is the same pointer on both sides.
type chainProg struct {
	cls map[clsKey]uint32
	pol map[polKey]verdict
}

// program is what one NodePolicy compiles to: the maps' contents, the
// class and policy entries grouped by chain.
type program struct {
	// ist and iver name the identity state and version whose trie a
	// compiled program holds (see identMap); nil for a program read back
	// from the kernel, which holds its trie in idents and identBits.
	ist  *identState
	iver uint64
	// idents are the identity trie's entries of a program read back;
	// identBits the distinct prefix lengths per family, longest first.
	idents    map[identKey]uint32
	identBits map[uint8][]uint8
	chains    map[chainKey]*chainProg
}

func newProgram() *program {
	return &program{idents: map[identKey]uint32{}, chains: map[chainKey]*chainProg{}}
}

// identMap returns the program's identity trie and its prefix lengths
// per family (callers must not change them). For the latest compiled
// program they are the identity state's own maps; for an older one they
// are rebuilt from the state's change log (a copy). ok is false when the
// log no longer reaches back to the program's version.
func (p *program) identMap() (idents map[identKey]uint32, bits map[uint8][]uint8, ok bool) {
	if p.ist == nil {
		return p.idents, p.identBits, true
	}
	if p.iver == p.ist.ver {
		return p.ist.idents, p.ist.bits, true
	}
	m, ok := p.ist.at(p.iver)
	if !ok {
		return nil, nil, false
	}
	lens := map[uint8]map[uint8]bool{4: {}, 6: {}}
	for k := range m {
		lens[k.Fam][k.Bits] = true
	}
	return m, sortedLens(lens), true
}

// identsKnown says whether identMap can give the program's trie.
func (p *program) identsKnown() bool { return p.ist == nil || p.iver >= p.ist.floor }

// identCount is the number of identity trie entries.
func (p *program) identCount() int {
	m, _, _ := p.identMap()
	return len(m)
}

// identDiff returns the identity entries to write and the ones to delete
// to turn a buffer holding old's trie into one holding want's. When want
// is the latest program of old's identity state, only the entries the
// state's log names are looked at. ok is false when old's trie is no
// longer known (see identsKnown).
func identDiff(old, want *program) (put map[identKey]uint32, del []identKey, ok bool) {
	put = map[identKey]uint32{}
	if st := want.ist; st != nil && old.ist == st && want.iver == st.ver {
		ch, ok := st.since(old.iver)
		if !ok {
			return nil, nil, false
		}
		for k, o := range ch {
			cur, has := st.idents[k]
			switch {
			case has && (!o.had || o.id != cur):
				put[k] = cur
			case !has && o.had:
				del = append(del, k)
			}
		}
		return put, del, true
	}
	om, _, ok1 := old.identMap()
	wm, _, ok2 := want.identMap()
	if !ok1 || !ok2 {
		return nil, nil, false
	}
	for k := range om {
		if _, ok := wm[k]; !ok {
			del = append(del, k)
		}
	}
	for k, v := range wm {
		if w, ok := om[k]; !ok || w != v {
			put[k] = v
		}
	}
	return put, del, true
}

// chain returns the chainProg of k, creating an empty one.
func (p *program) chain(k chainKey) *chainProg {
	c := p.chains[k]
	if c == nil {
		c = &chainProg{cls: map[clsKey]uint32{}, pol: map[polKey]verdict{}}
		p.chains[k] = c
	}
	return c
}

// counts returns the number of class and policy entries.
func (p *program) counts() (cls, pol int) {
	for _, c := range p.chains {
		cls += len(c.cls)
		pol += len(c.pol)
	}
	return cls, pol
}

// allCls and allPol flatten the chains' entries (for tests and tools).
func (p *program) allCls() map[clsKey]uint32 {
	out := map[clsKey]uint32{}
	for _, c := range p.chains {
		for k, v := range c.cls {
			out[k] = v
		}
	}
	return out
}

func (p *program) allPol() map[polKey]verdict {
	out := map[polKey]verdict{}
	for _, c := range p.chains {
		for k, v := range c.pol {
			out[k] = v
		}
	}
	return out
}

// allocator hands out stable numbers for identities and rules, so that a
// small policy change yields a small map change.
type allocator struct {
	idents    map[string]uint32
	nextIdent uint32
	classes   map[string]uint32
	nextClass uint32
	rules     map[string]uint32
	ruleIDs   map[uint32]string
	nextRule  uint32
	// walks memoizes the port walks of (chain, class) pairs of the chains
	// of the last compile; rule numbers are stable, so results stay
	// valid. Chains are named by fpIDs, which numbers the fingerprints
	// of the last compile's chains.
	walks  map[walkKey]*[4][]interval
	fpIDs  map[string]uint32
	nextFP uint32
	// stamp numbers the identity updates; a set's identities carry the
	// stamp of the update that last changed them (identState.setStamp).
	stamp uint64
	// chains memoizes the compiled chains of the last compile, by
	// interface and direction, with the inputs they were compiled from.
	chains map[chainKey]cachedChain
	// ident is the identity trie, updated by each compile.
	ident *identState
}

// cachedChain is a compiled chain and everything it depends on: a copy
// of the chain's rules and, for every set the chain names, the stamp of
// that set's identities in the identity state it was compiled with.
type cachedChain struct {
	chain ir.Chain
	sets  []setStamp
	st    *identState
	fpID  uint32
	prog  *chainProg
}

// setStamp is a set's name and the stamp of its identities.
type setStamp struct {
	name  string
	stamp uint64
}

// current says whether c's inputs equal chain and st's identities.
func (c *cachedChain) current(chain *ir.Chain, st *identState) bool {
	if c.st != st || !sameChainIR(&c.chain, chain) {
		return false
	}
	for _, s := range c.sets {
		if st.setStamp[s.name] != s.stamp {
			return false
		}
	}
	return true
}

// sameChainIR says whether two chains have equal tiers and rules.
func sameChainIR(a, b *ir.Chain) bool {
	return slices.EqualFunc(a.Tiers, b.Tiers, func(x, y ir.Tier) bool {
		return x.Kind == y.Kind && slices.EqualFunc(x.Rules, y.Rules, func(r, q ir.Rule) bool {
			return r.ID == q.ID && r.Peer == q.Peer && r.Action == q.Action && r.Log == q.Log && slices.Equal(r.Ports, q.Ports)
		})
	})
}

// cloneChain returns a deep copy of c.
func cloneChain(c *ir.Chain) ir.Chain {
	out := ir.Chain{Tiers: make([]ir.Tier, len(c.Tiers))}
	for i, t := range c.Tiers {
		rules := make([]ir.Rule, len(t.Rules))
		for j, r := range t.Rules {
			r.Ports = slices.Clone(r.Ports)
			rules[j] = r
		}
		out.Tiers[i] = ir.Tier{Kind: t.Kind, Rules: rules}
	}
	return out
}

// walkKey names the port walk of one chain (by fingerprint number) for
// one class (its member sets).
type walkKey struct {
	fp   uint32
	keep string
}

func newAllocator() *allocator {
	return &allocator{idents: map[string]uint32{}, nextIdent: 1, classes: map[string]uint32{}, nextClass: 1, rules: map[string]uint32{}, ruleIDs: map[uint32]string{}, nextRule: 1}
}

// class numbers a membership restricted to one chain's sets; the empty
// membership is class 0.
func (a *allocator) class(members string) uint32 {
	if members == "" {
		return 0
	}
	if id, ok := a.classes[members]; ok {
		return id
	}
	id := a.nextClass
	a.nextClass++
	a.classes[members] = id
	return id
}

func (a *allocator) identity(members string) uint32 {
	if members == "" {
		return 0
	}
	if id, ok := a.idents[members]; ok {
		return id
	}
	id := a.nextIdent
	a.nextIdent++
	a.idents[members] = id
	return id
}

func (a *allocator) rule(id string) uint32 {
	if n, ok := a.rules[id]; ok {
		return n
	}
	n := a.nextRule
	a.nextRule++
	a.rules[id] = n
	a.ruleIDs[n] = id
	return n
}

// mapped returns p as an identity key. An IPv4-mapped IPv6 prefix counts
// as IPv4, as ir.NodePolicy.Evaluate unmaps peers.
func mapped(p netip.Prefix) identKey {
	p = p.Masked()
	a := p.Addr()
	if a.Is4() {
		var k identKey
		v4 := a.As4()
		copy(k.Addr[:], v4[:])
		k.Fam, k.Bits = 4, uint8(p.Bits())
		return k
	}
	return identKey{Fam: 6, Addr: a.As16(), Bits: uint8(p.Bits())}
}

// prefixOf is the inverse of mapped.
func (k identKey) prefixOf() netip.Prefix {
	if k.Fam == 4 {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte(k.Addr[:4])), int(k.Bits))
	}
	return netip.PrefixFrom(netip.AddrFrom16(k.Addr), int(k.Bits))
}

func maskKey(k identKey, bits uint8) identKey {
	return mapped(netip.PrefixFrom(k.prefixOf().Addr(), int(bits)))
}

// validate returns every problem of np that this backend cannot enforce,
// naming the endpoint, direction and rule.
func validate(np *ir.NodePolicy) error {
	var errs []error
	setNames := map[string]bool{}
	epNames := map[string]bool{}
	for _, s := range np.Sets {
		for _, p := range s.Prefixes {
			if !p.IsValid() {
				errs = append(errs, fmt.Errorf("set %q: invalid prefix %v", s.Name, p))
			}
		}
		if setNames[s.Name] {
			errs = append(errs, fmt.Errorf("set %q: duplicate set name", s.Name))
		}
		setNames[s.Name] = true
	}
	for i := range np.Endpoints {
		ep := &np.Endpoints[i]
		if epNames[ep.Name] {
			errs = append(errs, fmt.Errorf("endpoint %q: duplicate endpoint name", ep.Name))
		}
		epNames[ep.Name] = true
		for _, d := range []ir.Direction{ir.Ingress, ir.Egress} {
			c := chainOf(ep, d)
			for _, t := range c.Tiers {
				for _, r := range t.Rules {
					if r.Action > ir.Audit {
						errs = append(errs, fmt.Errorf("endpoint %q %v rule %q: unknown action %v", ep.Name, d, r.ID, r.Action))
					}
					for _, pr := range r.Ports {
						if !isPortProto(pr.Protocol) {
							errs = append(errs, fmt.Errorf("endpoint %q %v rule %q: protocol %v: the ebpf backend matches ports of TCP, UDP and SCTP only", ep.Name, d, r.ID, pr.Protocol))
						}
						if !pr.AllPorts() && pr.From > pr.To {
							errs = append(errs, fmt.Errorf("endpoint %q %v rule %q: port range %d-%d is reversed", ep.Name, d, r.ID, pr.From, pr.To))
						}
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

func isPortProto(p ir.Protocol) bool {
	for _, q := range portProtos {
		if p == q {
			return true
		}
	}
	return false
}

func chainOf(ep *ir.Endpoint, d ir.Direction) *ir.Chain {
	if d == ir.Egress {
		return &ep.Egress
	}
	return &ep.Ingress
}

// identities computes the equivalence classes of addresses over all of
// np's sets from nothing. It is the reference identState.update must
// agree with (tests check it). For every distinct prefix P of any set, the addresses whose
// longest matching prefix is P belong to exactly the sets that have a
// prefix containing P, so P maps to the identity of that membership.
// Addresses in no prefix have identity 0 (member of nothing). It returns
// the trie entries and, per identity, its member sets.
func identities(np *ir.NodePolicy, alloc *allocator) (map[identKey]uint32, map[uint32]map[string]bool, map[uint8][]uint8) {
	byPrefix := map[identKey][]string{}
	lens := map[uint8]map[uint8]bool{4: {}, 6: {}}
	for _, s := range np.Sets {
		for _, p := range s.Prefixes {
			k := mapped(p)
			byPrefix[k] = append(byPrefix[k], s.Name)
			lens[k.Fam][k.Bits] = true
		}
	}
	bits := sortedLens(lens)
	keys := make([]identKey, 0, len(byPrefix))
	for k := range byPrefix {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].Fam != keys[j].Fam {
			return keys[i].Fam < keys[j].Fam
		}
		if c := netip.AddrFrom16(keys[i].Addr).Compare(netip.AddrFrom16(keys[j].Addr)); c != 0 {
			return c < 0
		}
		return keys[i].Bits < keys[j].Bits
	})
	out := make(map[identKey]uint32, len(keys))
	members := map[uint32]map[string]bool{0: {}}
	for _, k := range keys {
		in := map[string]bool{}
		for _, b := range bits[k.Fam] {
			if b > k.Bits {
				continue
			}
			for _, s := range byPrefix[maskKey(k, b)] {
				in[s] = true
			}
		}
		names := make([]string, 0, len(in))
		for s := range in {
			names = append(names, s)
		}
		sort.Strings(names)
		id := alloc.identity(strings.Join(names, "\x00"))
		out[k] = id
		members[id] = in
	}
	return out, members, bits
}

// compile turns np into map contents. ifindex gives the node-side
// interface of each endpoint; endpoints without one are left out.
//
// It reuses what the previous compile with the same allocator computed:
// the identity trie is updated where the sets changed (identState), and
// each chain whose rules and whose named sets' identities are unchanged
// is the same chainProg, so a diff skips it. Identity, class and rule
// numbers are stable in the allocator, so a reused chain is exactly what
// compiling it again would give.
func compile(np *ir.NodePolicy, ifindex map[string]uint32, alloc *allocator) (*program, error) {
	if err := validate(np); err != nil {
		return nil, err
	}
	return compileValid(np, ifindex, alloc), nil
}

// compileValid is compile of a policy that validate accepted.
func compileValid(np *ir.NodePolicy, ifindex map[string]uint32, alloc *allocator) *program {
	if alloc.ident == nil {
		alloc.ident = newIdentState()
	}
	st := alloc.ident
	st.update(np, alloc)
	members := st.members
	prog := &program{ist: st, iver: st.ver, chains: map[chainKey]*chainProg{}}
	if alloc.walks == nil {
		alloc.walks = map[walkKey]*[4][]interval{}
	}
	if alloc.fpIDs == nil {
		alloc.fpIDs = map[string]uint32{}
	}
	chains := make(map[chainKey]cachedChain, len(alloc.chains))
	reused := 0
	defer func() {
		prev := alloc.chains
		alloc.chains = chains
		if reused == len(prev) && reused == len(chains) {
			return // the same chains as before: nothing to prune
		}
		live := map[uint32]bool{}
		for _, c := range chains {
			live[c.fpID] = true
		}
		for fp, id := range alloc.fpIDs {
			if !live[id] {
				delete(alloc.fpIDs, fp)
			}
		}
		for k := range alloc.walks {
			if !live[k.fp] {
				delete(alloc.walks, k)
			}
		}
	}()
	var fpBuf []byte
	var names []string
	for i := range np.Endpoints {
		ep := &np.Endpoints[i]
		idx, ok := ifindex[ep.Name]
		if !ok {
			continue
		}
		for _, d := range []ir.Direction{ir.Ingress, ir.Egress} {
			c := chainOf(ep, d)
			if len(c.Tiers) == 0 {
				continue
			}
			ck := chainKey{Ifindex: idx, Dir: d}
			if old, ok := alloc.chains[ck]; ok && old.current(c, st) {
				prog.chains[ck] = old.prog
				chains[ck] = old
				reused++
				continue
			}
			fpBuf = appendFingerprint(fpBuf[:0], c)
			fpID, ok := alloc.fpIDs[string(fpBuf)]
			if !ok {
				fpID = alloc.nextFP
				alloc.nextFP++
				alloc.fpIDs[string(fpBuf)] = fpID
			}
			names = names[:0]
			for _, t := range c.Tiers {
				for _, r := range t.Rules {
					if r.Peer.Set != "" {
						names = append(names, r.Peer.Set)
					}
				}
			}
			sort.Strings(names)
			names = slices.Compact(names)
			sets := make([]setStamp, len(names))
			for j, n := range names {
				sets[j] = setStamp{n, st.setStamp[n]}
			}
			named := make(map[string]bool, len(names))
			for _, n := range names {
				named[n] = true
			}
			cp := prog.chain(ck)
			cc := cachedChain{chain: cloneChain(c), sets: sets, st: st, fpID: fpID, prog: cp}
			done := map[uint32]bool{}
			for _, id := range st.liveIDs() {
				var keep []string
				for s := range members[id] {
					if named[s] {
						keep = append(keep, s)
					}
				}
				sort.Strings(keep)
				cls := alloc.class(strings.Join(keep, "\x00"))
				if cls != 0 {
					cp.cls[clsKey{Ifindex: idx, Identity: id, Dir: d}] = cls
				}
				if done[cls] {
					continue
				}
				done[cls] = true
				in := map[string]bool{}
				for _, s := range keep {
					in[s] = true
				}
				mk := walkKey{fp: fpID, keep: strings.Join(keep, "\x00")}
				res := alloc.walks[mk]
				if res == nil {
					res = new([4][]interval)
					ts := forPeer(c, in, alloc)
					for j, proto := range allProtos {
						res[j] = peerIntervals(ts, proto)
					}
				}
				alloc.walks[mk] = res
				for j, proto := range allProtos {
					emitGroup(cp.pol, polKey{Ifindex: idx, Class: cls, Dir: d, Proto: uint8(proto)}, res[j])
				}
			}
			chains[ck] = cc
		}
	}
	return prog
}

// interval is a port range with one verdict.
type interval struct {
	from, to uint16
	v        verdict
}

// mrule is a rule that matches the peer, with its rule number.
type mrule struct {
	ports  []ir.PortRange
	action ir.Action
	log    bool
	num    uint32
}

// mtier is a tier reduced to the rules that match one peer class.
type mtier struct {
	kind  ir.TierKind
	rules []mrule
}

// forPeer reduces chain c to the rules whose peer matches a member of
// exactly the sets in.
func forPeer(c *ir.Chain, in map[string]bool, alloc *allocator) []mtier {
	out := make([]mtier, 0, len(c.Tiers))
	for _, t := range c.Tiers {
		mt := mtier{kind: t.Kind}
		for _, r := range t.Rules {
			if peerIn(r.Peer, in) {
				mt.rules = append(mt.rules, mrule{ports: r.Ports, action: r.Action, log: r.Log, num: alloc.rule(r.ID)})
			}
		}
		out = append(out, mt)
	}
	return out
}

// peerIntervals walks a chain reduced by forPeer for every destination
// port of proto and returns the maximal port intervals with equal
// verdicts. For protoOther it returns one interval covering port 0 only.
func peerIntervals(ts []mtier, proto ir.Protocol) []interval {
	if proto == protoOther {
		return []interval{{0, 0, walk(ts, proto, 0)}}
	}
	// Breakpoints: every range boundary of proto in the matching rules.
	cuts := map[uint32]bool{0: true}
	for _, t := range ts {
		for _, r := range t.rules {
			for _, p := range r.ports {
				if p.Protocol != proto || p.AllPorts() {
					continue
				}
				cuts[uint32(p.From)] = true
				cuts[uint32(p.To)+1] = true
			}
		}
	}
	starts := make([]uint32, 0, len(cuts))
	for s := range cuts {
		if s <= 65535 {
			starts = append(starts, s)
		}
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	var out []interval
	for i, s := range starts {
		end := uint32(65535)
		if i+1 < len(starts) {
			end = starts[i+1] - 1
		}
		v := walk(ts, proto, uint16(s))
		if n := len(out); n > 0 && out[n-1].v == v {
			out[n-1].to = uint16(end)
			continue
		}
		out = append(out, interval{uint16(s), uint16(end), v})
	}
	return out
}

// walk is ir.NodePolicy.Evaluate over a chain reduced by forPeer, with
// one difference in what it names: an allowed verdict that an Audit rule
// marked names that Audit rule and its tier (the first one, in precedence
// order), not the rule that finally allowed the flow, so that the AUDIT
// flow record names the rule whose action was Audit, as the nftables
// backend's record does. A denied verdict names the rule that denied.
func walk(ts []mtier, proto ir.Protocol, port uint16) verdict {
	audited := false
	var auditRule uint32
	var auditTier ir.TierKind
	flags := func(deny bool, log bool) uint8 {
		var f uint8
		if deny {
			f |= flagDeny
		}
		if audited {
			f |= flagAudit
		}
		if log {
			f |= flagLog
		}
		return f
	}
	allow := func(num uint32, tier ir.TierKind, log bool) verdict {
		if audited {
			return verdict{Rule: auditRule, Flags: flags(false, log), Tier: auditTier}
		}
		return verdict{Rule: num, Flags: flags(false, log), Tier: tier}
	}
	for _, t := range ts {
	rules:
		for _, r := range t.rules {
			if !portsIn(r.ports, proto, port) {
				continue
			}
			switch r.action {
			case ir.Accept:
				return allow(r.num, t.kind, r.log)
			case ir.Deny:
				return verdict{Rule: r.num, Flags: flags(true, r.log), Tier: t.kind}
			case ir.Audit:
				if !audited {
					auditRule, auditTier = r.num, t.kind
				}
				audited = true
				break rules
			case ir.Pass:
				break rules
			}
		}
	}
	return allow(0, ir.TierBaseline, false)
}

func peerIn(m ir.PeerMatch, in map[string]bool) bool {
	if m.Set == "" {
		return !m.Negate
	}
	return in[m.Set] != m.Negate
}

func portsIn(ports []ir.PortRange, proto ir.Protocol, port uint16) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if p.Matches(proto, port) {
			return true
		}
	}
	return false
}

// emitGroup adds the entries of one (endpoint, direction, identity,
// protocol) group: the verdict covering most ports becomes a /0 port
// entry (left out when it is the plain default), and the intervals with
// other verdicts are split into port prefixes that override it by longest
// match.
func emitGroup(pol map[polKey]verdict, base polKey, ivs []interval) {
	cover := map[verdict]uint32{}
	for _, iv := range ivs {
		cover[iv.v] += uint32(iv.to) - uint32(iv.from) + 1
	}
	bg := plain
	best := cover[plain]
	for _, iv := range ivs { // first-seen order keeps the choice deterministic
		if c := cover[iv.v]; c > best {
			bg, best = iv.v, c
		}
	}
	if bg != plain {
		k := base
		k.Port, k.PortBits = 0, 0
		pol[k] = bg
	}
	if base.Proto == protoOther {
		return
	}
	for _, iv := range ivs {
		if iv.v != bg {
			emitPrefixes(pol, base, iv)
		}
	}
}

func emitPrefixes(pol map[polKey]verdict, base polKey, iv interval) {
	lo, hi := uint32(iv.from), uint32(iv.to)
	for lo <= hi {
		// the largest aligned block starting at lo that fits
		size := uint32(1)
		for size < 65536 && lo%(size*2) == 0 && lo+size*2-1 <= hi {
			size *= 2
		}
		k := base
		k.Port = uint16(lo)
		k.PortBits = uint8(16 - bitsLen(size))
		pol[k] = iv.v
		lo += size
	}
}

// bitsLen returns log2 of a power of two.
func bitsLen(size uint32) int {
	n := 0
	for size > 1 {
		size >>= 1
		n++
	}
	return n
}

// lookupIdentity is the identity trie's longest-prefix match in Go.
// p must be a program read back or one whose trie is known (identsKnown).
func (p *program) lookupIdentity(a netip.Addr) uint32 {
	a = a.Unmap()
	k := mapped(netip.PrefixFrom(a, a.BitLen()))
	idents, bits, _ := p.identMap()
	for _, b := range bits[k.Fam] {
		if id, ok := idents[maskKey(k, b)]; ok {
			return id
		}
	}
	return 0
}

// lookupVerdict is the policy trie's longest-prefix match in Go.
func (p *program) lookupVerdict(ifindex, identity uint32, d ir.Direction, proto ir.Protocol, port uint16) verdict {
	if !isPortProto(proto) {
		proto, port = protoOther, 0
	}
	c := p.chains[chainKey{Ifindex: ifindex, Dir: d}]
	if c == nil {
		return plain
	}
	cls := c.cls[clsKey{Ifindex: ifindex, Identity: identity, Dir: d}]
	k := polKey{Ifindex: ifindex, Class: cls, Dir: d, Proto: uint8(proto)}
	for bits := 16; bits >= 0; bits-- {
		k.PortBits = uint8(bits)
		k.Port = port &^ uint16((uint32(1)<<(16-bits))-1)
		if v, ok := c.pol[k]; ok {
			return v
		}
	}
	return plain
}

// sortedLens returns each family's prefix lengths, longest first.
func sortedLens(lens map[uint8]map[uint8]bool) map[uint8][]uint8 {
	out := map[uint8][]uint8{}
	for fam, ls := range lens {
		for b := range ls {
			out[fam] = append(out[fam], b)
		}
		sort.Slice(out[fam], func(i, j int) bool { return out[fam][i] > out[fam][j] })
	}
	return out
}

// appendFingerprint appends a canonical text of a chain to buf: equal
// chains, equal text.
func appendFingerprint(buf []byte, c *ir.Chain) []byte {
	for _, t := range c.Tiers {
		buf = append(buf, 'T')
		buf = strconv.AppendInt(buf, int64(t.Kind), 10)
		buf = binary.AppendUvarint(buf, uint64(len(t.Rules)))
		for _, r := range t.Rules {
			buf = append(buf, 2)
			buf = binary.AppendUvarint(buf, uint64(len(r.ID)))
			buf = append(buf, r.ID...)
			buf = binary.AppendUvarint(buf, uint64(len(r.Peer.Set)))
			buf = append(buf, r.Peer.Set...)
			if r.Peer.Negate {
				buf = append(buf, '!')
			}
			buf = strconv.AppendInt(buf, int64(r.Action), 10)
			if r.Log {
				buf = append(buf, 'L')
			}
			buf = binary.AppendUvarint(buf, uint64(len(r.Ports)))
			for _, p := range r.Ports {
				buf = append(buf, ',')
				buf = strconv.AppendInt(buf, int64(p.Protocol), 10)
				buf = append(buf, ':')
				buf = strconv.AppendUint(buf, uint64(p.From), 10)
				buf = append(buf, '-')
				buf = strconv.AppendUint(buf, uint64(p.To), 10)
			}
		}
	}
	return buf
}

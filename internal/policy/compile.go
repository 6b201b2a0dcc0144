package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// Set kinds.
const (
	setNPRule   = iota // peers of one NetworkPolicy rule
	setNPNamed         // pods of one egress NetworkPolicy rule resolving a named port to one number
	setZones           // members of a list of zones (with "world": the complement, negated)
	setZPNamed         // pods of a zone list resolving a ZonePolicy named port to one number
	setQEntry          // one quarantine allow-list entry (cidr or pods)
	setPod             // one pod's addresses
	setDNS             // kube-dns pods
	setNodes           // addresses of nodes matching a selector
	setZoneMode        // members of every zone in Enforce mode, or in Audit/Learn mode
)

type setDesc struct {
	kind    int
	npKey   string
	rule    *npRule // setNPRule, setNPNamed: peers (the set's content depends only on rule.peerKey)
	egress  bool
	idx     int
	names   []string
	zpName  string
	proto   ir.Protocol
	port    uint16
	podKey  string
	qKey    string
	nodeSel *nodeSel
	audit   bool // setZoneMode: Audit/Learn zones
}

type setState struct {
	name     string
	desc     setDesc
	users    map[string]int // node -> endpoints referencing the set
	prefixes []netip.Prefix
	built    bool
	dropped  bool // no longer in compileState.sets
}

type epState struct {
	node       string
	ep         ir.Endpoint
	sets       []*setState // sorted by name
	structSels []*podSel
	structAll  bool
	qPeers     []string // quarantined pods whose allow-lists admit the endpoint
}

type nodeState struct {
	np    *ir.NodePolicy
	stale bool
	// epsStale: the node's endpoints or the names of its sets may have
	// changed; without it only set contents did, and NodePolicy reuses
	// the previous endpoint slice and set order.
	epsStale bool
	sets     *nodeSetList // the node's set list, shared with nodes naming the same sets
}

type compileState struct {
	eps          map[string]*epState
	nodeEps      map[string]map[string]bool
	dirty        map[string]bool
	all          bool
	sets         map[string]*setState
	staleSets    map[string]bool
	allStale     bool
	selUsers     map[*podSel]map[string]bool // selector -> sets built from it
	selMembers   map[*podSel]*memberSet      // selector -> member pods by index
	selSorted    map[*podSel]*selList        // selector -> members in address order, built on demand
	selByNS      map[string]map[*podSel]bool
	selGlobal    map[*podSel]bool
	structDeps   map[*podSel]map[string]bool // selector -> endpoints whose rule structure depends on its members
	structAll    map[string]bool             // endpoints whose rule structure depends on every pod
	zoneSets     map[string]bool             // sets recomputed when zone membership or pod addresses change
	anyPodSets   map[string]bool             // sets recomputed on any pod change
	podSets      map[string]map[string]bool  // pod key -> setPod sets
	nodeAddrSets map[string]bool             // setNodes sets
	nodeKeys     map[string][]string         // node -> its endpoint keys, sorted; built on demand
	nodeSets     map[string]map[string]bool  // node -> sets its endpoints reference
	npSets       map[string]map[string]bool  // NetworkPolicy key -> sets
	nodes        map[string]*nodeState
	dirtyNodes   map[string]bool
	quarPods     []*podInfo
	qRefs        map[string]map[string]bool // quarantined pod key -> endpoints whose chains accept it
	qSets        map[string]map[string]bool // quarantine key -> its allow-list entry sets
	namedMemo    map[string][]namedGroup
	chainMemo    map[uint64][]*chainMemo // valid during one flush
	sortedAddrs  []netip.Addr            // pod addresses, sorted; valid during one flush
	podRanges    []ipRange               // every pod address as normalized ranges; read-only once built
	podRangesOK  bool                    // podRanges is current
	// zoneAddrs holds, per pod zone name ("" for unzoned pods), its pods'
	// addresses sorted, duplicates kept; patched per pod change instead of
	// scanning every pod. Valid while zoneAddrsOK.
	zoneAddrs   map[string][]netip.Addr
	zoneAddrsOK bool
	// zoneMoved holds the addresses of pods that changed zone or
	// addresses since the last flush: built zone sets (setZones,
	// setZoneMode) that are not stale for another reason are patched at
	// these addresses only.
	zoneMoved []netip.Addr
	// round counts the flushes that had work: set contents change only
	// then. setLists holds the set lists of nodes, by their set names.
	round    uint64
	setLists map[string]*nodeSetList
}

func (c *compileState) init() {
	c.eps = map[string]*epState{}
	c.nodeEps = map[string]map[string]bool{}
	c.dirty = map[string]bool{}
	c.sets = map[string]*setState{}
	c.staleSets = map[string]bool{}
	c.selUsers = map[*podSel]map[string]bool{}
	c.selMembers = map[*podSel]*memberSet{}
	c.selSorted = map[*podSel]*selList{}
	c.selByNS = map[string]map[*podSel]bool{}
	c.selGlobal = map[*podSel]bool{}
	c.structDeps = map[*podSel]map[string]bool{}
	c.structAll = map[string]bool{}
	c.zoneSets = map[string]bool{}
	c.anyPodSets = map[string]bool{}
	c.podSets = map[string]map[string]bool{}
	c.nodeAddrSets = map[string]bool{}
	c.nodeKeys = map[string][]string{}
	c.nodeSets = map[string]map[string]bool{}
	c.npSets = map[string]map[string]bool{}
	c.nodes = map[string]*nodeState{}
	c.dirtyNodes = map[string]bool{}
	c.qRefs = map[string]map[string]bool{}
	c.qSets = map[string]map[string]bool{}
	c.setLists = map[string]*nodeSetList{}
}

func addTo[K comparable, V comparable](m map[K]map[V]bool, k K, v V) {
	s := m[k]
	if s == nil {
		s = map[V]bool{}
		m[k] = s
	}
	s[v] = true
}

// ---- change propagation ----

func (e *Engine) globalChanged() {
	e.c.all = true
	e.c.allStale = true
	e.c.zoneAddrsOK = false
	e.c.podRangesOK = false
}

func (e *Engine) podChanged(old, cur *podInfo, nsChanged bool) {
	c := &e.c
	p := cur
	if p == nil {
		p = old
	}
	key := p.key
	addrChanged := old == nil || cur == nil || !slices.Equal(old.ips, cur.ips)
	if addrChanged {
		c.podRangesOK = false
	}
	portsChanged := old == nil || cur == nil || !slices.Equal(old.ports, cur.ports)
	// bulk: the next flush recompiles every endpoint and rebuilds every
	// set anyway (initial load, global changes); only selector
	// memberships need to stay current.
	bulk := c.all && c.allStale
	if !bulk {
		e.markPodChanged(old, cur, key, addrChanged, portsChanged)
	}
	check := func(s *podSel) {
		members := c.selMembers[s]
		was := members.has(p.idx)
		var prev *podInfo
		if was {
			prev = old
		}
		is := cur != nil && e.selMatches(s, cur)
		if was == is && (!is || (!addrChanged && !portsChanged)) {
			return
		}
		if is {
			members.add(p.idx)
			e.patchMemberList(s, prev, cur)
		} else {
			members.remove(p.idx)
			e.patchMemberList(s, prev, nil)
		}
		if bulk {
			return
		}
		for name := range c.selUsers[s] {
			c.staleSets[name] = true
		}
		for ep := range c.structDeps[s] {
			c.dirty[ep] = true
		}
	}
	for s := range c.selByNS[p.ns] {
		check(s)
	}
	for s := range c.selGlobal {
		check(s)
	}
}

// markPodChanged marks what a pod change makes stale besides the sets of
// the selectors whose membership it changes.
func (e *Engine) markPodChanged(old, cur *podInfo, key string, addrChanged, portsChanged bool) {
	c := &e.c
	c.dirty[key] = true
	if addrChanged || old.zone != cur.zone {
		e.patchZoneAddrs(old, cur)
		// zone sets (c.zoneSets) change at these addresses only
		// (patchZoneSet)
		if old != nil {
			c.zoneMoved = append(c.zoneMoved, old.ips...)
		}
		if cur != nil {
			c.zoneMoved = append(c.zoneMoved, cur.ips...)
		}
	}
	if addrChanged || portsChanged || old.zone != cur.zone {
		// sets and chains that depend on every pod's addresses, ports or
		// zone (named ports over ipBlocks or all peers, zone named ports)
		for s := range c.anyPodSets {
			c.staleSets[s] = true
		}
		for k := range c.structAll {
			c.dirty[k] = true
		}
	}
	for s := range c.podSets[key] {
		c.staleSets[s] = true
	}
	wasQ := old != nil && len(old.quar) > 0
	isQ := cur != nil && len(cur.quar) > 0
	if wasQ || isQ {
		e.markQuarantinedChanged(key, cur)
	}
	// quarantined endpoints' chains name every quarantined peer and
	// resolve named ports per peer
	for _, q := range c.quarPods {
		c.dirty[q.key] = true
	}
}

// markQuarantinedChanged marks what a change of a quarantined pod (it
// joins or leaves a quarantine, an allow-list that isolates it changes,
// or its addresses, ports or labels change) makes stale: the pod itself,
// the endpoints whose chains accept it, and the endpoints its current
// allow-lists admit. cur is the pod now (nil when it is gone).
func (e *Engine) markQuarantinedChanged(key string, cur *podInfo) {
	c := &e.c
	c.dirty[key] = true
	for ep := range c.qRefs[key] {
		c.dirty[ep] = true
	}
	if cur == nil || len(cur.quar) == 0 {
		return
	}
	for _, p := range e.pods {
		if p == cur || c.dirty[p.key] {
			continue
		}
		for _, q := range cur.quar {
			if e.qListAdmits(q, p) {
				c.dirty[p.key] = true
				break
			}
		}
	}
}

// qListAdmits reports whether any entry of the quarantine's allow-lists
// (either direction, and allowDNS) may admit flows with pod p.
func (e *Engine) qListAdmits(q *quarInfo, p *podInfo) bool {
	for _, l := range [][]qPeer{q.ingress, q.egress} {
		for i := range l {
			for _, ip := range p.ips {
				if e.qPeerMatches(&l[i], end{p, ip}) {
					return true
				}
			}
		}
	}
	return q.dns && e.isDNS(p)
}

func (e *Engine) npChanged(old, cur *npInfo) {
	c := &e.c
	if c.all {
		return // every endpoint is recompiled at the next flush
	}
	n := cur
	if n == nil {
		n = old
	}
	for _, np := range []*npInfo{old, cur} {
		if np == nil {
			continue
		}
		e.podsFor(np.anchors, n.ns, func(p *podInfo) {
			e.stats.SelectorEvaluations++
			if np.podSel.Matches(p.labels) {
				c.dirty[p.key] = true
			}
		})
	}
}

// ---- sets ----

func (e *Engine) descSels(d setDesc) []*podSel {
	switch d.kind {
	case setNPRule, setNPNamed:
		var out []*podSel
		for _, p := range d.rule.peers {
			if p.sel != nil {
				out = append(out, p.sel)
			}
		}
		return out
	case setQEntry:
		if qp := e.qEntry(d); qp != nil && qp.pods != nil {
			return []*podSel{qp.pods}
		}
	case setDNS:
		return []*podSel{e.dnsSel}
	}
	return nil
}

func (e *Engine) qEntry(d setDesc) *qPeer {
	q := e.quars[d.qKey]
	if q == nil {
		return nil
	}
	l := q.ingress
	if d.egress {
		l = q.egress
	}
	if d.idx >= len(l) {
		return nil
	}
	return &l[d.idx]
}

func (e *Engine) watchSel(s *podSel) {
	c := &e.c
	if _, ok := c.selMembers[s]; ok {
		return
	}
	m := &memberSet{words: make([]uint64, 0, (e.nextIdx+63)/64)}
	e.eachSelected(s, func(p *podInfo) { m.add(p.idx) })
	if s.nsSel == nil {
		addTo(c.selByNS, s.fixedNS, s)
	} else {
		c.selGlobal[s] = true
	}
	c.selMembers[s] = m
}

// eachSelected calls fn for every pod the selector matches.
func (e *Engine) eachSelected(s *podSel, fn func(*podInfo)) {
	// the candidates are in a matching namespace: only the pod selector
	// is left to check
	check := fn
	if !s.podSel.Empty() {
		check = func(p *podInfo) {
			e.stats.SelectorEvaluations++
			if s.podSel.Matches(p.labels) {
				fn(p)
			}
		}
	}
	if !s.anchorsSet {
		s.anchors, s.anchorsSet = anchors(s.podSel), true
	}
	as := s.anchors
	if s.nsSel == nil {
		e.podsFor(as, s.fixedNS, check)
		return
	}
	e.namespacesFor(s.nsSel, func(ns string) { e.podsFor(as, ns, check) })
}

func (e *Engine) unwatchSel(s *podSel) {
	c := &e.c
	delete(c.selMembers, s)
	delete(c.selSorted, s)
	delete(c.selGlobal, s)
	if m := c.selByNS[s.fixedNS]; m != nil {
		delete(m, s)
	}
}

// useSet makes sure a set exists with the descriptor; it returns the name.
func (e *Engine) useSet(name string, d setDesc) *setState {
	c := &e.c
	if s, ok := c.sets[name]; ok {
		return s
	}
	s := &setState{name: name, desc: d, users: map[string]int{}}
	c.sets[name] = s
	c.staleSets[name] = true
	for _, sel := range e.descSels(d) {
		e.watchSel(sel)
		addTo(c.selUsers, sel, name)
	}
	switch d.kind {
	case setZones, setZoneMode:
		c.zoneSets[name] = true
	case setNPNamed:
		if d.rule.allPeers || !d.rule.selOnly() {
			c.anyPodSets[name] = true
		}
	case setZPNamed:
		c.anyPodSets[name] = true
		c.zoneSets[name] = true
	case setPod:
		addTo(c.podSets, d.podKey, name)
	case setNodes:
		c.nodeAddrSets[name] = true
	case setQEntry:
		addTo(c.qSets, d.qKey, name)
	}
	if d.npKey != "" {
		addTo(c.npSets, d.npKey, name)
	}
	return s
}

func (e *Engine) dropSet(s *setState) {
	c := &e.c
	s.dropped = true
	delete(c.sets, s.name)
	delete(c.staleSets, s.name)
	delete(c.zoneSets, s.name)
	delete(c.anyPodSets, s.name)
	delete(c.nodeAddrSets, s.name)
	if m := c.podSets[s.desc.podKey]; m != nil {
		delete(m, s.name)
		if len(m) == 0 {
			delete(c.podSets, s.desc.podKey)
		}
	}
	if m := c.qSets[s.desc.qKey]; m != nil && s.desc.kind == setQEntry {
		delete(m, s.name)
		if len(m) == 0 {
			delete(c.qSets, s.desc.qKey)
		}
	}
	if m := c.npSets[s.desc.npKey]; m != nil {
		delete(m, s.name)
		if len(m) == 0 {
			delete(c.npSets, s.desc.npKey)
		}
	}
	for sel, users := range c.selUsers {
		if users[s.name] {
			delete(users, s.name)
			if len(users) == 0 {
				delete(c.selUsers, sel)
				if len(c.structDeps[sel]) == 0 {
					e.unwatchSel(sel)
				}
			}
		}
	}
}

func (e *Engine) podIPRanges(members map[string]*podInfo) []netip.Addr {
	out := make([]netip.Addr, 0, len(members))
	for _, p := range members {
		out = append(out, p.ips...)
	}
	return out
}

func hostsOf(addrs []netip.Addr) []ipRange {
	out := make([]ipRange, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, prefixRange(hostPrefix(a)))
	}
	return out
}

// zoneMembers returns the member addresses of one zone name (a real zone
// or "unzoned"), as ranges. CIDR zone members exclude pod addresses.
func (e *Engine) zoneMembers(name string, podRanges []ipRange) []ipRange {
	if name == zoneUnzoned {
		return hostsOf(e.podZoneAddrs(""))
	}
	z := e.zones[name]
	if z == nil {
		return nil
	}
	if z.pods {
		return hostsOf(e.podZoneAddrs(name))
	}
	return subtract(z.effNets, podRanges)
}

// podZoneAddrs returns the sorted addresses of the pods whose zone is
// name ("" for unzoned pods); the slice must not be modified or kept.
func (e *Engine) podZoneAddrs(name string) []netip.Addr {
	c := &e.c
	if !c.zoneAddrsOK {
		c.zoneAddrs = map[string][]netip.Addr{}
		for _, p := range e.pods {
			c.zoneAddrs[p.zone] = append(c.zoneAddrs[p.zone], p.ips...)
		}
		for _, l := range c.zoneAddrs {
			slices.SortFunc(l, netip.Addr.Compare)
		}
		c.zoneAddrsOK = true
	}
	return c.zoneAddrs[name]
}

// patchZoneAddrs moves one pod's addresses between the per-zone address
// lists: old is the pod before (nil if new), cur after (nil if gone).
func (e *Engine) patchZoneAddrs(old, cur *podInfo) {
	c := &e.c
	if !c.zoneAddrsOK {
		return
	}
	if old != nil {
		l := c.zoneAddrs[old.zone]
		for _, a := range old.ips {
			if i, ok := slices.BinarySearchFunc(l, a, netip.Addr.Compare); ok {
				l = slices.Delete(l, i, i+1)
			} else {
				// the lists disagree with the pods: rebuild them
				c.zoneAddrsOK = false
				return
			}
		}
		c.zoneAddrs[old.zone] = l
	}
	if cur != nil {
		l := c.zoneAddrs[cur.zone]
		for _, a := range cur.ips {
			i, _ := slices.BinarySearchFunc(l, a, netip.Addr.Compare)
			l = slices.Insert(l, i, a)
		}
		c.zoneAddrs[cur.zone] = l
	}
}

// allPodRanges returns every pod address as normalized ranges. The slice
// is cached until a pod's addresses change and must not be modified.
func (e *Engine) allPodRanges() []ipRange {
	c := &e.c
	if c.podRangesOK {
		return c.podRanges
	}
	var addrs []netip.Addr
	for _, p := range e.pods {
		addrs = append(addrs, p.ips...)
	}
	c.podRanges = slices.Clip(normalize(hostsOf(addrs)))
	c.podRangesOK = true
	return c.podRanges
}

func (e *Engine) buildSet(s *setState) []netip.Prefix {
	e.stats.SetsRebuilt++
	d := s.desc
	switch d.kind {
	case setNPRule:
		var lists [][]netip.Prefix
		var blocks []ipRange
		for _, p := range d.rule.peers {
			if p.sel != nil {
				lists = append(lists, e.memberList(p.sel).prefixes)
			} else {
				blocks = append(blocks, p.block.ranges...)
			}
		}
		if len(blocks) == 0 {
			return mergePrefixes(lists)
		}
		for _, l := range lists {
			for _, p := range l {
				blocks = append(blocks, prefixRange(p))
			}
		}
		return toPrefixes(normalize(blocks))
	case setNPNamed:
		for _, g := range e.npNamedGroups(d.rule) {
			if g.proto == d.proto && g.port == d.port {
				return g.prefixes
			}
		}
		return nil
	case setZPNamed:
		zp := e.zps[d.zpName]
		if zp == nil {
			return nil
		}
		for _, g := range e.zpNamedGroups(zp, d.names) {
			if g.proto == d.proto && g.port == d.port {
				return g.prefixes
			}
		}
		return nil
	case setZones:
		podRanges := e.allPodRanges()
		var rs []ipRange
		world := false
		for _, n := range d.names {
			if n == zoneWorld {
				world = true
				continue
			}
			rs = append(rs, e.zoneMembers(n, podRanges)...)
		}
		rs = normalize(rs)
		if world {
			nonworld := slices.Clone(podRanges)
			for _, z := range e.zoneList {
				if !z.pods {
					nonworld = append(nonworld, z.effNets...)
				}
			}
			rs = subtract(normalize(nonworld), rs)
		}
		return toPrefixes(rs)
	case setQEntry:
		qp := e.qEntry(d)
		if qp == nil {
			return nil
		}
		if qp.cidr != nil {
			return toPrefixes(qp.cidr.ranges)
		}
		if qp.pods != nil {
			return e.memberList(qp.pods).prefixes
		}
	case setPod:
		if p := e.pods[d.podKey]; p != nil {
			return hostPrefixes(slices.Clone(p.ips))
		}
	case setDNS:
		return e.memberList(e.dnsSel).prefixes
	case setNodes:
		return e.nodeSetPrefixes(d.nodeSel)
	case setZoneMode:
		return e.zoneModePrefixes(d.audit)
	}
	return nil
}

// ---- named port groups ----

type namedGroup struct {
	proto    ir.Protocol
	port     uint16
	prefixes []netip.Prefix // sorted, distinct host prefixes
}

// groupNamed groups the addresses that each calls fn with by the number
// each named port of specs resolves to on the address's pod. With sorted,
// the addresses arrive in address order and need no sorting.
func groupNamed(specs []portSpec, sorted bool, each func(func(p *podInfo, ip netip.Addr))) []namedGroup {
	type k struct {
		proto ir.Protocol
		port  uint16
	}
	var names []portSpec
	for _, s := range specs {
		if s.name != "" {
			names = append(names, s)
		}
	}
	// few groups: a slice beats a map
	var keys []k
	var addrs [][]netip.Addr
	var seen []k
	each(func(p *podInfo, ip netip.Addr) {
		seen = seen[:0]
		for _, s := range names {
			n, ok := p.resolve(s.name, s.proto)
			if !ok || slices.Contains(seen, k{s.proto, n}) {
				continue
			}
			seen = append(seen, k{s.proto, n})
			g := slices.Index(keys, k{s.proto, n})
			if g < 0 {
				g = len(keys)
				keys = append(keys, k{s.proto, n})
				addrs = append(addrs, nil)
			}
			if l := addrs[g]; sorted && len(l) > 0 && l[len(l)-1] == ip {
				continue
			}
			addrs[g] = append(addrs[g], ip)
		}
	})
	out := make([]namedGroup, 0, len(keys))
	for i, key := range keys {
		var ps []netip.Prefix
		if sorted {
			ps = make([]netip.Prefix, len(addrs[i]))
			for j, a := range addrs[i] {
				ps[j] = hostPrefix(a)
			}
		} else {
			ps = hostPrefixes(addrs[i])
		}
		out = append(out, namedGroup{proto: key.proto, port: key.port, prefixes: ps})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].proto != out[j].proto {
			return out[i].proto < out[j].proto
		}
		return out[i].port < out[j].port
	})
	return out
}

func (e *Engine) npNamedGroups(r *npRule) []namedGroup {
	memoKey := "np|" + r.peerKey + "|" + r.namedKey
	if g, ok := e.c.namedMemo[memoKey]; ok {
		return g
	}
	var g []namedGroup
	if !r.allPeers && !r.selOnly() {
		g = groupNamed(r.ports.specs, false, func(fn func(*podInfo, netip.Addr)) {
			seen := map[netip.Addr]bool{}
			for _, pe := range r.peers {
				if pe.sel != nil {
					e.watchSel(pe.sel)
					e.eachMember(e.c.selMembers[pe.sel], func(p *podInfo) {
						for _, ip := range p.ips {
							if !seen[ip] {
								seen[ip] = true
								fn(p, ip)
							}
						}
					})
					continue
				}
				for _, rg := range pe.block.ranges {
					for _, ip := range e.addrsIn(rg) {
						if !seen[ip] {
							seen[ip] = true
							fn(e.podByIP[ip], ip)
						}
					}
				}
			}
		})
	} else if r.allPeers {
		g = groupNamed(r.ports.specs, false, func(fn func(*podInfo, netip.Addr)) {
			for _, p := range e.pods {
				for _, ip := range p.ips {
					if e.npPeerMatches(r, end{p, ip}) {
						fn(p, ip)
					}
				}
			}
		})
	} else {
		lists := make([][]addrPod, 0, len(r.peers))
		for _, pe := range r.peers {
			e.watchSel(pe.sel)
			lists = append(lists, e.memberList(pe.sel).ents)
		}
		g = groupNamed(r.ports.specs, true, func(fn func(*podInfo, netip.Addr)) {
			for _, x := range mergeEnts(lists) {
				fn(x.pod, x.addr)
			}
		})
	}
	if e.c.namedMemo != nil {
		e.c.namedMemo[memoKey] = g
	}
	return g
}

func (e *Engine) zpNamedGroups(zp *zpInfo, names []string) []namedGroup {
	memoKey := "zp|" + zp.name + "|" + strings.Join(names, ",")
	if g, ok := e.c.namedMemo[memoKey]; ok {
		return g
	}
	g := groupNamed(zp.ports.specs, false, func(fn func(*podInfo, netip.Addr)) {
		for _, p := range e.pods {
			if slices.Contains(names, p.zoneName()) {
				for _, ip := range p.ips {
					fn(p, ip)
				}
			}
		}
	})
	if e.c.namedMemo != nil {
		e.c.namedMemo[memoKey] = g
	}
	return g
}

// ---- flush ----

func (e *Engine) flush() {
	c := &e.c
	if c.all && len(c.dirty) == 0 && len(c.eps) == 0 {
		// first compilation: size the maps once
		c.dirty = make(map[string]bool, len(e.pods))
		c.eps = make(map[string]*epState, len(e.pods))
	}
	if c.all {
		for k := range e.pods {
			c.dirty[k] = true
		}
		for k := range c.eps {
			c.dirty[k] = true
		}
		c.all = false
	}
	if c.allStale {
		for name := range c.sets {
			c.staleSets[name] = true
		}
		c.allStale = false
	}
	if len(c.dirty) == 0 && len(c.staleSets) == 0 && len(c.zoneMoved) == 0 {
		return
	}
	c.round++
	c.quarPods = c.quarPods[:0]
	for _, p := range e.pods {
		if len(p.quar) > 0 {
			c.quarPods = append(c.quarPods, p)
		}
	}
	sort.Slice(c.quarPods, func(i, j int) bool { return c.quarPods[i].key < c.quarPods[j].key })
	c.namedMemo = map[string][]namedGroup{}
	c.chainMemo = map[uint64][]*chainMemo{}
	c.sortedAddrs = nil
	defer func() { c.namedMemo = nil; c.chainMemo = nil; c.sortedAddrs = nil }()

	var unused []*setState
	unref := func(node string, sets []*setState) {
		for _, s := range sets {
			n := s.name
			if c.sets[n] != s {
				continue
			}
			s.users[node]--
			if s.users[node] <= 0 {
				delete(s.users, node)
				delete(c.nodeSets[node], n)
				e.nodeDirty(node)
			}
			if len(s.users) == 0 {
				unused = append(unused, s)
			}
		}
	}
	for key := range c.dirty {
		old := c.eps[key]
		if old != nil {
			unref(old.node, old.sets)
			for _, sel := range old.structSels {
				if m := c.structDeps[sel]; m != nil {
					delete(m, key)
				}
			}
			delete(c.structAll, key)
			for _, q := range old.qPeers {
				if m := c.qRefs[q]; m != nil {
					delete(m, key)
					if len(m) == 0 {
						delete(c.qRefs, q)
					}
				}
			}
			delete(c.eps, key)
			if m := c.nodeEps[old.node]; m != nil {
				delete(m, key)
			}
			e.nodeDirty(old.node)
		}
		p := e.pods[key]
		if old != nil && (p == nil || p.node != old.node) {
			delete(c.nodeKeys, old.node)
		}
		if p == nil {
			continue
		}
		if old == nil || p.node != old.node {
			delete(c.nodeKeys, p.node)
		}
		st := e.compileEndpoint(p)
		c.eps[key] = st
		addTo(c.nodeEps, p.node, key)
		refs := c.nodeSets[p.node]
		if refs == nil {
			refs = map[string]bool{}
			c.nodeSets[p.node] = refs
		}
		for _, s := range st.sets {
			s.users[p.node]++
			refs[s.name] = true
		}
		for _, sel := range st.structSels {
			addTo(c.structDeps, sel, key)
		}
		if st.structAll {
			c.structAll[key] = true
		}
		for _, q := range st.qPeers {
			addTo(c.qRefs, q, key)
		}
		e.nodeDirty(p.node)
	}
	clear(c.dirty)
	for _, s := range unused {
		if len(s.users) == 0 && c.sets[s.name] == s {
			e.dropSet(s)
		}
	}
	if len(c.zoneMoved) > 0 {
		slices.SortFunc(c.zoneMoved, netip.Addr.Compare)
		c.zoneMoved = slices.Compact(c.zoneMoved)
		for name := range c.zoneSets {
			s := c.sets[name]
			if !s.built || c.staleSets[name] {
				continue // rebuilt below
			}
			e.stats.SetsPatched++
			if p := e.patchZoneSet(s, c.zoneMoved); !samePrefixSlice(p, s.prefixes) {
				s.prefixes = p
				for node := range s.users {
					e.nodeSetsDirty(node)
				}
			}
		}
		c.zoneMoved = c.zoneMoved[:0]
	}
	for name := range c.staleSets {
		s := c.sets[name]
		if s == nil {
			continue
		}
		pre := s.prefixes
		s.prefixes = e.buildSet(s)
		if !s.built || !slices.Equal(pre, s.prefixes) {
			for node := range s.users {
				e.nodeSetsDirty(node)
			}
		} else {
			// same contents: keep the slice already handed out, so
			// that unchanged sets stay identical across policies
			s.prefixes = pre
		}
		s.built = true
	}
	clear(c.staleSets)
}

func (e *Engine) nodeDirty(node string) {
	if node == "" {
		return
	}
	e.c.dirtyNodes[node] = true
	if ns := e.c.nodes[node]; ns != nil {
		ns.stale = true
		ns.epsStale = true
	}
}

// nodeSetsDirty marks a node whose endpoints and set names are unchanged
// but the contents of one of its sets changed.
func (e *Engine) nodeSetsDirty(node string) {
	if node == "" {
		return
	}
	e.c.dirtyNodes[node] = true
	if ns := e.c.nodes[node]; ns != nil {
		ns.stale = true
	}
}

// TakeDirtyNodes returns the sorted nodes whose NodePolicy may differ from
// what it was at the previous call, and forgets them.
func (e *Engine) TakeDirtyNodes() []string {
	e.flush()
	out := make([]string, 0, len(e.c.dirtyNodes))
	for n := range e.c.dirtyNodes {
		out = append(out, n)
	}
	sort.Strings(out)
	clear(e.c.dirtyNodes)
	return out
}

// NodePolicy returns the compiled policy of a node; never nil. It is
// cached and shared: callers must not mutate it.
func (e *Engine) NodePolicy(node string) *ir.NodePolicy {
	e.flush()
	ns := e.c.nodes[node]
	if ns != nil && !ns.stale {
		return ns.np
	}
	e.stats.NodesRebuilt++
	if ns != nil && !ns.epsStale && ns.sets != nil {
		if sets, ok := e.currentSets(ns.sets); ok {
			np := &ir.NodePolicy{Node: node, Endpoints: ns.np.Endpoints, Sets: sets}
			ns.np, ns.stale = np, false
			return np
		}
	}
	np := &ir.NodePolicy{Node: node, Endpoints: []ir.Endpoint{}, Sets: []ir.AddressSet{}}
	keys, ok := e.c.nodeKeys[node]
	if !ok {
		keys = make([]string, 0, len(e.c.nodeEps[node]))
		for k := range e.c.nodeEps[node] {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		e.c.nodeKeys[node] = keys
	}
	np.Endpoints = make([]ir.Endpoint, 0, len(keys))
	for _, k := range keys {
		np.Endpoints = append(np.Endpoints, e.c.eps[k].ep)
	}
	names := make([]string, 0, len(e.c.nodeSets[node]))
	for n := range e.c.nodeSets[node] {
		names = append(names, n)
	}
	sort.Strings(names)
	if node == "" {
		np.Sets = make([]ir.AddressSet, 0, len(names))
		for _, n := range names {
			p := e.c.sets[n].prefixes
			if p == nil {
				p = []netip.Prefix{}
			}
			np.Sets = append(np.Sets, ir.AddressSet{Name: n, Prefixes: p})
		}
		return np
	}
	if ns == nil {
		ns = &nodeState{}
		e.c.nodes[node] = ns
	}
	np.Sets = e.nodeSets(ns, names)
	ns.np, ns.stale, ns.epsStale = np, false, false
	return np
}

// refreshSets returns a node's sets with the same names as prev and their
// current contents. Entries whose set did not change keep their prefix
// slice; prev itself is returned when none changed. prev is never
// modified: it belongs to a published NodePolicy. It reports false when a
// set of prev no longer exists (the caller then rebuilds the node).
func (e *Engine) refreshSets(prev []ir.AddressSet) ([]ir.AddressSet, bool) {
	var out []ir.AddressSet
	for i, as := range prev {
		s := e.c.sets[as.Name]
		if s == nil {
			return nil, false
		}
		p := s.prefixes
		if p == nil {
			p = []netip.Prefix{}
		}
		if out == nil {
			if samePrefixSlice(p, as.Prefixes) {
				continue
			}
			out = make([]ir.AddressSet, len(prev))
			copy(out, prev[:i])
		}
		if samePrefixSlice(p, as.Prefixes) {
			out[i] = as
		} else {
			out[i] = ir.AddressSet{Name: as.Name, Prefixes: p}
		}
	}
	if out == nil {
		return prev, true
	}
	return out, true
}

// samePrefixSlice reports whether a and b are the same slice (same
// backing array and length), not merely equal contents.
func samePrefixSlice(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 {
		return true
	}
	return &a[0] == &b[0]
}

// ---- endpoint compilation ----

type epBuilder struct {
	e      *Engine
	p      *podInfo
	sets   []*setState // may repeat
	st     *epState
	sels   []*podSel // may repeat
	tiers  []ir.Tier
	rec    *chainMemo // records what the rules being built depend on
	qPeers []string   // quarantined pods whose allow-lists admit this endpoint (may repeat)
	selAll []*npInfo  // NetworkPolicies selecting the pod, by name, once selSet
	selSet bool
}

func (b *epBuilder) use(name string, d setDesc) ir.PeerMatch {
	return b.useState(b.e.useSet(name, d))
}

// useCached is use with the set remembered in *cache (e.g. on the rule
// that names it), to skip the lookup by name.
func (b *epBuilder) useCached(cache **setState, name string, d setDesc) ir.PeerMatch {
	s := *cache
	if s == nil || s.dropped {
		s = b.e.useSet(name, d)
		*cache = s
	}
	return b.useState(s)
}

func (b *epBuilder) useState(s *setState) ir.PeerMatch {
	b.sets = append(b.sets, s)
	if b.rec != nil {
		b.rec.sets = append(b.rec.sets, s)
	}
	return ir.PeerMatch{Set: s.name}
}

// dependsOn records that the endpoint's rule structure depends on the
// selector's members.
func (b *epBuilder) dependsOn(s *podSel) {
	b.sels = append(b.sels, s)
	b.e.watchSel(s)
	if b.rec != nil {
		b.rec.sels = append(b.rec.sels, s)
	}
}

// dependsOnAll records that the endpoint's rule structure depends on
// every pod.
func (b *epBuilder) dependsOnAll() {
	b.st.structAll = true
	if b.rec != nil {
		b.rec.all = true
	}
}

// chainMemo is the NetworkPolicy tier of one direction, compiled once per
// flush for every endpoint with the same selecting policies (and, for
// ingress, the same container ports, against which named ports resolve).
type chainMemo struct {
	egress bool
	pols   []*npInfo
	ports  []namedPort
	rules  []ir.Rule
	sets   []*setState // valid while the memo is: sets are dropped only after a flush's compilations
	sels   []*podSel
	all    bool
}

func chainHash(pols []*npInfo, egress bool, ports []namedPort) uint64 {
	h := uint64(14695981039346656037)
	mix := func(v uint64) { h = (h ^ v) * 1099511628211 }
	if egress {
		mix(1)
	} else {
		for _, np := range ports {
			mix(uint64(np.proto)<<16 | uint64(np.port))
		}
	}
	for _, n := range pols {
		mix(n.serial)
	}
	return h
}

func (b *epBuilder) zones(names []string) ir.PeerMatch {
	names = slices.Compact(slices.Sorted(slices.Values(names)))
	pm := b.use("Zones/"+strings.Join(names, ","), setDesc{kind: setZones, names: names})
	pm.Negate = slices.Contains(names, zoneWorld)
	return pm
}

func (e *Engine) compileEndpoint(p *podInfo) *epState {
	e.stats.EndpointsCompiled++
	st := &epState{node: p.node}
	b := &epBuilder{e: e, p: p, st: st}
	st.ep = ir.Endpoint{Name: p.key, IPs: slices.Clone(p.ips), Quarantined: len(p.quar) > 0}
	for _, q := range p.quar {
		if q.cut {
			st.ep.CutConnections = true
		}
	}
	st.ep.Ingress = b.chain(false)
	st.ep.Egress = b.chain(true)
	slices.SortFunc(b.sets, func(x, y *setState) int { return strings.Compare(x.name, y.name) })
	st.sets = slices.Clip(slices.Compact(b.sets))
	for i, s := range b.sels {
		if !slices.Contains(b.sels[:i], s) {
			st.structSels = append(st.structSels, s)
		}
	}
	if len(b.qPeers) > 0 {
		slices.Sort(b.qPeers)
		st.qPeers = slices.Clip(slices.Compact(b.qPeers))
	}
	return st
}

func tier(kind ir.TierKind, rules []ir.Rule) []ir.Tier {
	if len(rules) == 0 {
		return nil
	}
	return []ir.Tier{{Kind: kind, Rules: rules}}
}

func (b *epBuilder) chain(egress bool) ir.Chain {
	var c ir.Chain
	c.Tiers = append(c.Tiers, tier(ir.TierQuarantine, b.quarantineRules(egress))...)
	c.Tiers = append(c.Tiers, tier(ir.TierAdmin, b.adminRules(egress))...)
	np, isolated := b.npRules(egress)
	c.Tiers = append(c.Tiers, tier(ir.TierNetworkPolicy, np)...)
	if !isolated {
		c.Tiers = append(c.Tiers, tier(ir.TierBaseline, b.baselineRules(egress))...)
	}
	return c
}

// qPortSet is the union of the ports that quarantines' allow-lists admit
// for the peer in one direction; dst resolves named ports.
func (e *Engine) qPortSet(qs []*quarInfo, egress bool, peer end, dst *podInfo) portSet {
	var ps portSet
	for _, q := range qs {
		list := q.ingress
		if egress {
			list = q.egress
		}
		for i := range list {
			if !e.qPeerMatches(&list[i], peer) {
				continue
			}
			if r, ok := list[i].ports.resolved(dst); ok {
				if r == nil {
					return portSet{all: true}
				}
				ps = ps.union(portSet{ranges: r})
			}
		}
		if egress && q.dns && e.isDNS(peer.pod) {
			ps = ps.union(portSet{ranges: []ir.PortRange{{Protocol: ir.TCP, From: 53, To: 53}, {Protocol: ir.UDP, From: 53, To: 53}}})
		}
	}
	return ps
}

func (b *epBuilder) quarantineRules(egress bool) []ir.Rule {
	e, p := b.e, b.p
	var rules []ir.Rule
	quarantined := len(p.quar) > 0
	for _, q := range e.c.quarPods {
		if q == p {
			continue
		}
		var ps portSet
		for _, ip := range q.ips {
			// the peer's own list, as seen from this endpoint
			var peerPS portSet
			if egress { // q is the destination
				peerPS = e.qPortSet(q.quar, false, end{p, p.ips[0]}, q)
			} else { // q is the source
				peerPS = e.qPortSet(q.quar, true, end{p, p.ips[0]}, p)
			}
			if quarantined {
				var own portSet
				if egress {
					own = e.qPortSet(p.quar, true, end{q, ip}, q)
				} else {
					own = e.qPortSet(p.quar, false, end{q, ip}, p)
				}
				peerPS = peerPS.intersect(own)
			}
			ps = peerPS
			break
		}
		if !quarantined {
			// The quarantined end denies what its allow-list does not
			// admit (its own chains end in Deny everything); this end
			// only needs the final Accept for what the list admits, so
			// that no lower tier of this endpoint refuses it. A chain
			// thus changes only when a quarantine admits its endpoint.
			if !ps.empty() {
				b.qPeers = append(b.qPeers, q.key)
				rules = append(rules, ir.Rule{ID: q.quar[0].id, Peer: b.use("Pod/"+q.key, setDesc{kind: setPod, podKey: q.key}), Ports: ps.irPorts(), Action: ir.Accept})
			}
			continue
		}
		set := b.use("Pod/"+q.key, setDesc{kind: setPod, podKey: q.key})
		if !ps.empty() {
			rules = append(rules, ir.Rule{ID: q.quar[0].id, Peer: set, Ports: ps.irPorts(), Action: ir.Accept})
		}
		rules = append(rules, ir.Rule{ID: q.quar[0].id, Peer: set, Action: ir.Deny})
	}
	if !quarantined {
		return rules
	}
	for _, q := range p.quar {
		list := q.ingress
		dir := "ingress"
		if egress {
			list = q.egress
			dir = "egress"
		}
		for i := range list {
			qp := &list[i]
			entryIdx := i
			peerOf := func() ir.PeerMatch {
				if qp.zone != "" {
					return b.zones([]string{qp.zone})
				}
				return b.use(qp.id, setDesc{kind: setQEntry, qKey: q.key, egress: egress, idx: entryIdx})
			}
			_ = dir
			if !egress || !qp.ports.hasNamed() {
				ports, ok := qp.ports.resolved(p)
				if !ok {
					continue
				}
				rules = append(rules, ir.Rule{ID: qp.id, Peer: peerOf(), Ports: ports, Action: ir.Accept})
				continue
			}
			// egress with named ports: numeric part for the whole entry,
			// named part per destination pod
			if num := qp.ports.numeric(); len(num) > 0 {
				rules = append(rules, ir.Rule{ID: qp.id, Peer: peerOf(), Ports: num, Action: ir.Accept})
			}
			keys := e.Pods()
			for _, k := range keys {
				d := e.pods[k]
				if d == p || !e.qPeerMatches(qp, end{d, d.ips[0]}) {
					continue
				}
				named := portList{specs: slices.DeleteFunc(slices.Clone(qp.ports.specs), func(s portSpec) bool { return s.name == "" })}
				if r, ok := named.resolved(d); ok {
					rules = append(rules, ir.Rule{ID: qp.id, Peer: b.use("Pod/"+d.key, setDesc{kind: setPod, podKey: d.key}), Ports: r, Action: ir.Accept})
				}
			}
		}
		if egress && q.dns {
			rules = append(rules, ir.Rule{ID: q.id + "/dns", Peer: b.use("Peer/kube-dns", setDesc{kind: setDNS}),
				Ports: []ir.PortRange{{Protocol: ir.TCP, From: 53, To: 53}, {Protocol: ir.UDP, From: 53, To: 53}}, Action: ir.Accept})
		}
	}
	rules = append(rules, ir.Rule{ID: p.quar[0].id, Action: ir.Deny})
	return rules
}

func (b *epBuilder) adminRules(egress bool) []ir.Rule {
	e, p := b.e, b.p
	if len(e.zones) == 0 && len(e.zpList) == 0 && len(e.upAdmin) == 0 {
		return nil
	}
	local := p.zoneName()
	var lz *zoneInfo
	if p.zone != "" {
		lz = e.zones[p.zone]
	}
	var rules []ir.Rule
	for _, ent := range e.adminOrder() {
		if ent.up != nil {
			rules = b.upRulesIR(rules, ent.up, egress)
			continue
		}
		zp := ent.zp
		var peers []string
		if egress {
			if !zp.hasFrom(local) {
				continue
			}
			peers = zp.to
		} else {
			if !zp.hasTo(local) {
				continue
			}
			peers = zp.from
		}
		// keep only names that can match anything
		var valid []string
		for _, n := range peers {
			if n == zoneUnzoned || n == zoneWorld || e.zones[n] != nil {
				valid = append(valid, n)
			}
		}
		if len(valid) == 0 {
			continue
		}
		type group struct {
			names  []string
			action ir.Action
		}
		var groups []group
		switch zp.action {
		case "Accept":
			groups = []group{{valid, ir.Accept}}
		case "Pass":
			groups = []group{{valid, ir.Pass}}
		default:
			if zp.auditOnly {
				groups = []group{{valid, ir.Audit}}
				break
			}
			var deny, audit []string
			for _, n := range valid {
				var pz *zoneInfo
				if n != zoneUnzoned && n != zoneWorld {
					pz = e.zones[n]
				}
				if effectiveAudit(lz, pz) {
					audit = append(audit, n)
				} else {
					deny = append(deny, n)
				}
			}
			if len(deny) > 0 {
				groups = append(groups, group{deny, ir.Deny})
			}
			if len(audit) > 0 {
				groups = append(groups, group{audit, ir.Audit})
			}
		}
		for _, g := range groups {
			gnames := g.names
			peer := func() ir.PeerMatch { return b.zones(gnames) }
			if !egress || !zp.ports.hasNamed() {
				ports, ok := zp.ports.resolved(p)
				if !egress && !ok {
					continue
				}
				if egress {
					ports = zp.ports.numeric()
					if !zp.ports.all && len(ports) == 0 {
						continue
					}
				}
				rules = append(rules, ir.Rule{ID: zp.id, Peer: peer(), Ports: ports, Action: g.action, Log: zp.log})
				continue
			}
			if num := zp.ports.numeric(); len(num) > 0 {
				rules = append(rules, ir.Rule{ID: zp.id, Peer: peer(), Ports: num, Action: g.action, Log: zp.log})
			}
			names := slices.Compact(slices.Sorted(slices.Values(g.names)))
			b.dependsOnAll()
			for _, ng := range e.zpNamedGroups(zp, names) {
				name := fmt.Sprintf("%s/%s/%s/%d", zp.id, strings.Join(names, ","), ng.proto, ng.port)
				pm := b.use(name, setDesc{kind: setZPNamed, zpName: zp.name, names: names, proto: ng.proto, port: ng.port})
				rules = append(rules, ir.Rule{ID: zp.id, Peer: pm, Ports: []ir.PortRange{{Protocol: ng.proto, From: ng.port, To: ng.port}}, Action: g.action, Log: zp.log})
			}
		}
	}
	return append(rules, b.boundaryRules(lz)...)
}

// boundaryAnyID is the rule ID of the zone boundary in the chains of
// unzoned endpoints, whose peers are the members of every zone of a mode.
const boundaryAnyID = "ZoneBoundary"

// IsBoundaryRuleID reports whether id is a zone boundary rule's:
// "ZoneBoundary" (an endpoint outside every zone) or "ZoneBoundary/<zone>".
func IsBoundaryRuleID(id string) bool {
	rest, ok := strings.CutPrefix(id, boundaryAnyID)
	return ok && (rest == "" || rest[0] == '/')
}

// boundaryRules returns the zone boundary of a chain of an endpoint in zone
// lz (nil: unzoned). The rules depend only on lz, its mode, and whether any
// zone exists; the members of the other zones come from the shared sets
// of all Enforce and all Audit/Learn zones, so a zone that appears, goes
// or changes mode patches those sets instead of every chain. The rule ID
// names the endpoint's own zone (Evaluate's Decision.Rule names the
// destination's zone when it is a real zone, see docs/policy-model.md).
func (b *epBuilder) boundaryRules(lz *zoneInfo) []ir.Rule {
	if len(b.e.zoneList) == 0 {
		return nil
	}
	if lz == nil {
		// an unzoned end: the flow's mode is the other end's zone's
		return []ir.Rule{
			{ID: boundaryAnyID, Peer: b.zoneMode(false), Action: ir.Deny},
			{ID: boundaryAnyID, Peer: b.zoneMode(true), Action: ir.Audit},
		}
	}
	id := "ZoneBoundary/" + lz.name
	var rules []ir.Rule
	act := ir.Deny
	if lz.audit() {
		// the strictest mode wins: Enforce zones still deny
		rules = append(rules, ir.Rule{ID: id, Peer: b.zoneMode(false), Action: ir.Deny})
		act = ir.Audit
	}
	pm := b.zones([]string{lz.name})
	pm.Negate = true
	return append(rules, ir.Rule{ID: id, Peer: pm, Action: act})
}

// zoneMode references the members of every zone in Audit or Learn mode
// (audit), or of every zone in Enforce mode.
func (b *epBuilder) zoneMode(audit bool) ir.PeerMatch {
	return b.use(zoneModeSetName(audit), setDesc{kind: setZoneMode, audit: audit})
}

func zoneModeSetName(audit bool) string {
	if audit {
		return "ZoneMode/AuditOrLearn"
	}
	return "ZoneMode/Enforce"
}

// zoneModePrefixes returns the members of every zone in Audit or Learn
// mode (audit), or of every zone in Enforce mode.
func (e *Engine) zoneModePrefixes(audit bool) []netip.Prefix {
	podRanges := e.allPodRanges()
	var rs []ipRange
	for _, z := range e.zoneList {
		if z.audit() == audit {
			rs = append(rs, e.zoneMembers(z.name, podRanges)...)
		}
	}
	return toPrefixes(normalize(rs))
}

func (b *epBuilder) npRules(egress bool) ([]ir.Rule, bool) {
	e, p := b.e, b.p
	if !b.selSet {
		// the policies selecting the pod, either direction, matched once
		for _, n := range e.candidateNPs(p) {
			e.stats.SelectorEvaluations++
			if n.podSel.Matches(p.labels) {
				b.selAll = append(b.selAll, n)
			}
		}
		b.selSet = true
	}
	var pols []*npInfo
	for _, n := range b.selAll {
		if (egress && n.egress) || (!egress && n.ingress) {
			pols = append(pols, n)
		}
	}
	if len(pols) == 0 {
		return nil, false
	}
	memo := e.c.chainMemo
	var h uint64
	if memo != nil {
		h = chainHash(pols, egress, p.ports)
		for _, cm := range memo[h] {
			if cm.egress != egress || !slices.Equal(cm.pols, pols) || (!egress && !slices.Equal(cm.ports, p.ports)) {
				continue
			}
			b.sets = append(b.sets, cm.sets...)
			for _, s := range cm.sels {
				b.dependsOn(s)
			}
			if cm.all {
				b.dependsOnAll()
			}
			return cm.rules, true
		}
		b.rec = &chainMemo{egress: egress, pols: pols, ports: p.ports}
		defer func() { b.rec = nil }()
	}
	var rules []ir.Rule
	for _, n := range pols {
		list := n.in
		if egress {
			list = n.eg
		}
		for i := range list {
			rules = b.ruleIR(rules, &list[i], egress, ir.Accept)
		}
	}
	rules = append(rules, ir.Rule{ID: pols[0].isoID, Action: ir.Deny})
	rules = slices.Clip(rules) // shared between endpoints: appending must copy
	if b.rec != nil {
		b.rec.rules = rules
		memo[h] = append(memo[h], b.rec)
	}
	return rules, true
}

// ruleIR appends the IR rules of one NetworkPolicy-shaped rule with the
// given action: named ports resolve against the endpoint itself for
// ingress, and per destination pod for egress.
func (b *epBuilder) ruleIR(rules []ir.Rule, r *npRule, egress bool, action ir.Action) []ir.Rule {
	e, p := b.e, b.p
	if r.split != nil {
		// one rule per peer: the same action and ports for each, so
		// first-match order among them does not matter
		for _, one := range r.split {
			rules = b.ruleIR(rules, one, egress, action)
		}
		return rules
	}
	{
		{
			peerOf := func() ir.PeerMatch {
				if r.allPeers {
					return ir.PeerMatch{}
				}
				return b.useCached(&r.set, r.setName, setDesc{kind: setNPRule, rule: r})
			}
			if !r.allPeers && len(r.peers) == 0 {
				return rules
			}
			if !egress || !r.ports.hasNamed() {
				ports, ok := r.ports.resolved(p)
				if egress {
					ports, ok = r.ports.numeric(), true
					if r.ports.all {
						ports = nil
					}
				}
				if !ok {
					return rules
				}
				return append(rules, ir.Rule{ID: r.id, Peer: peerOf(), Ports: ports, Action: action})
			}
			if num := r.ports.numeric(); len(num) > 0 {
				rules = append(rules, ir.Rule{ID: r.id, Peer: peerOf(), Ports: num, Action: action})
			}
			// named ports resolve per destination pod
			onlySels := !r.allPeers
			for _, pe := range r.peers {
				if pe.sel == nil {
					onlySels = false
				} else {
					b.dependsOn(pe.sel)
				}
			}
			if !onlySels {
				b.dependsOnAll()
			}
			for _, g := range e.npNamedGroups(r) {
				name := fmt.Sprintf("%s/%s/%s/%d", r.setName, r.namedKey, g.proto, g.port)
				pm := b.use(name, setDesc{kind: setNPNamed, rule: r, proto: g.proto, port: g.port})
				rules = append(rules, ir.Rule{ID: r.id, Peer: pm, Ports: []ir.PortRange{{Protocol: g.proto, From: g.port, To: g.port}}, Action: action})
			}
		}
	}
	return rules
}

// upRulesIR appends the IR rules of an upstream policy's rules for one
// direction, when the policy's subject selects the endpoint.
func (b *epBuilder) upRulesIR(rules []ir.Rule, u *upInfo, egress bool) []ir.Rule {
	if !b.e.selMatches(u.subject, b.p) {
		return rules
	}
	list := u.in
	if egress {
		list = u.eg
	}
	for i := range list {
		r := &list[i]
		rules = b.ruleIR(rules, &r.np, egress, r.action)
		if !egress || len(r.nodes) == 0 {
			continue
		}
		ports := r.np.ports.numeric()
		if r.np.ports.all {
			ports = nil
		} else if len(ports) == 0 {
			continue // named ports never match a node address
		}
		for _, ns := range r.nodes {
			pm := b.use(ns.key, setDesc{kind: setNodes, nodeSel: ns})
			rules = append(rules, ir.Rule{ID: r.np.id, Peer: pm, Ports: ports, Action: r.action})
		}
	}
	return rules
}

func (b *epBuilder) baselineRules(egress bool) []ir.Rule {
	p := b.p
	var rules []ir.Rule
	for _, u := range b.e.upBaseline {
		rules = b.upRulesIR(rules, u, egress)
	}
	if p.zone == "" {
		return rules
	}
	z := b.e.zones[p.zone]
	if z == nil || !z.intraDeny {
		return rules
	}
	act := ir.Deny
	if z.audit() {
		act = ir.Audit
	}
	return append(rules, ir.Rule{ID: "ZoneBaseline/" + z.name, Peer: b.zones([]string{z.name}), Action: act})
}

func zoneSetName(zone string) string { return "Zones/" + zone }

// addrsIn returns the pod addresses inside a range, from a sorted index
// built once per flush.
func (e *Engine) addrsIn(rg ipRange) []netip.Addr {
	c := &e.c
	if c.sortedAddrs == nil {
		c.sortedAddrs = make([]netip.Addr, 0, len(e.podByIP))
		for a := range e.podByIP {
			c.sortedAddrs = append(c.sortedAddrs, a)
		}
		slices.SortFunc(c.sortedAddrs, func(a, b netip.Addr) int { return a.Compare(b) })
	}
	lo := uAddr(rg.from, rg.v4)
	hi := uAddr(rg.to, rg.v4)
	i := sort.Search(len(c.sortedAddrs), func(i int) bool { return c.sortedAddrs[i].Compare(lo) >= 0 })
	j := sort.Search(len(c.sortedAddrs), func(i int) bool { return c.sortedAddrs[i].Compare(hi) > 0 })
	return c.sortedAddrs[i:j]
}

package policy

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

const (
	zoneUnzoned = v1alpha1.PeerUnzoned
	zoneWorld   = v1alpha1.PeerWorld
)

type nsInfo struct {
	name   string
	labels labels.Set
}

type namedPort struct {
	name  string
	proto ir.Protocol
	port  uint16
}

type podInfo struct {
	key, ns, name, node string
	idx                 int32
	labels              labels.Set
	kv                  []string // "key=value" of every label, for the label indexes
	ips                 []netip.Addr
	ports               []namedPort
	zone                string // "" when unzoned
	quar                []*quarInfo
}

// resolve returns the number of a named container port for a protocol.
func (p *podInfo) resolve(name string, proto ir.Protocol) (uint16, bool) {
	for _, np := range p.ports {
		if np.name == name && np.proto == proto {
			return np.port, true
		}
	}
	return 0, false
}

func (p *podInfo) zoneName() string {
	if p.zone == "" {
		return zoneUnzoned
	}
	return p.zone
}

// portSpec is one entry of a ports list. A nil []portSpec with all=true
// means every protocol and port.
type portSpec struct {
	proto   ir.Protocol
	anyPort bool // protocol only
	port    uint16
	end     uint16 // inclusive; == port for a single port
	name    string // named port, resolved against the destination pod
}

type portList struct {
	all   bool
	specs []portSpec
}

// matches reports whether the list admits proto/port to dst (nil for a
// non-pod destination, against which named ports match nothing).
func (pl *portList) matches(proto ir.Protocol, port uint16, dst *podInfo) bool {
	if pl.all {
		return true
	}
	for i := range pl.specs {
		s := &pl.specs[i]
		if s.proto != proto {
			continue
		}
		switch {
		case s.anyPort:
			return true
		case s.name != "":
			if dst != nil {
				if n, ok := dst.resolve(s.name, proto); ok && n == port {
					return true
				}
			}
		case port >= s.port && port <= s.end:
			return true
		}
	}
	return false
}

// resolved returns the IR port ranges of the list for destination dst;
// ok is false when the list matches nothing for dst.
func (pl *portList) resolved(dst *podInfo) (ranges []ir.PortRange, ok bool) {
	if pl.all {
		return nil, true
	}
	for _, s := range pl.specs {
		switch {
		case s.anyPort:
			ranges = append(ranges, ir.PortRange{Protocol: s.proto})
		case s.name != "":
			if dst == nil {
				continue
			}
			if n, found := dst.resolve(s.name, s.proto); found {
				ranges = append(ranges, ir.PortRange{Protocol: s.proto, From: n, To: n})
			}
		default:
			ranges = append(ranges, ir.PortRange{Protocol: s.proto, From: s.port, To: s.end})
		}
	}
	if len(ranges) == 0 {
		return nil, false
	}
	return canonPorts(ranges), true
}

// numeric returns the ranges of the non-named entries.
func (pl *portList) numeric() []ir.PortRange {
	var out []ir.PortRange
	for _, s := range pl.specs {
		switch {
		case s.anyPort:
			out = append(out, ir.PortRange{Protocol: s.proto})
		case s.name == "":
			out = append(out, ir.PortRange{Protocol: s.proto, From: s.port, To: s.end})
		}
	}
	return canonPorts(out)
}

func (pl *portList) hasNamed() bool {
	for _, s := range pl.specs {
		if s.name != "" {
			return true
		}
	}
	return false
}

// canonPorts sorts and merges port ranges; an all-ports range of a
// protocol absorbs the others.
func canonPorts(rs []ir.PortRange) []ir.PortRange {
	if len(rs) == 0 {
		return nil
	}
	type iv struct{ lo, hi uint32 }
	byProto := map[ir.Protocol][]iv{}
	for _, r := range rs {
		lo, hi := uint32(r.From), uint32(r.To)
		if r.AllPorts() {
			lo, hi = 0, 65535
		}
		byProto[r.Protocol] = append(byProto[r.Protocol], iv{lo, hi})
	}
	protos := make([]ir.Protocol, 0, len(byProto))
	for p := range byProto {
		protos = append(protos, p)
	}
	slices.Sort(protos)
	var out []ir.PortRange
	for _, p := range protos {
		ivs := byProto[p]
		sort.Slice(ivs, func(i, j int) bool { return ivs[i].lo < ivs[j].lo })
		cur := ivs[0]
		flush := func(c iv) {
			if c.lo == 0 && c.hi == 65535 {
				out = append(out, ir.PortRange{Protocol: p})
			} else {
				lo := c.lo
				if lo == 0 {
					lo = 1
				}
				out = append(out, ir.PortRange{Protocol: p, From: uint16(lo), To: uint16(c.hi)})
			}
		}
		for _, v := range ivs[1:] {
			if v.lo <= cur.hi+1 {
				if v.hi > cur.hi {
					cur.hi = v.hi
				}
				continue
			}
			flush(cur)
			cur = v
		}
		flush(cur)
	}
	return out
}

// portSet is a resolved set of protocol/port ranges: all, or a list.
type portSet struct {
	all    bool
	ranges []ir.PortRange
}

func (s portSet) empty() bool { return !s.all && len(s.ranges) == 0 }

func (s portSet) union(o portSet) portSet {
	if s.all || o.all {
		return portSet{all: true}
	}
	return portSet{ranges: canonPorts(append(slices.Clone(s.ranges), o.ranges...))}
}

func (s portSet) intersect(o portSet) portSet {
	if s.all {
		return o
	}
	if o.all {
		return s
	}
	var out []ir.PortRange
	for _, a := range s.ranges {
		for _, b := range o.ranges {
			if a.Protocol != b.Protocol {
				continue
			}
			alo, ahi := a.From, a.To
			if a.AllPorts() {
				alo, ahi = 0, 65535
			}
			blo, bhi := b.From, b.To
			if b.AllPorts() {
				blo, bhi = 0, 65535
			}
			lo, hi := max(alo, blo), min(ahi, bhi)
			if lo > hi {
				continue
			}
			if lo == 0 && hi == 65535 {
				out = append(out, ir.PortRange{Protocol: a.Protocol})
			} else {
				out = append(out, ir.PortRange{Protocol: a.Protocol, From: max(lo, 1), To: hi})
			}
		}
	}
	return portSet{ranges: canonPorts(out)}
}

func (s portSet) irPorts() []ir.PortRange {
	if s.all {
		return nil
	}
	return s.ranges
}

// podSel selects pods: in a fixed namespace, or in namespaces matching a
// selector; and by pod labels.
type podSel struct {
	key     string
	fixedNS string // used when nsSel is nil
	nsSel   labels.Selector
	podSel  labels.Selector
	// podStr and nsStr, when set, are the selectors' String(), known
	// from the conversion cache
	podStr, nsStr *string
	// anchors of podSel, computed once (see anchors)
	anchors    []string
	anchorsSet bool
}

func (e *Engine) selMatches(s *podSel, p *podInfo) bool {
	e.stats.SelectorEvaluations++
	if s.nsSel == nil {
		if p.ns != s.fixedNS {
			return false
		}
	} else {
		ns := e.namespaces[p.ns]
		var l labels.Set
		if ns != nil {
			l = ns.labels
		} else {
			l = labels.Set{corev1.LabelMetadataName: p.ns}
		}
		if !s.nsSel.Matches(l) {
			return false
		}
	}
	return s.podSel.Matches(p.labels)
}

type ipBlock struct {
	ranges []ipRange // cidr minus except, normalized
}

func (b *ipBlock) contains(a netip.Addr) bool {
	r := prefixRange(hostPrefix(a))
	for _, x := range b.ranges {
		if x.v4 == r.v4 && !r.from.less(x.from) && !x.to.less(r.from) {
			return true
		}
	}
	return false
}

type npPeer struct {
	sel   *podSel
	block *ipBlock
}

type npRule struct {
	id       string
	allPeers bool
	peers    []npPeer
	ports    portList
	// peerKey is a canonical description of the peers; rules with equal
	// keys share one address set, named setName.
	peerKey  string
	setName  string
	namedKey string // sorted protocol/name pairs of the named ports
	// split holds, for a rule with several distinct peers, one rule per
	// peer (same ID and ports). The IR carries those instead, so that
	// each peer's address set is shared with every rule naming that
	// peer instead of a union set per combination of peers.
	split []*npRule
	set   *setState // the set named setName, once used (see useCached)
}

func (r *npRule) selOnly() bool {
	for _, p := range r.peers {
		if p.sel == nil {
			return false
		}
	}
	return true
}

func (r *npRule) finish() {
	keys := make([]string, 0, len(r.peers))
	for _, p := range r.peers {
		if p.sel != nil {
			keys = append(keys, p.sel.key)
		} else {
			var ps []string
			for _, x := range toPrefixes(p.block.ranges) {
				ps = append(ps, x.String())
			}
			keys = append(keys, "cidr="+strings.Join(ps, ","))
		}
	}
	r.split = nil
	if len(r.peers) > 1 {
		seen := map[string]bool{}
		for i := range r.peers {
			if seen[keys[i]] {
				continue
			}
			seen[keys[i]] = true
			one := &npRule{id: r.id, peers: r.peers[i : i+1 : i+1], ports: r.ports}
			one.finish()
			r.split = append(r.split, one)
		}
		if len(r.split) == 1 {
			r.split = nil
		}
	}
	sort.Strings(keys)
	keys = slices.Compact(keys)
	r.peerKey = strings.Join(keys, ";")
	if len(r.peerKey) <= 80 {
		r.setName = "Peers/" + r.peerKey
	} else {
		h := fnv.New64a()
		h.Write([]byte(r.peerKey))
		r.setName = fmt.Sprintf("Peers/#%016x", h.Sum64())
	}
	var names []string
	for _, s := range r.ports.specs {
		if s.name != "" {
			names = append(names, s.proto.String()+":"+s.name)
		}
	}
	sort.Strings(names)
	r.namedKey = strings.Join(slices.Compact(names), ",")
}

type npInfo struct {
	key, ns, name string
	podSel        labels.Selector
	podSelKey     string
	anchors       []string // of podSel, see anchors
	serial        uint64   // unique per conversion, for memo keys
	ingress       bool     // policy type Ingress
	egress        bool     // policy type Egress
	in, eg        []npRule
	isoID         string
	selected      map[string]bool // endpoint keys selected at last compile
}

type zoneInfo struct {
	name      string
	created   time.Time
	mode      v1alpha1.ZoneMode
	intraDeny bool
	pods      bool
	nsSel     labels.Selector
	podSel    labels.Selector
	nets      []ipRange // own networks minus excepts
	effNets   []ipRange // after removing older zones' networks
	conflicts []string  // older zones that took members
	members   int
}

func (z *zoneInfo) audit() bool {
	return z.mode == v1alpha1.ZoneModeAudit || z.mode == v1alpha1.ZoneModeLearn
}

type zpInfo struct {
	name      string
	prio      int32
	from, to  []string
	ports     portList
	action    v1alpha1.ZonePolicyAction
	auditOnly bool
	log       bool
	id        string
}

func (z *zpInfo) hasFrom(n string) bool { return slices.Contains(z.from, n) }
func (z *zpInfo) hasTo(n string) bool   { return slices.Contains(z.to, n) }

// splitsByMode reports whether the policy's rules depend on the modes of
// the zones it names: a Deny that is not auditOnly becomes a Deny rule for
// the peer zones whose flows are enforced and an Audit rule for the rest.
func (z *zpInfo) splitsByMode() bool {
	return z.action != v1alpha1.ActionAccept && z.action != v1alpha1.ActionPass && !z.auditOnly
}

type qPeer struct {
	id    string
	zone  string
	cidr  *ipBlock
	pods  *podSel
	ports portList
}

type quarInfo struct {
	key, ns, name string
	id            string
	podName       string
	podSel        labels.Selector
	ingress       []qPeer
	egress        []qPeer
	dns           bool
	active        bool
	cut           bool
}

func (q *quarInfo) selects(p *podInfo) bool {
	if !q.active || p.ns != q.ns {
		return false
	}
	if q.podName != "" {
		return p.name == q.podName
	}
	return q.podSel != nil && q.podSel.Matches(p.labels)
}

// ---- conversion and validation ----

func selector(ls *metav1.LabelSelector, o objCtx, field string) (labels.Selector, *FieldError) {
	if ls == nil {
		return labels.Everything(), nil
	}
	s, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return nil, o.errf(field, "invalid selector: %v", err)
	}
	return s, nil
}

// cachedSelector is selector with a cache of converted selectors keyed by
// their content: many policies repeat the same selectors, and converting
// validates every key and value.
func (e *Engine) cachedSelector(ls *metav1.LabelSelector, o objCtx, field string) (labels.Selector, *FieldError) {
	si, ferr := e.cachedSel(ls, o, field)
	if ferr != nil {
		return nil, ferr
	}
	return si.sel, nil
}

// selInfo is a converted selector with its string form and anchors,
// computed once per distinct selector.
type selInfo struct {
	sel     labels.Selector
	str     string
	anchors []string
}

var everythingSel = &selInfo{sel: labels.Everything(), str: ""}

func (e *Engine) cachedSel(ls *metav1.LabelSelector, o objCtx, field string) (*selInfo, *FieldError) {
	if ls == nil {
		return everythingSel, nil
	}
	// length-prefixed fields: no two selectors, valid or not, share a key
	var b strings.Builder
	put := func(x string) {
		b.WriteString(strconv.Itoa(len(x)))
		b.WriteByte(':')
		b.WriteString(x)
	}
	keys := make([]string, 0, len(ls.MatchLabels))
	for k := range ls.MatchLabels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		put(k)
		put(ls.MatchLabels[k])
	}
	b.WriteByte('|')
	for _, r := range ls.MatchExpressions {
		put(r.Key)
		put(string(r.Operator))
		b.WriteString(strconv.Itoa(len(r.Values)))
		b.WriteByte('#')
		for _, v := range r.Values {
			put(v)
		}
	}
	key := b.String()
	if s, ok := e.selCache[key]; ok {
		return s, nil
	}
	sel, ferr := selector(ls, o, field)
	if ferr != nil {
		return nil, ferr
	}
	if len(e.selCache) >= 1<<16 {
		clear(e.selCache)
	}
	s := &selInfo{sel: sel, str: sel.String(), anchors: anchors(sel)}
	e.selCache[key] = s
	return s, nil
}

func parsePrefix(s string, o objCtx, field string) (netip.Prefix, *FieldError) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, o.errf(field, "invalid CIDR %q", s)
	}
	return p.Masked(), nil
}

func parseBlock(cidr string, except []string, o objCtx, field string) (*ipBlock, *FieldError) {
	p, ferr := parsePrefix(cidr, o, field+".cidr")
	if ferr != nil {
		return nil, ferr
	}
	var ex []netip.Prefix
	for i, e := range except {
		q, ferr := parsePrefix(e, o, fmt.Sprintf("%s.except[%d]", field, i))
		if ferr != nil {
			return nil, ferr
		}
		if q.Addr().Is4() != p.Addr().Is4() || q.Bits() < p.Bits() || !p.Contains(q.Addr()) {
			return nil, o.errf(fmt.Sprintf("%s.except[%d]", field, i), "%q is not inside cidr %q", e, cidr)
		}
		ex = append(ex, q)
	}
	in := rangesOf([]netip.Prefix{p})
	if len(ex) > 0 {
		in = subtract(in, rangesOf(ex))
	}
	return &ipBlock{ranges: in}, nil
}

func parseProtocol(p *corev1.Protocol, o objCtx, field string) (ir.Protocol, *FieldError) {
	if p == nil {
		return ir.TCP, nil
	}
	return protoFromString(string(*p), o, field)
}

func protoFromString(s string, o objCtx, field string) (ir.Protocol, *FieldError) {
	switch strings.ToUpper(s) {
	case "", "TCP":
		return ir.TCP, nil
	case "UDP":
		return ir.UDP, nil
	case "SCTP":
		return ir.SCTP, nil
	}
	return 0, o.errf(field, "unsupported protocol %q (want TCP, UDP or SCTP)", s)
}

func parsePort(proto ir.Protocol, port *intstr.IntOrString, endPort *int32, o objCtx, field string) (portSpec, *FieldError) {
	ps := portSpec{proto: proto}
	if port == nil {
		if endPort != nil {
			return ps, o.errf(field+".endPort", "endPort requires port")
		}
		ps.anyPort = true
		return ps, nil
	}
	if port.Type == intstr.String {
		if port.StrVal == "" {
			return ps, o.errf(field+".port", "empty port name")
		}
		if endPort != nil {
			return ps, o.errf(field+".endPort", "endPort requires a numeric port, got %q", port.StrVal)
		}
		ps.name = port.StrVal
		return ps, nil
	}
	if port.IntVal < 1 || port.IntVal > 65535 {
		return ps, o.errf(field+".port", "port %d out of range 1-65535", port.IntVal)
	}
	ps.port = uint16(port.IntVal)
	ps.end = ps.port
	if endPort != nil {
		if *endPort < port.IntVal || *endPort > 65535 {
			return ps, o.errf(field+".endPort", "endPort %d must be between port %d and 65535", *endPort, port.IntVal)
		}
		ps.end = uint16(*endPort)
	}
	return ps, nil
}

func npPorts(ports []networkingv1.NetworkPolicyPort, o objCtx, field string) (portList, *FieldError) {
	if len(ports) == 0 {
		return portList{all: true}, nil
	}
	var pl portList
	for i, p := range ports {
		f := field + ".ports[" + strconv.Itoa(i) + "]"
		proto, ferr := parseProtocol(p.Protocol, o, f+".protocol")
		if ferr != nil {
			return pl, ferr
		}
		ps, ferr := parsePort(proto, p.Port, p.EndPort, o, f)
		if ferr != nil {
			return pl, ferr
		}
		pl.specs = append(pl.specs, ps)
	}
	return pl, nil
}

func crdPorts(ports []v1alpha1.PolicyPort, o objCtx, field string) (portList, *FieldError) {
	if len(ports) == 0 {
		return portList{all: true}, nil
	}
	var pl portList
	for i, p := range ports {
		f := fmt.Sprintf("%s.ports[%d]", field, i)
		proto, ferr := protoFromString(string(p.Protocol), o, f+".protocol")
		if ferr != nil {
			return pl, ferr
		}
		ps, ferr := parsePort(proto, p.Port, p.EndPort, o, f)
		if ferr != nil {
			return pl, ferr
		}
		pl.specs = append(pl.specs, ps)
	}
	return pl, nil
}

func (e *Engine) internSel(s *podSel) *podSel {
	// "<namespace>:<pod selector>" or "{<namespace selector>}:<pod
	// selector>", "*" for an empty selector
	star := func(x string) string {
		if x == "" {
			return "*"
		}
		return x
	}
	str := func(sel labels.Selector, known *string) string {
		if known != nil {
			return star(*known)
		}
		return star(sel.String())
	}
	if s.nsSel == nil {
		s.key = s.fixedNS + ":" + str(s.podSel, s.podStr)
	} else {
		s.key = "{" + str(s.nsSel, s.nsStr) + "}:" + str(s.podSel, s.podStr)
	}
	if x, ok := e.selIntern[s.key]; ok {
		return x
	}
	e.selIntern[s.key] = s
	return s
}

func (e *Engine) convertNP(np *networkingv1.NetworkPolicy) (*npInfo, *FieldError) {
	o := objCtx{"NetworkPolicy", np.Namespace, np.Name}
	if np.Name == "" {
		return nil, o.errf("metadata.name", "missing name")
	}
	ns := np.Namespace
	if ns == "" {
		ns = "default"
		o.ns = ns
	}
	si, ferr := e.cachedSel(&np.Spec.PodSelector, o, "spec.podSelector")
	if ferr != nil {
		return nil, ferr
	}
	e.npSerial++
	n := &npInfo{key: ns + "/" + np.Name, ns: ns, name: np.Name, podSel: si.sel, podSelKey: si.str, anchors: si.anchors, serial: e.npSerial}
	n.isoID = "NetworkPolicy/" + n.key + "/isolation"
	if len(np.Spec.PolicyTypes) == 0 {
		n.ingress = true
		n.egress = len(np.Spec.Egress) > 0
	}
	for i, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			n.ingress = true
		case networkingv1.PolicyTypeEgress:
			n.egress = true
		default:
			return nil, o.errf(fmt.Sprintf("spec.policyTypes[%d]", i), "unknown policy type %q (want Ingress or Egress)", t)
		}
	}
	conv := func(dir string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, i int, peerField string) (npRule, *FieldError) {
		f := "spec." + dir + "[" + strconv.Itoa(i) + "]"
		r := npRule{id: "NetworkPolicy/" + n.key + "/" + dir + "/" + strconv.Itoa(i)}
		var ferr *FieldError
		r.ports, ferr = npPorts(ports, o, f)
		if ferr != nil {
			return r, ferr
		}
		if len(peers) == 0 {
			r.allPeers = true
			return r, nil
		}
		for j, p := range peers {
			pf := f + "." + peerField + "[" + strconv.Itoa(j) + "]"
			if p.IPBlock != nil {
				if p.PodSelector != nil || p.NamespaceSelector != nil {
					return r, o.errf(pf, "ipBlock cannot be combined with podSelector or namespaceSelector")
				}
				b, ferr := parseBlock(p.IPBlock.CIDR, p.IPBlock.Except, o, pf+".ipBlock")
				if ferr != nil {
					return r, ferr
				}
				r.peers = append(r.peers, npPeer{block: b})
				continue
			}
			if p.PodSelector == nil && p.NamespaceSelector == nil {
				return r, o.errf(pf, "peer needs podSelector, namespaceSelector or ipBlock")
			}
			ps := &podSel{fixedNS: ns}
			psi, ferr := e.cachedSel(p.PodSelector, o, pf+".podSelector")
			if ferr != nil {
				return r, ferr
			}
			ps.podSel, ps.podStr = psi.sel, &psi.str
			ps.anchors, ps.anchorsSet = psi.anchors, true
			if p.NamespaceSelector != nil {
				nsi, ferr := e.cachedSel(p.NamespaceSelector, o, pf+".namespaceSelector")
				if ferr != nil {
					return r, ferr
				}
				ps.nsSel, ps.nsStr = nsi.sel, &nsi.str
				ps.fixedNS = ""
			}
			r.peers = append(r.peers, npPeer{sel: ps})
		}
		return r, nil
	}
	for i, r := range np.Spec.Ingress {
		x, ferr := conv("ingress", r.From, r.Ports, i, "from")
		if ferr != nil {
			return nil, ferr
		}
		n.in = append(n.in, x)
	}
	for i, r := range np.Spec.Egress {
		x, ferr := conv("egress", r.To, r.Ports, i, "to")
		if ferr != nil {
			return nil, ferr
		}
		n.eg = append(n.eg, x)
	}
	// intern selectors only once the whole object is valid
	for _, rs := range [][]npRule{n.in, n.eg} {
		for i := range rs {
			for j := range rs[i].peers {
				if rs[i].peers[j].sel != nil {
					rs[i].peers[j].sel = e.internSel(rs[i].peers[j].sel)
				}
			}
			rs[i].finish()
		}
	}
	return n, nil
}

func (e *Engine) convertZone(z *v1alpha1.Zone) (*zoneInfo, *FieldError) {
	o := objCtx{"Zone", "", z.Name}
	if z.Name == "" {
		return nil, o.errf("metadata.name", "missing name")
	}
	if z.Name == zoneUnzoned || z.Name == zoneWorld {
		return nil, o.errf("metadata.name", "%q is a reserved peer name", z.Name)
	}
	zi := &zoneInfo{name: z.Name, created: z.CreationTimestamp.Time, mode: z.Spec.Mode}
	switch z.Spec.Mode {
	case "":
		zi.mode = v1alpha1.ZoneModeEnforce
	case v1alpha1.ZoneModeEnforce, v1alpha1.ZoneModeAudit, v1alpha1.ZoneModeLearn:
	default:
		return nil, o.errf("spec.mode", "unknown mode %q (want Enforce, Audit or Learn)", z.Spec.Mode)
	}
	switch z.Spec.IntraZone {
	case "", v1alpha1.IntraZoneAllow:
	case v1alpha1.IntraZoneDeny:
		zi.intraDeny = true
	default:
		return nil, o.errf("spec.intraZone", "unknown posture %q (want Allow or Deny)", z.Spec.IntraZone)
	}
	if (z.Spec.Pods != nil) == (len(z.Spec.Networks) > 0) {
		return nil, o.errf("spec", "exactly one of pods or networks must be set")
	}
	if z.Spec.Pods != nil {
		zi.pods = true
		var ferr *FieldError
		if zi.nsSel, ferr = selector(z.Spec.Pods.NamespaceSelector, o, "spec.pods.namespaceSelector"); ferr != nil {
			return nil, ferr
		}
		if zi.podSel, ferr = selector(z.Spec.Pods.PodSelector, o, "spec.pods.podSelector"); ferr != nil {
			return nil, ferr
		}
	}
	var all []ipRange
	for i, n := range z.Spec.Networks {
		b, ferr := parseBlock(n.CIDR, n.Except, o, fmt.Sprintf("spec.networks[%d]", i))
		if ferr != nil {
			return nil, ferr
		}
		all = append(all, b.ranges...)
	}
	zi.nets = normalize(all)
	return zi, nil
}

func (e *Engine) convertZonePolicy(p *v1alpha1.ZonePolicy) (*zpInfo, *FieldError) {
	o := objCtx{"ZonePolicy", "", p.Name}
	if p.Name == "" {
		return nil, o.errf("metadata.name", "missing name")
	}
	z := &zpInfo{name: p.Name, prio: p.Spec.Priority, action: p.Spec.Action, auditOnly: p.Spec.AuditOnly, log: p.Spec.Log, id: "ZonePolicy/" + p.Name}
	switch p.Spec.Action {
	case v1alpha1.ActionAccept, v1alpha1.ActionDeny, v1alpha1.ActionPass:
	default:
		return nil, o.errf("spec.action", "unknown action %q (want Accept, Deny or Pass)", p.Spec.Action)
	}
	if p.Spec.AuditOnly && p.Spec.Action != v1alpha1.ActionDeny {
		return nil, o.errf("spec.auditOnly", "auditOnly is only meaningful with action Deny")
	}
	if len(p.Spec.From) == 0 {
		return nil, o.errf("spec.from", "at least one zone is required")
	}
	if len(p.Spec.To) == 0 {
		return nil, o.errf("spec.to", "at least one zone is required")
	}
	for i, f := range p.Spec.From {
		if f == "" {
			return nil, o.errf(fmt.Sprintf("spec.from[%d]", i), "empty zone name")
		}
	}
	for i, f := range p.Spec.To {
		if f == "" {
			return nil, o.errf(fmt.Sprintf("spec.to[%d]", i), "empty zone name")
		}
	}
	z.from = slices.Compact(slices.Sorted(slices.Values(p.Spec.From)))
	z.to = slices.Compact(slices.Sorted(slices.Values(p.Spec.To)))
	var ferr *FieldError
	if z.ports, ferr = crdPorts(p.Spec.Ports, o, "spec"); ferr != nil {
		return nil, ferr
	}
	return z, nil
}

func (e *Engine) convertQuarantine(q *v1alpha1.Quarantine) (*quarInfo, *FieldError) {
	ns := q.Namespace
	if ns == "" {
		ns = "default"
	}
	o := objCtx{"Quarantine", ns, q.Name}
	if q.Name == "" {
		return nil, o.errf("metadata.name", "missing name")
	}
	qi := &quarInfo{key: ns + "/" + q.Name, ns: ns, name: q.Name, podName: q.Spec.PodName, dns: q.Spec.AllowDNS}
	qi.id = "Quarantine/" + qi.key
	qi.active = !q.Spec.Released && q.Status.Phase != v1alpha1.QuarantineExpired && q.Status.Phase != v1alpha1.QuarantineReleased
	qi.cut = q.Spec.CutConnections == nil || *q.Spec.CutConnections
	if (q.Spec.PodName != "") == (q.Spec.PodSelector != nil) {
		return nil, o.errf("spec", "exactly one of podName or podSelector must be set")
	}
	if q.Spec.PodSelector != nil {
		var ferr *FieldError
		if qi.podSel, ferr = selector(q.Spec.PodSelector, o, "spec.podSelector"); ferr != nil {
			return nil, ferr
		}
	}
	conv := func(dir string, peers []v1alpha1.ForensicsPeer) ([]qPeer, *FieldError) {
		var out []qPeer
		for i, p := range peers {
			f := fmt.Sprintf("spec.allow.%s[%d]", dir, i)
			qp := qPeer{id: fmt.Sprintf("%s/%s/%d", qi.id, dir, i), zone: p.Zone}
			n := 0
			if p.Zone != "" {
				n++
			}
			if p.CIDR != "" {
				n++
				b, ferr := parseBlock(p.CIDR, nil, o, f)
				if ferr != nil {
					return nil, ferr
				}
				qp.cidr = b
			}
			if p.Pods != nil {
				n++
				ps := &podSel{fixedNS: ns}
				var ferr *FieldError
				if ps.podSel, ferr = selector(p.Pods.PodSelector, o, f+".pods.podSelector"); ferr != nil {
					return nil, ferr
				}
				if p.Pods.NamespaceSelector != nil {
					if ps.nsSel, ferr = selector(p.Pods.NamespaceSelector, o, f+".pods.namespaceSelector"); ferr != nil {
						return nil, ferr
					}
					ps.fixedNS = ""
				}
				qp.pods = ps
			}
			if n != 1 {
				return nil, o.errf(f, "exactly one of zone, cidr or pods must be set")
			}
			var ferr *FieldError
			if qp.ports, ferr = crdPorts(p.Ports, o, f); ferr != nil {
				return nil, ferr
			}
			out = append(out, qp)
		}
		return out, nil
	}
	var ferr *FieldError
	if qi.ingress, ferr = conv("ingress", q.Spec.Allow.Ingress); ferr != nil {
		return nil, ferr
	}
	if qi.egress, ferr = conv("egress", q.Spec.Allow.Egress); ferr != nil {
		return nil, ferr
	}
	for _, l := range [][]qPeer{qi.ingress, qi.egress} {
		for i := range l {
			if l[i].pods != nil {
				l[i].pods = e.internSel(l[i].pods)
			}
		}
	}
	return qi, nil
}

// PodIPs returns the addresses of a pod from status.podIPs (or
// status.podIP), sorted; an error names the bad field.
func PodIPs(p *corev1.Pod) ([]netip.Addr, error) {
	o := objCtx{"Pod", p.Namespace, p.Name}
	var raw []string
	var fields []string
	for i, ip := range p.Status.PodIPs {
		raw = append(raw, ip.IP)
		fields = append(fields, fmt.Sprintf("status.podIPs[%d].ip", i))
	}
	if len(raw) == 0 && p.Status.PodIP != "" {
		raw = append(raw, p.Status.PodIP)
		fields = append(fields, "status.podIP")
	}
	var out []netip.Addr
	for i, s := range raw {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, o.errf(fields[i], "invalid IP %q", s)
		}
		out = append(out, a.Unmap())
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out), nil
}

func convertPod(p *corev1.Pod) *podInfo {
	if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return nil
	}
	ips, err := PodIPs(p)
	if err != nil || len(ips) == 0 {
		return nil
	}
	ns := p.Namespace
	if ns == "" {
		ns = "default"
	}
	pi := &podInfo{key: ns + "/" + p.Name, ns: ns, name: p.Name, node: p.Spec.NodeName, ips: ips, labels: labels.Set(maps(p.Labels))}
	pi.kv = make([]string, 0, len(pi.labels))
	for k, v := range pi.labels {
		pi.kv = append(pi.kv, k+"="+v)
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			proto := ir.TCP
			switch cp.Protocol {
			case corev1.ProtocolUDP:
				proto = ir.UDP
			case corev1.ProtocolSCTP:
				proto = ir.SCTP
			}
			if cp.ContainerPort < 1 || cp.ContainerPort > 65535 {
				continue
			}
			pi.ports = append(pi.ports, namedPort{name: cp.Name, proto: proto, port: uint16(cp.ContainerPort)})
		}
	}
	return pi
}

func maps(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

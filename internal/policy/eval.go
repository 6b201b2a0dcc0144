package policy

import (
	"net/netip"
	"sort"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// Peer is one end of a flow: a pod ("namespace/name") or an IP address. An
// IP that belongs to a known pod counts as that pod.
type Peer struct {
	Pod string
	IP  netip.Addr
}

// PodPeer names a pod.
func PodPeer(namespace, name string) Peer { return Peer{Pod: namespace + "/" + name} }

// IPPeer names an address.
func IPPeer(a netip.Addr) Peer { return Peer{IP: a} }

func (p Peer) String() string {
	if p.Pod != "" {
		return p.Pod
	}
	return p.IP.String()
}

// Flow is a new connection: source, destination, protocol and destination
// port.
type Flow struct {
	Src, Dst Peer
	Protocol ir.Protocol
	Port     uint16
}

// Verdicts.
const (
	VerdictAllowed = "ALLOWED"
	VerdictDenied  = "DENIED"
	VerdictAudit   = "AUDIT"
)

// Step is one tier's decision in a Decision's trail.
type Step struct {
	Tier ir.TierKind
	// Side is "egress" (the source pod's side) or "ingress" (the
	// destination pod's side) for the per-side tiers NetworkPolicy and
	// baseline, empty for flow-level tiers.
	Side string
	// Outcome is accept, deny, pass, audit, isolated-allow, none.
	Outcome string
	Rule    string
	Detail  string
}

// Decision is the verdict for a flow with its trail.
type Decision struct {
	// Verdict is ALLOWED, DENIED or AUDIT.
	Verdict string
	// Allowed is what the datapath does; AUDIT is allowed.
	Allowed bool
	// Tier and Rule name the deciding rule; Rule is empty when the default
	// allow decided.
	Tier  ir.TierKind
	Rule  string
	Trail []Step
	// Error is set when an end of the flow is unknown; the verdict is then
	// DENIED.
	Error string
}

type end struct {
	pod *podInfo
	ip  netip.Addr
}

func (x end) zone(e *Engine) (string, *zoneInfo) {
	if x.pod != nil {
		if x.pod.zone == "" {
			return zoneUnzoned, nil
		}
		return x.pod.zone, e.zones[x.pod.zone]
	}
	if z := e.cidrZone(x.ip); z != nil {
		return z.name, z
	}
	return zoneWorld, nil
}

func (e *Engine) cidrZone(a netip.Addr) *zoneInfo {
	if !a.IsValid() {
		return nil
	}
	b := &ipBlock{}
	for _, z := range e.zoneList {
		if z.pods || len(z.effNets) == 0 {
			continue
		}
		b.ranges = z.effNets
		if b.contains(a) {
			return z
		}
	}
	return nil
}

func (e *Engine) resolve(p Peer) (end, bool) {
	if p.Pod != "" {
		pod := e.pods[p.Pod]
		if pod == nil {
			return end{}, false
		}
		ip := pod.ips[0]
		if p.IP.IsValid() {
			for _, a := range pod.ips {
				if a == p.IP.Unmap() {
					ip = a
				}
			}
		}
		return end{pod: pod, ip: ip}, true
	}
	if !p.IP.IsValid() {
		return end{}, false
	}
	ip := p.IP.Unmap()
	return end{pod: e.podByIP[ip], ip: ip}, true
}

// Evaluate returns the verdict for a flow and the trail of tiers that led
// to it, following docs/policy-model.md.
func (e *Engine) Evaluate(f Flow) Decision {
	src, ok1 := e.resolve(f.Src)
	dst, ok2 := e.resolve(f.Dst)
	if !ok1 || !ok2 {
		bad := f.Src
		if ok1 {
			bad = f.Dst
		}
		return Decision{Verdict: VerdictDenied, Error: "unknown endpoint " + bad.String()}
	}
	// pick addresses of one family when both ends are named pods
	if f.Src.Pod != "" && f.Dst.Pod != "" && !f.Src.IP.IsValid() && !f.Dst.IP.IsValid() {
		src.ip, dst.ip = pickFamily(src.pod.ips, dst.pod.ips)
	} else if f.Dst.Pod != "" && !f.Dst.IP.IsValid() {
		dst.ip = sameFamily(dst.pod.ips, src.ip)
	} else if f.Src.Pod != "" && !f.Src.IP.IsValid() {
		src.ip = sameFamily(src.pod.ips, dst.ip)
	}
	return e.decide(src, dst, f.Protocol, f.Port, nil, true)
}

func pickFamily(a, b []netip.Addr) (netip.Addr, netip.Addr) {
	for _, x := range a {
		for _, y := range b {
			if x.Is4() == y.Is4() {
				return x, y
			}
		}
	}
	return a[0], b[0]
}

func sameFamily(ips []netip.Addr, other netip.Addr) netip.Addr {
	for _, a := range ips {
		if a.Is4() == other.Is4() {
			return a
		}
	}
	return ips[0]
}

// polCache memoizes the policies selecting a pod, per direction.
type polCache struct {
	in, eg map[*podInfo][]*npInfo
}

func (e *Engine) selecting(p *podInfo, egress bool, c *polCache) []*npInfo {
	if c != nil {
		m := c.in
		if egress {
			m = c.eg
		}
		if l, ok := m[p]; ok {
			return l
		}
	}
	var out []*npInfo
	for _, n := range e.candidateNPs(p) {
		if (egress && !n.egress) || (!egress && !n.ingress) {
			continue
		}
		e.stats.SelectorEvaluations++
		if n.podSel.Matches(p.labels) {
			out = append(out, n)
		}
	}
	if c != nil {
		if egress {
			c.eg[p] = out
		} else {
			c.in[p] = out
		}
	}
	return out
}

func (e *Engine) npPeerMatches(r *npRule, peer end) bool {
	if r.allPeers {
		return true
	}
	for _, p := range r.peers {
		if p.block != nil {
			if p.block.contains(peer.ip) {
				return true
			}
			continue
		}
		if peer.pod != nil && e.selMatches(p.sel, peer.pod) {
			return true
		}
	}
	return false
}

func (e *Engine) qPeerMatches(qp *qPeer, peer end) bool {
	switch {
	case qp.zone != "":
		n, _ := peer.zone(e)
		return n == qp.zone
	case qp.cidr != nil:
		return qp.cidr.contains(peer.ip)
	case qp.pods != nil:
		return peer.pod != nil && e.selMatches(qp.pods, peer.pod)
	}
	return false
}

func (e *Engine) isDNS(p *podInfo) bool {
	return p != nil && e.selMatches(e.dnsSel, p)
}

// qAdmits reports whether the union of the quarantines' allow-lists for
// one direction admits the peer, and the entry that did.
func (e *Engine) qAdmits(qs []*quarInfo, egress bool, peer end, proto ir.Protocol, port uint16, dstPod *podInfo) (string, bool) {
	for _, q := range qs {
		list := q.ingress
		if egress {
			list = q.egress
		}
		for i := range list {
			if list[i].ports.matches(proto, port, dstPod) && e.qPeerMatches(&list[i], peer) {
				return list[i].id, true
			}
		}
		if egress && q.dns && (proto == ir.UDP || proto == ir.TCP) && port == 53 && e.isDNS(peer.pod) {
			return q.id + "/dns", true
		}
	}
	return "", false
}

// effectiveAudit reports whether a flow between the two zones acts in
// Audit/Learn mode: the strictest mode of the real zones wins; Enforce when
// neither end is in a real zone.
func effectiveAudit(a, b *zoneInfo) bool {
	if a == nil && b == nil {
		return false
	}
	if a != nil && !a.audit() {
		return false
	}
	if b != nil && !b.audit() {
		return false
	}
	return true
}

func (e *Engine) decide(src, dst end, proto ir.Protocol, port uint16, c *polCache, trail bool) Decision {
	var d Decision
	final := func(verdict string, tier ir.TierKind, rule string) Decision {
		d.Verdict = verdict
		d.Allowed = verdict != VerdictDenied
		d.Tier = tier
		d.Rule = rule
		return d
	}

	// 1. Quarantine.
	var qs, qd []*quarInfo
	if src.pod != nil {
		qs = src.pod.quar
	}
	if dst.pod != nil {
		qd = dst.pod.quar
	}
	if len(qs) > 0 || len(qd) > 0 {
		rule := ""
		if len(qs) > 0 {
			id, ok := e.qAdmits(qs, true, dst, proto, port, dst.pod)
			if !ok {
				if trail {
					d.Trail = append(d.Trail, Step{Tier: ir.TierQuarantine, Outcome: "deny", Rule: qs[0].id, Detail: "source " + src.pod.key + " is quarantined and its egress allow-list does not admit the flow"})
				}
				return final(VerdictDenied, ir.TierQuarantine, qs[0].id)
			}
			rule = id
		}
		if len(qd) > 0 {
			id, ok := e.qAdmits(qd, false, src, proto, port, dst.pod)
			if !ok {
				if trail {
					d.Trail = append(d.Trail, Step{Tier: ir.TierQuarantine, Outcome: "deny", Rule: qd[0].id, Detail: "destination " + dst.pod.key + " is quarantined and its ingress allow-list does not admit the flow"})
				}
				return final(VerdictDenied, ir.TierQuarantine, qd[0].id)
			}
			if rule == "" {
				rule = id
			}
		}
		if trail {
			d.Trail = append(d.Trail, Step{Tier: ir.TierQuarantine, Outcome: "accept", Rule: rule, Detail: "admitted by the forensics allow-list of every quarantined end"})
		}
		return final(VerdictAllowed, ir.TierQuarantine, rule)
	}

	// 2. Admin tier.
	marked := false
	zsN, zs := src.zone(e)
	zdN, zd := dst.zone(e)
	audit := effectiveAudit(zs, zd)
	var skipSide [2]bool // egress, ingress: decided by an upstream or zone Accept
	adminAcc := ""
	if len(e.upAdmin) > 0 {
		var rule string
		var ok bool
		skipSide, adminAcc, rule, ok = e.adminSides(src, dst, proto, port, zsN, zdN, zs, zd, audit, &marked, &d, trail)
		if !ok {
			return final(VerdictDenied, ir.TierAdmin, rule)
		}
		if (skipSide[0] || src.pod == nil) && (skipSide[1] || dst.pod == nil) {
			return final(VerdictAllowed, ir.TierAdmin, adminAcc)
		}
		goto sides
	}
	{
		matched := false
		for _, zp := range e.zpList {
			if !zp.hasFrom(zsN) || !zp.hasTo(zdN) || !zp.ports.matches(proto, port, dst.pod) {
				continue
			}
			matched = true
			switch zp.action {
			case "Accept":
				if trail {
					d.Trail = append(d.Trail, Step{Tier: ir.TierAdmin, Outcome: "accept", Rule: zp.id, Detail: zsN + " -> " + zdN})
				}
				return final(VerdictAllowed, ir.TierAdmin, zp.id)
			case "Deny":
				if zp.auditOnly || audit {
					marked = true
					why := "zone mode Audit/Learn"
					if zp.auditOnly {
						why = "auditOnly"
					}
					if trail {
						d.Trail = append(d.Trail, Step{Tier: ir.TierAdmin, Outcome: "audit", Rule: zp.id, Detail: zsN + " -> " + zdN + " would be denied (" + why + "); continues to NetworkPolicy"})
					}
				} else {
					if trail {
						d.Trail = append(d.Trail, Step{Tier: ir.TierAdmin, Outcome: "deny", Rule: zp.id, Detail: zsN + " -> " + zdN})
					}
					return final(VerdictDenied, ir.TierAdmin, zp.id)
				}
			default:
				if trail {
					d.Trail = append(d.Trail, Step{Tier: ir.TierAdmin, Outcome: "pass", Rule: zp.id, Detail: zsN + " -> " + zdN + "; continues to NetworkPolicy"})
				}
			}
			break
		}
		if !matched {
			if zsN != zdN && (zs != nil || zd != nil) {
				zn := zsN
				if zd != nil {
					zn = zdN
				}
				rule := "ZoneBoundary/" + zn
				if audit {
					marked = true
					if trail {
						d.Trail = append(d.Trail, Step{Tier: ir.TierAdmin, Outcome: "audit", Rule: rule, Detail: "zone boundary " + zsN + " -> " + zdN + " would be denied (Audit/Learn); continues to NetworkPolicy"})
					}
				} else {
					if trail {
						d.Trail = append(d.Trail, Step{Tier: ir.TierAdmin, Outcome: "deny", Rule: rule, Detail: "zone boundary " + zsN + " -> " + zdN + " with no ZonePolicy"})
					}
					return final(VerdictDenied, ir.TierAdmin, rule)
				}
			} else {
				if trail {
					d.Trail = append(d.Trail, Step{Tier: ir.TierAdmin, Outcome: "none", Detail: "no ZonePolicy matches and no zone boundary is crossed (" + zsN + " -> " + zdN + ")"})
				}
			}
		}

	}

	// 3+4. NetworkPolicy and baseline, per side.
sides:
	denied := ""
	deniedTier := ir.TierNetworkPolicy
	accRule := ""
	side := func(sideName string, local, peer end, egress bool) {
		if local.pod == nil {
			return
		}
		if (egress && skipSide[0]) || (!egress && skipSide[1]) {
			return
		}
		pols := e.selecting(local.pod, egress, c)
		if len(pols) > 0 {
			for _, n := range pols {
				rules := n.in
				if egress {
					rules = n.eg
				}
				for i := range rules {
					if rules[i].ports.matches(proto, port, dst.pod) && e.npPeerMatches(&rules[i], peer) {
						if trail {
							d.Trail = append(d.Trail, Step{Tier: ir.TierNetworkPolicy, Side: sideName, Outcome: "accept", Rule: rules[i].id})
						}
						if accRule == "" || !egress {
							accRule = rules[i].id
						}
						return
					}
				}
			}
			if trail {
				d.Trail = append(d.Trail, Step{Tier: ir.TierNetworkPolicy, Side: sideName, Outcome: "deny", Rule: pols[0].isoID, Detail: "isolated by " + itoa(len(pols)) + " policy(ies); no rule admits the flow"})
			}
			if denied == "" {
				denied = pols[0].isoID
				deniedTier = ir.TierNetworkPolicy
			}
			return
		}
		if trail {
			d.Trail = append(d.Trail, Step{Tier: ir.TierNetworkPolicy, Side: sideName, Outcome: "none", Detail: "no policy isolates " + local.pod.key})
		}
		// baseline: upstream baseline policies, then the intra-zone posture
		for _, u := range e.upBaseline {
			r := e.upSide(u, local.pod, peer, egress, proto, port, dst.pod)
			if r == nil {
				continue
			}
			if trail {
				d.Trail = append(d.Trail, Step{Tier: ir.TierBaseline, Side: sideName, Outcome: actionName(r.action), Rule: r.np.id})
			}
			switch r.action {
			case ir.Accept:
				if accRule == "" || !egress {
					accRule = r.np.id
				}
			case ir.Deny:
				if denied == "" {
					denied = r.np.id
					deniedTier = ir.TierBaseline
				}
			}
			return
		}
		if src.pod != nil && dst.pod != nil && src.pod.zone != "" && src.pod.zone == dst.pod.zone {
			z := e.zones[src.pod.zone]
			if z != nil && z.intraDeny {
				rule := "ZoneBaseline/" + z.name
				if z.audit() {
					marked = true
					if trail {
						d.Trail = append(d.Trail, Step{Tier: ir.TierBaseline, Side: sideName, Outcome: "audit", Rule: rule, Detail: "intra-zone Deny in " + z.name + " (Audit/Learn)"})
					}
				} else {
					if trail {
						d.Trail = append(d.Trail, Step{Tier: ir.TierBaseline, Side: sideName, Outcome: "deny", Rule: rule, Detail: "intra-zone Deny in " + z.name})
					}
					if denied == "" {
						denied = rule
						deniedTier = ir.TierBaseline
					}
				}
				return
			}
		}
		if trail {
			d.Trail = append(d.Trail, Step{Tier: ir.TierBaseline, Side: sideName, Outcome: "none", Detail: "default allow"})
		}
	}
	side("egress", src, dst, true)
	side("ingress", dst, src, false)
	if denied != "" {
		return final(VerdictDenied, deniedTier, denied)
	}
	v := VerdictAllowed
	if marked {
		v = VerdictAudit
	}
	if accRule != "" {
		t := ir.TierNetworkPolicy
		if !strings.HasPrefix(accRule, "NetworkPolicy/") {
			t = ir.TierBaseline
		}
		return final(v, t, accRule)
	}
	if adminAcc != "" {
		return final(v, ir.TierAdmin, adminAcc)
	}
	return final(v, ir.TierBaseline, "")
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// Probe is a protocol and destination port to check in a matrix.
type Probe struct {
	Protocol ir.Protocol
	Port     uint16
}

// MatrixEntry is one cell of the allowed-flows matrix.
type MatrixEntry struct {
	Src      string `json:"src"`
	Dst      string `json:"dst"`
	Protocol string `json:"protocol"`
	Port     int    `json:"port"`
	Allowed  bool   `json:"allowed"`
	Verdict  string `json:"verdict"`
	Rule     string `json:"rule,omitempty"`
}

// SortProbes sorts probes by protocol name, then port, and removes
// duplicates.
func SortProbes(probes []Probe) []Probe {
	out := append([]Probe(nil), probes...)
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Protocol.String(), out[j].Protocol.String()
		if a != b {
			return a < b
		}
		return out[i].Port < out[j].Port
	})
	n := 0
	for i, p := range out {
		if i > 0 && p == out[n-1] {
			continue
		}
		out[n] = p
		n++
	}
	return out[:n]
}

// Pods returns the keys ("namespace/name") of all endpoint pods, sorted.
func (e *Engine) Pods() []string {
	out := make([]string, 0, len(e.pods))
	for k := range e.pods {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// EachMatrixEntry calls fn for every ordered pair of distinct endpoint pods
// and every probe, in Matrix order, without building the whole matrix.
func (e *Engine) EachMatrixEntry(probes []Probe, fn func(MatrixEntry)) {
	probes = SortProbes(probes)
	keys := e.Pods()
	pods := make([]*podInfo, len(keys))
	for i, k := range keys {
		pods[i] = e.pods[k]
	}
	c := &polCache{in: map[*podInfo][]*npInfo{}, eg: map[*podInfo][]*npInfo{}}
	protoNames := make([]string, len(probes))
	for i, p := range probes {
		protoNames[i] = p.Protocol.String()
	}
	for _, s := range pods {
		for _, d := range pods {
			if s == d {
				continue
			}
			si, di := pickFamily(s.ips, d.ips)
			for i, p := range probes {
				dec := e.decide(end{s, si}, end{d, di}, p.Protocol, p.Port, c, false)
				fn(MatrixEntry{Src: s.key, Dst: d.key, Protocol: protoNames[i], Port: int(p.Port), Allowed: dec.Allowed, Verdict: dec.Verdict, Rule: dec.Rule})
			}
		}
	}
}

// Matrix returns every ordered pair of distinct endpoint pods times the
// probes, sorted by src, dst, protocol and port.
func (e *Engine) Matrix(probes []Probe) []MatrixEntry {
	var out []MatrixEntry
	e.EachMatrixEntry(probes, func(m MatrixEntry) { out = append(out, m) })
	return out
}

// DeclaredProbes returns the union of all container ports declared by
// endpoint pods, sorted.
func (e *Engine) DeclaredProbes() []Probe {
	var out []Probe
	for _, p := range e.pods {
		for _, np := range p.ports {
			out = append(out, Probe{Protocol: np.proto, Port: np.port})
		}
	}
	return SortProbes(out)
}

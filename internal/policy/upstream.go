package policy

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	anpv1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	cnpv1beta1 "sigs.k8s.io/network-policy-api/apis/v1beta1"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// Upstream (sig-network-policy-api) kinds.
const (
	KindClusterNetworkPolicy       = "ClusterNetworkPolicy"
	KindAdminNetworkPolicy         = "AdminNetworkPolicy"
	KindBaselineAdminNetworkPolicy = "BaselineAdminNetworkPolicy"
)

// kindOrder is the tie-break at equal priority within a tier: ZonePolicies
// first, then ClusterNetworkPolicies, then AdminNetworkPolicies.
var kindOrder = map[string]int{"ZonePolicy": 0, KindClusterNetworkPolicy: 1, KindAdminNetworkPolicy: 2, KindBaselineAdminNetworkPolicy: 3}

// upInfo is an upstream admin policy normalized to one shape: a
// ClusterNetworkPolicy, an AdminNetworkPolicy (tier Admin) or a
// BaselineAdminNetworkPolicy (tier Baseline, after every baseline
// ClusterNetworkPolicy).
type upInfo struct {
	kind     string
	name     string
	key      string // kind/name
	baseline bool
	prio     int32
	subject  *podSel
	in, eg   []upRule
}

// upRule is one rule: the pod and network peers as an npRule (which gives
// address sets and named-port groups), node peers apart, and an action.
type upRule struct {
	np     npRule
	nodes  []*nodeSel
	action ir.Action
}

type nodeSel struct {
	key string
	sel labels.Selector
}

type nodeInfo struct {
	name   string
	labels labels.Set
	ips    []netip.Addr
}

func actionName(a ir.Action) string {
	switch a {
	case ir.Accept:
		return "accept"
	case ir.Deny:
		return "deny"
	}
	return "pass"
}

// SetNode adds or updates a Node. Its labels and addresses (InternalIP
// and ExternalIP) serve the nodes peers of upstream admin policies.
func (e *Engine) SetNode(n *corev1.Node) {
	ni := &nodeInfo{name: n.Name, labels: labels.Set(maps(n.Labels))}
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && !slices.Contains(ni.ips, ip.Unmap()) {
			ni.ips = append(ni.ips, ip.Unmap())
		}
	}
	slices.SortFunc(ni.ips, func(a, b netip.Addr) int { return a.Compare(b) })
	old := e.nodes[n.Name]
	e.nodes[n.Name] = ni
	if old != nil && labels.Equals(old.labels, ni.labels) && slices.Equal(old.ips, ni.ips) {
		return
	}
	e.nodesChanged()
}

// nodesChanged follows a change of a Node's labels or addresses: only the
// sets of node addresses change.
func (e *Engine) nodesChanged() {
	for s := range e.c.nodeSets {
		e.c.staleSets[s] = true
	}
}

// DeleteNode removes a Node.
func (e *Engine) DeleteNode(name string) {
	if _, ok := e.nodes[name]; !ok {
		return
	}
	delete(e.nodes, name)
	e.nodesChanged()
}

// SetClusterNetworkPolicy adds or updates a ClusterNetworkPolicy
// (policy.networking.k8s.io/v1beta1). An invalid policy is rejected with a
// *FieldError and removed from the model.
func (e *Engine) SetClusterNetworkPolicy(p *cnpv1beta1.ClusterNetworkPolicy) error {
	u, ferr := e.convertCNP(p)
	return e.setUpstream(KindClusterNetworkPolicy, p.Name, u, ferr)
}

// SetClusterNetworkPolicyV1alpha2 adds or updates a v1alpha2
// ClusterNetworkPolicy; the schema equals v1beta1's.
func (e *Engine) SetClusterNetworkPolicyV1alpha2(p *cnpv1alpha2.ClusterNetworkPolicy) error {
	var b cnpv1beta1.ClusterNetworkPolicy
	raw, err := json.Marshal(p)
	if err == nil {
		err = json.Unmarshal(raw, &b)
	}
	if err != nil {
		return fmt.Errorf("converting ClusterNetworkPolicy %s from v1alpha2: %w", p.Name, err)
	}
	return e.SetClusterNetworkPolicy(&b)
}

// DeleteClusterNetworkPolicy removes a ClusterNetworkPolicy.
func (e *Engine) DeleteClusterNetworkPolicy(name string) {
	e.deleteUpstream(KindClusterNetworkPolicy, name)
}

// SetAdminNetworkPolicy adds or updates an AdminNetworkPolicy
// (policy.networking.k8s.io/v1alpha1).
func (e *Engine) SetAdminNetworkPolicy(p *anpv1alpha1.AdminNetworkPolicy) error {
	u, ferr := e.convertANP(KindAdminNetworkPolicy, p.Name, false, p.Spec.Priority, p.Spec.Subject, p.Spec.Ingress, p.Spec.Egress)
	return e.setUpstream(KindAdminNetworkPolicy, p.Name, u, ferr)
}

// DeleteAdminNetworkPolicy removes an AdminNetworkPolicy.
func (e *Engine) DeleteAdminNetworkPolicy(name string) {
	e.deleteUpstream(KindAdminNetworkPolicy, name)
}

// SetBaselineAdminNetworkPolicy adds or updates a
// BaselineAdminNetworkPolicy (policy.networking.k8s.io/v1alpha1). Its
// actions are Allow and Deny; upstream allows only the name "default".
func (e *Engine) SetBaselineAdminNetworkPolicy(p *anpv1alpha1.BaselineAdminNetworkPolicy) error {
	var u *upInfo
	var ferr *FieldError
	if p.Name != "default" {
		ferr = objCtx{KindBaselineAdminNetworkPolicy, "", p.Name}.errf("metadata.name", "a BaselineAdminNetworkPolicy must be named default")
	} else {
		in := make([]anpv1alpha1.AdminNetworkPolicyIngressRule, len(p.Spec.Ingress))
		for i, r := range p.Spec.Ingress {
			in[i] = anpv1alpha1.AdminNetworkPolicyIngressRule{Name: r.Name, Action: anpv1alpha1.AdminNetworkPolicyRuleAction(r.Action), From: r.From, Ports: r.Ports}
		}
		eg := make([]anpv1alpha1.AdminNetworkPolicyEgressRule, len(p.Spec.Egress))
		for i, r := range p.Spec.Egress {
			peers := make([]anpv1alpha1.AdminNetworkPolicyEgressPeer, len(r.To))
			for j, x := range r.To {
				peers[j] = anpv1alpha1.AdminNetworkPolicyEgressPeer{Namespaces: x.Namespaces, Pods: x.Pods, Nodes: x.Nodes, Networks: x.Networks}
			}
			eg[i] = anpv1alpha1.AdminNetworkPolicyEgressRule{Name: r.Name, Action: anpv1alpha1.AdminNetworkPolicyRuleAction(r.Action), To: peers, Ports: r.Ports}
		}
		u, ferr = e.convertANP(KindBaselineAdminNetworkPolicy, p.Name, true, 0, p.Spec.Subject, in, eg)
	}
	return e.setUpstream(KindBaselineAdminNetworkPolicy, p.Name, u, ferr)
}

// DeleteBaselineAdminNetworkPolicy removes a BaselineAdminNetworkPolicy.
func (e *Engine) DeleteBaselineAdminNetworkPolicy(name string) {
	e.deleteUpstream(KindBaselineAdminNetworkPolicy, name)
}

func (e *Engine) setUpstream(kind, name string, u *upInfo, ferr *FieldError) error {
	if ferr != nil {
		e.deleteUpstream(kind, name)
		return ferr
	}
	old := e.ups[u.key]
	e.ups[u.key] = u
	e.upstreamChanged(old, u)
	return nil
}

func (e *Engine) deleteUpstream(kind, name string) {
	old, ok := e.ups[kind+"/"+name]
	if !ok {
		return
	}
	delete(e.ups, kind+"/"+name)
	e.upstreamChanged(old, nil)
}

// adminEntry is one element of the admin tier's order: a ZonePolicy or an
// upstream admin policy.
type adminEntry struct {
	zp *zpInfo
	up *upInfo
}

func (a adminEntry) sortKey() (int32, int, string) {
	if a.zp != nil {
		return a.zp.prio, 0, a.zp.name
	}
	return a.up.prio, kindOrder[a.up.kind], a.up.name
}

// upstreamChanged follows a change of one upstream policy from old to cur
// (either may be nil). Its rules appear only in the chains of the
// endpoints its subject selects, so only those recompile.
func (e *Engine) upstreamChanged(old, cur *upInfo) {
	e.upBaseline = e.upBaseline[:0]
	e.upNodePeers = false
	var admin []*upInfo
	for _, u := range e.ups {
		if u.baseline {
			e.upBaseline = append(e.upBaseline, u)
		} else {
			admin = append(admin, u)
		}
		for _, r := range u.eg {
			if len(r.nodes) > 0 {
				e.upNodePeers = true
			}
		}
	}
	e.upAdminCount = len(admin)
	less := func(a, b *upInfo) int {
		if a.prio != b.prio {
			return int(a.prio) - int(b.prio)
		}
		if kindOrder[a.kind] != kindOrder[b.kind] {
			return kindOrder[a.kind] - kindOrder[b.kind]
		}
		return strings.Compare(a.name, b.name)
	}
	slices.SortFunc(e.upBaseline, less)
	slices.SortFunc(admin, less)
	e.upAdmin = admin
	if e.c.all {
		return
	}
	for _, u := range []*upInfo{old, cur} {
		if u != nil {
			e.eachSelected(u.subject, func(p *podInfo) { e.c.dirty[p.key] = true })
		}
	}
}

// adminOrder merges ZonePolicies and upstream admin policies by priority,
// then kind (ZonePolicy, ClusterNetworkPolicy, AdminNetworkPolicy), then
// name.
func (e *Engine) adminOrder() []adminEntry {
	out := make([]adminEntry, 0, len(e.zpList)+len(e.upAdmin))
	for _, zp := range e.zpList {
		out = append(out, adminEntry{zp: zp})
	}
	for _, u := range e.upAdmin {
		out = append(out, adminEntry{up: u})
	}
	sort.SliceStable(out, func(i, j int) bool {
		pa, ka, na := out[i].sortKey()
		pb, kb, nb := out[j].sortKey()
		if pa != pb {
			return pa < pb
		}
		if ka != kb {
			return ka < kb
		}
		return na < nb
	})
	return out
}

// ---- conversion ----

func (e *Engine) convertCNP(p *cnpv1beta1.ClusterNetworkPolicy) (*upInfo, *FieldError) {
	o := objCtx{KindClusterNetworkPolicy, "", p.Name}
	if p.Name == "" {
		return nil, o.errf("metadata.name", "missing name")
	}
	var baseline bool
	switch p.Spec.Tier {
	case cnpv1beta1.AdminTier:
	case cnpv1beta1.BaselineTier:
		baseline = true
	default:
		return nil, o.errf("spec.tier", "unknown tier %q (want Admin or Baseline)", p.Spec.Tier)
	}
	u := &upInfo{kind: o.kind, name: p.Name, key: o.kind + "/" + p.Name, baseline: baseline, prio: p.Spec.Priority}
	if p.Spec.Priority < 0 || p.Spec.Priority > 1000 {
		return nil, o.errf("spec.priority", "priority %d out of range 0-1000", p.Spec.Priority)
	}
	var ferr *FieldError
	u.subject, ferr = subjectSel(p.Spec.Subject.Namespaces, (*nsPod)(cnpPod(p.Spec.Subject.Pods)), o, "spec.subject")
	if ferr != nil {
		return nil, ferr
	}
	action := func(a cnpv1beta1.ClusterNetworkPolicyRuleAction, f string) (ir.Action, *FieldError) {
		switch a {
		case cnpv1beta1.ClusterNetworkPolicyRuleActionAccept:
			return ir.Accept, nil
		case cnpv1beta1.ClusterNetworkPolicyRuleActionDeny:
			return ir.Deny, nil
		case cnpv1beta1.ClusterNetworkPolicyRuleActionPass:
			return ir.Pass, nil
		}
		return 0, o.errf(f, "unknown action %q (want Accept, Deny or Pass)", a)
	}
	for i, r := range p.Spec.Ingress {
		f := fmt.Sprintf("spec.ingress[%d]", i)
		ur := upRule{np: npRule{id: fmt.Sprintf("%s/ingress/%d", u.key, i)}}
		if ur.action, ferr = action(r.Action, f+".action"); ferr != nil {
			return nil, ferr
		}
		if ur.np.ports, ferr = cnpPorts(r.Protocols, o, f+".protocols"); ferr != nil {
			return nil, ferr
		}
		if len(r.From) == 0 {
			return nil, o.errf(f+".from", "needs at least one peer")
		}
		for j, pe := range r.From {
			if ferr = e.addPeer(&ur, pe.Namespaces, (*nsPod)(cnpPod(pe.Pods)), nil, nil, nil, o, fmt.Sprintf("%s.from[%d]", f, j)); ferr != nil {
				return nil, ferr
			}
		}
		u.in = append(u.in, ur)
	}
	for i, r := range p.Spec.Egress {
		f := fmt.Sprintf("spec.egress[%d]", i)
		ur := upRule{np: npRule{id: fmt.Sprintf("%s/egress/%d", u.key, i)}}
		if ur.action, ferr = action(r.Action, f+".action"); ferr != nil {
			return nil, ferr
		}
		if ur.np.ports, ferr = cnpPorts(r.Protocols, o, f+".protocols"); ferr != nil {
			return nil, ferr
		}
		if len(r.To) == 0 {
			return nil, o.errf(f+".to", "needs at least one peer")
		}
		for j, pe := range r.To {
			nets := make([]string, len(pe.Networks))
			for k, n := range pe.Networks {
				nets[k] = string(n)
			}
			if ferr = e.addPeer(&ur, pe.Namespaces, (*nsPod)(cnpPod(pe.Pods)), pe.Nodes, nets, pe.DomainNames, o, fmt.Sprintf("%s.to[%d]", f, j)); ferr != nil {
				return nil, ferr
			}
		}
		u.eg = append(u.eg, ur)
	}
	e.finishUp(u)
	return u, nil
}

func (e *Engine) convertANP(kind, name string, baseline bool, prio int32, subj anpv1alpha1.AdminNetworkPolicySubject, ingress []anpv1alpha1.AdminNetworkPolicyIngressRule, egress []anpv1alpha1.AdminNetworkPolicyEgressRule) (*upInfo, *FieldError) {
	o := objCtx{kind, "", name}
	if name == "" {
		return nil, o.errf("metadata.name", "missing name")
	}
	if prio < 0 || prio > 1000 {
		return nil, o.errf("spec.priority", "priority %d out of range 0-1000", prio)
	}
	u := &upInfo{kind: kind, name: name, key: kind + "/" + name, baseline: baseline, prio: prio}
	var ferr *FieldError
	u.subject, ferr = subjectSel(subj.Namespaces, (*nsPod)(subj.Pods), o, "spec.subject")
	if ferr != nil {
		return nil, ferr
	}
	action := func(a anpv1alpha1.AdminNetworkPolicyRuleAction, f string) (ir.Action, *FieldError) {
		switch a {
		case anpv1alpha1.AdminNetworkPolicyRuleActionAllow:
			return ir.Accept, nil
		case anpv1alpha1.AdminNetworkPolicyRuleActionDeny:
			return ir.Deny, nil
		case anpv1alpha1.AdminNetworkPolicyRuleActionPass:
			if !baseline {
				return ir.Pass, nil
			}
		}
		want := "Allow, Deny or Pass"
		if baseline {
			want = "Allow or Deny"
		}
		return 0, o.errf(f, "unknown action %q (want %s)", a, want)
	}
	for i, r := range ingress {
		f := fmt.Sprintf("spec.ingress[%d]", i)
		ur := upRule{np: npRule{id: fmt.Sprintf("%s/ingress/%d", u.key, i)}}
		if ur.action, ferr = action(r.Action, f+".action"); ferr != nil {
			return nil, ferr
		}
		if ur.np.ports, ferr = anpPorts(r.Ports, o, f+".ports"); ferr != nil {
			return nil, ferr
		}
		if len(r.From) == 0 {
			return nil, o.errf(f+".from", "needs at least one peer")
		}
		for j, pe := range r.From {
			if ferr = e.addPeer(&ur, pe.Namespaces, (*nsPod)(pe.Pods), nil, nil, nil, o, fmt.Sprintf("%s.from[%d]", f, j)); ferr != nil {
				return nil, ferr
			}
		}
		u.in = append(u.in, ur)
	}
	for i, r := range egress {
		f := fmt.Sprintf("spec.egress[%d]", i)
		ur := upRule{np: npRule{id: fmt.Sprintf("%s/egress/%d", u.key, i)}}
		if ur.action, ferr = action(r.Action, f+".action"); ferr != nil {
			return nil, ferr
		}
		if ur.np.ports, ferr = anpPorts(r.Ports, o, f+".ports"); ferr != nil {
			return nil, ferr
		}
		if len(r.To) == 0 {
			return nil, o.errf(f+".to", "needs at least one peer")
		}
		for j, pe := range r.To {
			nets := make([]string, len(pe.Networks))
			for k, n := range pe.Networks {
				nets[k] = string(n)
			}
			var dns []cnpv1beta1.DomainName
			for _, d := range pe.DomainNames {
				dns = append(dns, cnpv1beta1.DomainName(d))
			}
			if ferr = e.addPeer(&ur, pe.Namespaces, (*nsPod)(pe.Pods), pe.Nodes, nets, dns, o, fmt.Sprintf("%s.to[%d]", f, j)); ferr != nil {
				return nil, ferr
			}
		}
		u.eg = append(u.eg, ur)
	}
	e.finishUp(u)
	return u, nil
}

// nsPod is the shared shape of NamespacedPod in every upstream version.
type nsPod struct {
	NamespaceSelector metav1.LabelSelector
	PodSelector       metav1.LabelSelector
}

func cnpPod(p *cnpv1beta1.NamespacedPod) *anpv1alpha1.NamespacedPod {
	if p == nil {
		return nil
	}
	return &anpv1alpha1.NamespacedPod{NamespaceSelector: p.NamespaceSelector, PodSelector: p.PodSelector}
}

// subjectSel converts a subject: exactly one of namespaces and pods.
func subjectSel(nsSel *metav1.LabelSelector, pods *nsPod, o objCtx, field string) (*podSel, *FieldError) {
	if (nsSel == nil) == (pods == nil) {
		return nil, o.errf(field, "needs exactly one of namespaces and pods")
	}
	return peerSel(nsSel, pods, o, field)
}

func peerSel(nsSel *metav1.LabelSelector, pods *nsPod, o objCtx, field string) (*podSel, *FieldError) {
	var ferr *FieldError
	ps := &podSel{}
	if nsSel != nil {
		if ps.nsSel, ferr = selector(nsSel, o, field+".namespaces"); ferr != nil {
			return nil, ferr
		}
		ps.podSel = labels.Everything()
		return ps, nil
	}
	if ps.nsSel, ferr = selector(&pods.NamespaceSelector, o, field+".pods.namespaceSelector"); ferr != nil {
		return nil, ferr
	}
	if ps.podSel, ferr = selector(&pods.PodSelector, o, field+".pods.podSelector"); ferr != nil {
		return nil, ferr
	}
	return ps, nil
}

// addPeer adds one peer entry (exactly one field set) to a rule.
func (e *Engine) addPeer(r *upRule, nsSel *metav1.LabelSelector, pods *nsPod, nodes *metav1.LabelSelector, networks []string, domains []cnpv1beta1.DomainName, o objCtx, field string) *FieldError {
	set := 0
	for _, b := range []bool{nsSel != nil, pods != nil, nodes != nil, len(networks) > 0, len(domains) > 0} {
		if b {
			set++
		}
	}
	if set != 1 {
		return o.errf(field, "needs exactly one of namespaces, pods, nodes, networks (got %d)", set)
	}
	switch {
	case len(domains) > 0:
		return o.errf(field+".domainNames", "domainNames peers are not supported")
	case nodes != nil:
		s, ferr := selector(nodes, o, field+".nodes")
		if ferr != nil {
			return ferr
		}
		r.nodes = append(r.nodes, &nodeSel{key: "Nodes/" + starIfEmpty(s.String()), sel: s})
	case len(networks) > 0:
		for i, n := range networks {
			b, ferr := parseBlock(n, nil, o, fmt.Sprintf("%s.networks[%d]", field, i))
			if ferr != nil {
				return &FieldError{Kind: ferr.Kind, Name: ferr.Name, Field: fmt.Sprintf("%s.networks[%d]", field, i), Message: ferr.Message}
			}
			r.np.peers = append(r.np.peers, npPeer{block: b})
		}
	default:
		ps, ferr := peerSel(nsSel, pods, o, field)
		if ferr != nil {
			return ferr
		}
		r.np.peers = append(r.np.peers, npPeer{sel: ps})
	}
	return nil
}

func starIfEmpty(s string) string {
	if s == "" {
		return "*"
	}
	return s
}

func (e *Engine) finishUp(u *upInfo) {
	u.subject = e.internSel(u.subject)
	for _, rs := range [][]upRule{u.in, u.eg} {
		for i := range rs {
			for j := range rs[i].np.peers {
				if rs[i].np.peers[j].sel != nil {
					rs[i].np.peers[j].sel = e.internSel(rs[i].np.peers[j].sel)
				}
			}
			rs[i].np.finish()
		}
	}
}

func anpPorts(ports *[]anpv1alpha1.AdminNetworkPolicyPort, o objCtx, field string) (portList, *FieldError) {
	if ports == nil || len(*ports) == 0 {
		return portList{all: true}, nil
	}
	var pl portList
	for i, p := range *ports {
		f := fmt.Sprintf("%s[%d]", field, i)
		n := 0
		if p.PortNumber != nil {
			n++
			proto, ferr := protoFromString(string(p.PortNumber.Protocol), o, f+".portNumber.protocol")
			if ferr != nil {
				return pl, ferr
			}
			if p.PortNumber.Port < 1 || p.PortNumber.Port > 65535 {
				return pl, o.errf(f+".portNumber.port", "port %d out of range 1-65535", p.PortNumber.Port)
			}
			pl.specs = append(pl.specs, portSpec{proto: proto, port: uint16(p.PortNumber.Port), end: uint16(p.PortNumber.Port)})
		}
		if p.NamedPort != nil {
			n++
			if *p.NamedPort == "" {
				return pl, o.errf(f+".namedPort", "empty port name")
			}
			// the container port's own protocol decides
			for _, proto := range []ir.Protocol{ir.TCP, ir.UDP, ir.SCTP} {
				pl.specs = append(pl.specs, portSpec{proto: proto, name: *p.NamedPort})
			}
		}
		if p.PortRange != nil {
			n++
			proto, ferr := protoFromString(string(p.PortRange.Protocol), o, f+".portRange.protocol")
			if ferr != nil {
				return pl, ferr
			}
			ps, ferr := rangeSpec(proto, p.PortRange.Start, p.PortRange.End, o, f+".portRange")
			if ferr != nil {
				return pl, ferr
			}
			pl.specs = append(pl.specs, ps)
		}
		if n != 1 {
			return pl, o.errf(f, "needs exactly one of portNumber, namedPort, portRange")
		}
	}
	return pl, nil
}

func rangeSpec(proto ir.Protocol, start, end int32, o objCtx, field string) (portSpec, *FieldError) {
	if start < 1 || start > 65535 {
		return portSpec{}, o.errf(field+".start", "port %d out of range 1-65535", start)
	}
	if end < start || end > 65535 {
		return portSpec{}, o.errf(field+".end", "end %d must be between start %d and 65535", end, start)
	}
	return portSpec{proto: proto, port: uint16(start), end: uint16(end)}, nil
}

func cnpPorts(protos []cnpv1beta1.ClusterNetworkPolicyProtocol, o objCtx, field string) (portList, *FieldError) {
	if len(protos) == 0 {
		return portList{all: true}, nil
	}
	var pl portList
	for i, p := range protos {
		f := fmt.Sprintf("%s[%d]", field, i)
		n := 0
		add := func(proto ir.Protocol, dp *cnpv1beta1.Port, pf string) *FieldError {
			n++
			if dp == nil {
				pl.specs = append(pl.specs, portSpec{proto: proto, anyPort: true})
				return nil
			}
			switch {
			case dp.Range != nil && dp.Number != 0:
				return o.errf(pf+".destinationPort", "needs exactly one of number and range")
			case dp.Range != nil:
				ps, ferr := rangeSpec(proto, dp.Range.Start, dp.Range.End, o, pf+".destinationPort.range")
				if ferr != nil {
					return ferr
				}
				pl.specs = append(pl.specs, ps)
			default:
				if dp.Number < 1 || dp.Number > 65535 {
					return o.errf(pf+".destinationPort.number", "port %d out of range 1-65535", dp.Number)
				}
				pl.specs = append(pl.specs, portSpec{proto: proto, port: uint16(dp.Number), end: uint16(dp.Number)})
			}
			return nil
		}
		if p.TCP != nil {
			if ferr := add(ir.TCP, p.TCP.DestinationPort, f+".tcp"); ferr != nil {
				return pl, ferr
			}
		}
		if p.UDP != nil {
			if ferr := add(ir.UDP, p.UDP.DestinationPort, f+".udp"); ferr != nil {
				return pl, ferr
			}
		}
		if p.SCTP != nil {
			if ferr := add(ir.SCTP, p.SCTP.DestinationPort, f+".sctp"); ferr != nil {
				return pl, ferr
			}
		}
		if p.DestinationNamedPort != "" {
			n++
			for _, proto := range []ir.Protocol{ir.TCP, ir.UDP, ir.SCTP} {
				pl.specs = append(pl.specs, portSpec{proto: proto, name: p.DestinationNamedPort})
			}
		}
		if n != 1 {
			return pl, o.errf(f, "needs exactly one of tcp, udp, sctp, destinationNamedPort")
		}
	}
	return pl, nil
}

// ---- evaluation ----

func (e *Engine) nodeIPMatches(sels []*nodeSel, peer end) bool {
	if peer.pod != nil || len(sels) == 0 {
		return false
	}
	for _, n := range e.nodes {
		if !slices.Contains(n.ips, peer.ip) {
			continue
		}
		for _, s := range sels {
			if s.sel.Matches(n.labels) {
				return true
			}
		}
	}
	return false
}

// upSide returns the first rule of u for one side that matches, or nil.
func (e *Engine) upSide(u *upInfo, local *podInfo, peer end, egress bool, proto ir.Protocol, port uint16, dst *podInfo) *upRule {
	if !e.selMatches(u.subject, local) {
		return nil
	}
	rules := u.in
	if egress {
		rules = u.eg
	}
	for i := range rules {
		r := &rules[i]
		if !r.np.ports.matches(proto, port, dst) {
			continue
		}
		if e.npPeerMatches(&r.np, peer) || (egress && e.nodeIPMatches(r.nodes, peer)) {
			return r
		}
	}
	return nil
}

// nodeSetPrefixes is the content of a Nodes/<selector> set.
func (e *Engine) nodeSetPrefixes(s *nodeSel) []netip.Prefix {
	var addrs []netip.Addr
	for _, n := range e.nodes {
		if s.sel.Matches(n.labels) {
			for _, ip := range n.ips {
				if e.podByIP[ip] == nil {
					addrs = append(addrs, ip)
				}
			}
		}
	}
	return hostPrefixes(addrs)
}

// adminSides evaluates the admin tier per side when upstream admin
// policies exist: each pod end walks ZonePolicies and its upstream
// policies in adminOrder; the first match decides that side. A side no
// entry matched meets the zone boundary. It returns which sides an Accept
// decided, the accepting rule, and ok=false with the denying rule when a
// side denies (the source side first).
func (e *Engine) adminSides(src, dst end, proto ir.Protocol, port uint16, zsN, zdN string, zs, zd *zoneInfo, audit bool, marked *bool, d *Decision, trail bool) (skip [2]bool, acc, denyRule string, ok bool) {
	order := e.adminOrder()
	type sideT struct {
		name        string
		local, peer end
		egress      bool
	}
	var sides []sideT
	if src.pod != nil {
		sides = append(sides, sideT{"egress", src, dst, true})
	}
	if dst.pod != nil {
		sides = append(sides, sideT{"ingress", dst, src, false})
	}
	if len(sides) == 0 {
		sides = append(sides, sideT{name: "", local: end{}, peer: end{}, egress: true})
	}
	step := func(s sideT, outcome, rule, detail string) {
		if trail {
			d.Trail = append(d.Trail, Step{Tier: ir.TierAdmin, Side: s.name, Outcome: outcome, Rule: rule, Detail: detail})
		}
	}
	for _, s := range sides {
		idx := 1
		if s.egress {
			idx = 0
		}
		matched := false
	walk:
		for _, ent := range order {
			if zp := ent.zp; zp != nil {
				if !zp.hasFrom(zsN) || !zp.hasTo(zdN) || !zp.ports.matches(proto, port, dst.pod) {
					continue
				}
				matched = true
				switch zp.action {
				case "Accept":
					step(s, "accept", zp.id, zsN+" -> "+zdN)
					skip[idx] = true
					if acc == "" {
						acc = zp.id
					}
				case "Deny":
					if zp.auditOnly || audit {
						*marked = true
						step(s, "audit", zp.id, zsN+" -> "+zdN+" would be denied; continues to NetworkPolicy")
					} else {
						step(s, "deny", zp.id, zsN+" -> "+zdN)
						return skip, acc, zp.id, false
					}
				default:
					step(s, "pass", zp.id, zsN+" -> "+zdN+"; continues to NetworkPolicy")
				}
				break walk
			}
			if s.local.pod == nil {
				continue
			}
			r := e.upSide(ent.up, s.local.pod, s.peer, s.egress, proto, port, dst.pod)
			if r == nil {
				continue
			}
			matched = true
			switch r.action {
			case ir.Accept:
				step(s, "accept", r.np.id, "")
				skip[idx] = true
				if acc == "" {
					acc = r.np.id
				}
			case ir.Deny:
				step(s, "deny", r.np.id, "")
				return skip, acc, r.np.id, false
			default:
				step(s, "pass", r.np.id, "continues to NetworkPolicy")
			}
			break walk
		}
		if matched {
			continue
		}
		if zsN != zdN && (zs != nil || zd != nil) {
			zn := zsN
			if zd != nil {
				zn = zdN
			}
			rule := "ZoneBoundary/" + zn
			if audit {
				*marked = true
				step(s, "audit", rule, "zone boundary "+zsN+" -> "+zdN+" would be denied (Audit/Learn); continues to NetworkPolicy")
				continue
			}
			step(s, "deny", rule, "zone boundary "+zsN+" -> "+zdN+" with no ZonePolicy")
			return skip, acc, rule, false
		}
		step(s, "none", "", "no admin policy matches and no zone boundary is crossed")
	}
	return skip, acc, "", true
}

package suggest

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// Pod is what the suggester needs of a live pod.
type Pod struct {
	Namespace, Name string
	// Labels are all of the pod's labels.
	Labels map[string]string
	// WorkloadKind and WorkloadName name the top of the pod's owner chain
	// (Kind "Pod" and the pod's name when it has no owner), as
	// attrib.Attributor.Workload computes them.
	WorkloadKind, WorkloadName string
	// Ports are the pod's container ports.
	Ports []corev1.ContainerPort
}

// World is the live cluster the suggestion is checked against.
type World struct {
	Pods []Pod
	// Zones are used to place CIDR peers in CIDR zones.
	Zones []v1alpha1.Zone
	// Services map edges to ClusterIPs that attribution left
	// untranslated to their backends (see Service).
	Services []Service
}

// Options tune a suggestion run.
type Options struct {
	// Now is the time the state is judged at.
	Now time.Time
	// StableAfter is how long a suggestion must gain no edge to be
	// Stable. Zero means 10 minutes.
	StableAfter time.Duration
	// Since, when set, keeps only edges last seen after it.
	Since time.Time
	// Verdicts are the edge verdicts that count as observed traffic.
	// Empty means Forwarded and Audit.
	Verdicts []v1alpha1.FlowVerdict
	// ZonePolicyPriority is the priority of suggested ZonePolicies. Zero
	// means 500.
	ZonePolicyPriority int32
	// NamePrefix prefixes every suggested object's name. Empty means
	// "bulkhead-".
	NamePrefix string
}

// Suggestion is the suggestion for one zone or one namespace.
type Suggestion struct {
	Name  string
	Scope v1alpha1.SuggestionScope
	// State is Learning or Stable.
	State v1alpha1.SuggestionState
	// LastChange is when the newest edge behind the suggestion was first
	// seen.
	LastChange      time.Time
	NetworkPolicies []networkingv1.NetworkPolicy
	ZonePolicies    []v1alpha1.ZonePolicy
	Rules           []v1alpha1.SuggestedRule
	// MinimumRules is the least number of NetworkPolicy rules that allow
	// the observed edges: one per (subject, direction, peer).
	MinimumRules int
	// NetworkPolicyRules is how many NetworkPolicy rules were suggested.
	NetworkPolicyRules int
	// Tuples is the number of distinct observed (source, destination,
	// protocol, port) tuples behind the suggestion.
	Tuples int
	// Problems are reasons some observed traffic has no rule.
	Problems []string
}

// Result is every suggestion of one run, sorted by name.
type Result struct {
	Suggestions []Suggestion
	// Problems that concern no single suggestion.
	Problems []string
}

// Find returns the suggestion named name.
func (r *Result) Find(name string) (*Suggestion, bool) {
	for i := range r.Suggestions {
		if r.Suggestions[i].Name == name {
			return &r.Suggestions[i], true
		}
	}
	return nil, false
}

// ZoneSuggestionName and NamespaceSuggestionName are the stable names of
// the suggestions for a zone and for a namespace's unzoned workloads.
func ZoneSuggestionName(zone string) string    { return "zone-" + zone }
func NamespaceSuggestionName(ns string) string { return "ns-" + ns }

// Well-known names.
const (
	DNSNamespace   = "kube-system"
	DNSService     = "kube-dns"
	DNSLabelKey    = "k8s-app"
	DNSLabelValue  = "kube-dns"
	NamespaceLabel = "kubernetes.io/metadata.name"
)

// peer is one end of an edge after normalization.
type peer struct {
	w    *v1alpha1.WorkloadRef // nil for a CIDR
	cidr netip.Prefix
	dns  bool
}

func (p peer) key() string {
	if p.dns {
		return "dns"
	}
	if p.w == nil {
		return "cidr:" + p.cidr.String()
	}
	return wkey(p.w.Namespace, p.w.Kind, p.w.Name)
}

func (p peer) String() string {
	switch {
	case p.dns:
		return "kube-dns"
	case p.w == nil:
		return p.cidr.String()
	default:
		return p.w.Kind + " " + p.w.Namespace + "/" + p.w.Name
	}
}

func wkey(ns, kind, name string) string { return ns + "/" + kind + "/" + name }

type portKey struct {
	proto v1alpha1.Protocol
	port  int32
}

// agg is the merged evidence of edges.
type agg struct {
	flows, packets int64
	srcPods        map[string]int32 // source peer key -> most source pods seen
	first, last    time.Time
	samples        map[string]bool
}

func (a *agg) add(src string, e *v1alpha1.FlowEdge) {
	if a.srcPods == nil {
		a.srcPods, a.samples = map[string]int32{}, map[string]bool{}
	}
	a.flows += e.Connections
	a.packets += e.Packets
	if e.SourcePodCount > a.srcPods[src] {
		a.srcPods[src] = e.SourcePodCount
	}
	if f := e.FirstSeen.Time; a.first.IsZero() || f.Before(a.first) {
		a.first = f
	}
	if l := e.LastSeen.Time; l.After(a.last) {
		a.last = l
	}
	for _, s := range e.Samples {
		a.samples[s] = true
	}
}

func (a *agg) evidence() v1alpha1.Evidence {
	ev := v1alpha1.Evidence{Flows: a.flows, Packets: a.packets,
		FirstSeen: metav1.NewTime(a.first.UTC()), LastSeen: metav1.NewTime(a.last.UTC())}
	for _, n := range a.srcPods {
		ev.SourcePods += n
	}
	for s := range a.samples {
		ev.Samples = append(ev.Samples, s)
	}
	sort.Strings(ev.Samples)
	if len(ev.Samples) > 10 {
		ev.Samples = ev.Samples[:10]
	}
	return ev
}

// rule is one suggested NetworkPolicy rule under construction: the
// subject's rule towards one peer.
type rule struct {
	peer  peer
	ports map[portKey]*agg
	all   agg
}

// subject is a workload that gets a NetworkPolicy.
type subject struct {
	w       v1alpha1.WorkloadRef
	egress  map[string]*rule
	ingress map[string]*rule
}

// Suggest computes the suggestions for edges in world.
func Suggest(edges []v1alpha1.FlowEdge, world World, o Options) Result {
	if o.StableAfter == 0 {
		o.StableAfter = 10 * time.Minute
	}
	if o.ZonePolicyPriority == 0 {
		o.ZonePolicyPriority = 500
	}
	if o.NamePrefix == "" {
		o.NamePrefix = "bulkhead-"
	}
	verdicts := map[v1alpha1.FlowVerdict]bool{}
	for _, v := range o.Verdicts {
		verdicts[v] = true
	}
	if len(verdicts) == 0 {
		verdicts[v1alpha1.VerdictForwarded], verdicts[v1alpha1.VerdictAudit] = true, true
	}
	s := &state{o: o, world: world, subjects: map[string]*subject{}, zps: map[[2]string]*zoneRule{},
		tuples: map[string]map[string]bool{}, last: map[string]time.Time{}, problems: map[string]map[string]bool{}}
	s.index()
	s.indexZones(edges)
	for i := range edges {
		e := &edges[i]
		if !verdicts[e.Verdict] || (!o.Since.IsZero() && !e.LastSeen.Time.After(o.Since)) {
			continue
		}
		for _, te := range s.serviceEdges(e) {
			s.addEdge(te)
		}
	}
	return s.result()
}

type zoneRule struct {
	from, to string
	ports    map[portKey]*agg
	all      agg
}

type state struct {
	o        Options
	world    World
	pods     map[string][]*Pod // namespace -> pods
	wpods    map[string][]*Pod // workload key -> pods
	subjects map[string]*subject
	zps      map[[2]string]*zoneRule
	// per suggestion name
	tuples   map[string]map[string]bool
	last     map[string]time.Time
	problems map[string]map[string]bool
	global   []string
	zones    map[string]string // workload key -> zone, from the edges
}

func (s *state) index() {
	s.pods, s.wpods = map[string][]*Pod{}, map[string][]*Pod{}
	for i := range s.world.Pods {
		p := &s.world.Pods[i]
		s.pods[p.Namespace] = append(s.pods[p.Namespace], p)
		k := wkey(p.Namespace, p.WorkloadKind, p.WorkloadName)
		s.wpods[k] = append(s.wpods[k], p)
	}
}

func isDNS(ep v1alpha1.EdgeEndpoint, port int32) bool {
	if port != 53 {
		return false
	}
	if ep.Service == DNSNamespace+"/"+DNSService {
		return true
	}
	w := ep.Workload
	return w != nil && w.Namespace == DNSNamespace && w.Labels[DNSLabelKey] == DNSLabelValue
}

func (s *state) peerOf(ep v1alpha1.EdgeEndpoint) (peer, error) {
	if ep.Workload != nil {
		return peer{w: ep.Workload}, nil
	}
	p, err := netip.ParsePrefix(ep.CIDR)
	if err != nil {
		a, aerr := netip.ParseAddr(ep.CIDR)
		if aerr != nil {
			return peer{}, fmt.Errorf("cidr %q: %w", ep.CIDR, err)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return peer{cidr: p.Masked()}, nil
}

// zoneOf is the zone name a peer is judged in: its zone, "unzoned" or
// the CIDR zone containing it, else "world".
func (s *state) zoneOf(p peer) string {
	if p.dns {
		return v1alpha1.PeerUnzoned // resolved by the caller when kube-dns is zoned
	}
	if p.w != nil {
		if p.w.Zone == "" {
			return v1alpha1.PeerUnzoned
		}
		return p.w.Zone
	}
	best, bestBits := v1alpha1.PeerWorld, -1
	for _, z := range s.world.Zones {
		for _, n := range z.Spec.Networks {
			np, err := netip.ParsePrefix(n.CIDR)
			if err != nil || !np.Contains(p.cidr.Addr()) || np.Bits() > p.cidr.Bits() || np.Bits() <= bestBits {
				continue
			}
			excluded := false
			for _, ex := range n.Except {
				if ep, err := netip.ParsePrefix(ex); err == nil && ep.Contains(p.cidr.Addr()) {
					excluded = true
				}
			}
			if !excluded {
				best, bestBits = z.Name, np.Bits()
			}
		}
	}
	return best
}

// suggestionOf names the suggestion a workload's NetworkPolicy belongs to.
func suggestionOf(w *v1alpha1.WorkloadRef) string {
	if w.Zone != "" {
		return ZoneSuggestionName(w.Zone)
	}
	return NamespaceSuggestionName(w.Namespace)
}

func (s *state) problem(sug, msg string) {
	if s.problems[sug] == nil {
		s.problems[sug] = map[string]bool{}
	}
	s.problems[sug][msg] = true
}

func (s *state) touch(sug, tuple string, first time.Time) {
	if s.tuples[sug] == nil {
		s.tuples[sug] = map[string]bool{}
	}
	s.tuples[sug][tuple] = true
	if first.After(s.last[sug]) {
		s.last[sug] = first
	}
}

func (s *state) subject(w *v1alpha1.WorkloadRef) *subject {
	k := wkey(w.Namespace, w.Kind, w.Name)
	sub := s.subjects[k]
	if sub == nil {
		sub = &subject{w: *w, egress: map[string]*rule{}, ingress: map[string]*rule{}}
		s.subjects[k] = sub
	} else if len(sub.w.Labels) == 0 && len(w.Labels) > 0 {
		sub.w.Labels = w.Labels
	}
	return sub
}

func addRule(m map[string]*rule, p peer, pk portKey, srcKey string, e *v1alpha1.FlowEdge) {
	r := m[p.key()]
	if r == nil {
		r = &rule{peer: p, ports: map[portKey]*agg{}}
		m[p.key()] = r
	}
	if r.ports[pk] == nil {
		r.ports[pk] = &agg{}
	}
	r.ports[pk].add(srcKey, e)
	r.all.add(srcKey, e)
}

func (s *state) addEdge(e *v1alpha1.FlowEdge) {
	src, err := s.peerOf(e.Source)
	if err != nil {
		s.global = append(s.global, fmt.Sprintf("edge source: %v", err))
		return
	}
	dst, err := s.peerOf(e.Destination)
	if err != nil {
		s.global = append(s.global, fmt.Sprintf("edge destination: %v", err))
		return
	}
	if e.Protocol == "" || e.Port <= 0 {
		s.global = append(s.global, fmt.Sprintf("edge %s -> %s: no protocol or port", src, dst))
		return
	}
	dnsZone := v1alpha1.PeerUnzoned
	if isDNS(e.Destination, e.Port) {
		if e.Destination.Workload != nil && e.Destination.Workload.Zone != "" {
			dnsZone = e.Destination.Workload.Zone
		}
		dst = peer{dns: true}
	}
	pk := portKey{e.Protocol, e.Port}
	tuple := src.key() + " " + dst.key() + " " + string(e.Protocol) + "/" + fmt.Sprint(e.Port)
	first := e.FirstSeen.Time
	if src.w != nil {
		sub := s.subject(src.w)
		if dst.dns {
			addRule(sub.egress, dst, portKey{v1alpha1.ProtocolUDP, 53}, src.key(), e)
		} else {
			addRule(sub.egress, dst, pk, src.key(), e)
		}
		s.touch(suggestionOf(src.w), tuple, first)
	}
	if dst.w != nil && !dst.dns {
		sub := s.subject(dst.w)
		addRule(sub.ingress, src, pk, src.key(), e)
		s.touch(suggestionOf(dst.w), tuple, first)
	}
	fz, tz := s.zoneOf(src), s.zoneOf(dst)
	if dst.dns {
		tz = dnsZone
	}
	if fz == tz || !isRealZone(fz) && !isRealZone(tz) {
		return
	}
	zk := [2]string{fz, tz}
	zr := s.zps[zk]
	if zr == nil {
		zr = &zoneRule{from: fz, to: tz, ports: map[portKey]*agg{}}
		s.zps[zk] = zr
	}
	pks := []portKey{pk}
	if dst.dns {
		pks = []portKey{{v1alpha1.ProtocolUDP, 53}, {v1alpha1.ProtocolTCP, 53}}
	}
	for _, k := range pks {
		if zr.ports[k] == nil {
			zr.ports[k] = &agg{}
		}
		zr.ports[k].add(src.key(), e)
	}
	zr.all.add(src.key(), e)
	for _, z := range []string{fz, tz} {
		if isRealZone(z) {
			s.touch(ZoneSuggestionName(z), tuple, first)
		}
	}
}

func isRealZone(z string) bool { return z != v1alpha1.PeerUnzoned && z != v1alpha1.PeerWorld }

func (s *state) result() Result {
	sugs := map[string]*Suggestion{}
	get := func(name string, scope v1alpha1.SuggestionScope) *Suggestion {
		if sg := sugs[name]; sg != nil {
			return sg
		}
		sg := &Suggestion{Name: name, Scope: scope}
		sugs[name] = sg
		return sg
	}
	scopeOf := func(w *v1alpha1.WorkloadRef) v1alpha1.SuggestionScope {
		if w.Zone != "" {
			return v1alpha1.SuggestionScope{Zone: w.Zone}
		}
		return v1alpha1.SuggestionScope{Namespace: w.Namespace}
	}
	// Selectors first: a peer whose selector is not exact drops its rules.
	sels := map[string]*metav1.LabelSelector{}
	selErr := map[string]string{}
	selFor := func(w *v1alpha1.WorkloadRef) (*metav1.LabelSelector, string) {
		k := wkey(w.Namespace, w.Kind, w.Name)
		if sel, ok := sels[k]; ok {
			return sel, selErr[k]
		}
		sel, err := s.selector(w)
		sels[k] = sel
		if err != nil {
			selErr[k] = err.Error()
		}
		return sel, selErr[k]
	}
	keys := make([]string, 0, len(s.subjects))
	for k := range s.subjects {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		sub := s.subjects[k]
		if isDNS(v1alpha1.EdgeEndpoint{Workload: &sub.w}, 53) {
			continue // kube-dns is a known peer, not a subject
		}
		name := suggestionOf(&sub.w)
		sg := get(name, scopeOf(&sub.w))
		sel, perr := selFor(&sub.w)
		if perr != "" {
			s.problem(name, fmt.Sprintf("no policy for %s %s/%s: %s", sub.w.Kind, sub.w.Namespace, sub.w.Name, perr))
			sg.MinimumRules += len(sub.egress) + len(sub.ingress)
			continue
		}
		np := networkingv1.NetworkPolicy{
			TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
			ObjectMeta: metav1.ObjectMeta{Namespace: sub.w.Namespace, Name: s.npName(&sub.w)},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: *sel,
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}},
		}
		policyRef := "NetworkPolicy/" + np.Namespace + "/" + np.Name
		for _, r := range sortedRules(sub.ingress) {
			sg.MinimumRules++
			npp, perr := s.npPeer(&sub.w, r.peer, selFor)
			if perr != "" {
				s.problem(name, fmt.Sprintf("no ingress rule on %s from %s: %s", policyRef, r.peer, perr))
				continue
			}
			ports := s.ports(r, s.wpods[wkey(sub.w.Namespace, sub.w.Kind, sub.w.Name)])
			np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{npp}, Ports: ports})
			sg.Rules = append(sg.Rules, v1alpha1.SuggestedRule{Policy: policyRef,
				Description: fmt.Sprintf("ingress to %s %s/%s from %s on %s", sub.w.Kind, sub.w.Namespace, sub.w.Name, r.peer, portsText(r.ports)),
				Evidence:    r.all.evidence()})
		}
		for _, r := range sortedRules(sub.egress) {
			sg.MinimumRules++
			if r.peer.dns {
				np.Spec.Egress = append(np.Spec.Egress, dnsRule())
				sg.Rules = append(sg.Rules, v1alpha1.SuggestedRule{Policy: policyRef,
					Description: fmt.Sprintf("egress from %s %s/%s to kube-dns on UDP/53 and TCP/53", sub.w.Kind, sub.w.Namespace, sub.w.Name),
					Evidence:    r.all.evidence()})
				continue
			}
			npp, perr := s.npPeer(&sub.w, r.peer, selFor)
			if perr != "" {
				s.problem(name, fmt.Sprintf("no egress rule on %s to %s: %s", policyRef, r.peer, perr))
				continue
			}
			var dpods []*Pod
			if r.peer.w != nil {
				dpods = s.wpods[r.peer.key()]
			}
			ports := s.ports(r, dpods)
			np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{npp}, Ports: ports})
			sg.Rules = append(sg.Rules, v1alpha1.SuggestedRule{Policy: policyRef,
				Description: fmt.Sprintf("egress from %s %s/%s to %s on %s", sub.w.Kind, sub.w.Namespace, sub.w.Name, r.peer, portsText(r.ports)),
				Evidence:    r.all.evidence()})
		}
		sg.NetworkPolicyRules += len(np.Spec.Ingress) + len(np.Spec.Egress)
		sg.NetworkPolicies = append(sg.NetworkPolicies, np)
	}
	zks := make([][2]string, 0, len(s.zps))
	for k := range s.zps {
		zks = append(zks, k)
	}
	sort.Slice(zks, func(i, j int) bool {
		if zks[i][0] != zks[j][0] {
			return zks[i][0] < zks[j][0]
		}
		return zks[i][1] < zks[j][1]
	})
	for _, k := range zks {
		zr := s.zps[k]
		zp := v1alpha1.ZonePolicy{
			TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "ZonePolicy"},
			ObjectMeta: metav1.ObjectMeta{Name: s.o.NamePrefix + zr.from + "-to-" + zr.to},
			Spec: v1alpha1.ZonePolicySpec{Priority: s.o.ZonePolicyPriority, From: []string{zr.from}, To: []string{zr.to},
				Action: v1alpha1.ActionPass},
		}
		for _, pk := range sortedPorts(zr.ports) {
			port := intstr.FromInt32(pk.port)
			zp.Spec.Ports = append(zp.Spec.Ports, v1alpha1.PolicyPort{Protocol: pk.proto, Port: &port})
		}
		for _, z := range []string{zr.from, zr.to} {
			if !isRealZone(z) {
				continue
			}
			sg := get(ZoneSuggestionName(z), v1alpha1.SuggestionScope{Zone: z})
			sg.ZonePolicies = append(sg.ZonePolicies, zp)
			sg.Rules = append(sg.Rules, v1alpha1.SuggestedRule{Policy: "ZonePolicy/" + zp.Name,
				Description: fmt.Sprintf("zone %s to zone %s on %s passes to NetworkPolicy", zr.from, zr.to, portsText(zr.ports)),
				Evidence:    zr.all.evidence()})
			if zr.from == zr.to {
				break
			}
		}
	}
	var res Result
	for name, sg := range sugs {
		sg.Tuples = len(s.tuples[name])
		sg.LastChange = s.last[name].UTC()
		sg.State = v1alpha1.SuggestionLearning
		if !sg.LastChange.IsZero() && s.o.Now.Sub(sg.LastChange) >= s.o.StableAfter {
			sg.State = v1alpha1.SuggestionStable
		}
		for p := range s.problems[name] {
			sg.Problems = append(sg.Problems, p)
		}
		sort.Strings(sg.Problems)
		sort.Slice(sg.NetworkPolicies, func(i, j int) bool {
			a, b := sg.NetworkPolicies[i], sg.NetworkPolicies[j]
			if a.Namespace != b.Namespace {
				return a.Namespace < b.Namespace
			}
			return a.Name < b.Name
		})
		sort.SliceStable(sg.Rules, func(i, j int) bool { return sg.Rules[i].Policy < sg.Rules[j].Policy })
		res.Suggestions = append(res.Suggestions, *sg)
	}
	sort.Slice(res.Suggestions, func(i, j int) bool { return res.Suggestions[i].Name < res.Suggestions[j].Name })
	res.Problems = dedupSorted(s.global)
	return res
}

func dedupSorted(in []string) []string {
	sort.Strings(in)
	var out []string
	for i, v := range in {
		if i == 0 || v != in[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func (s *state) npName(w *v1alpha1.WorkloadRef) string {
	n := s.o.NamePrefix + strings.ToLower(w.Kind) + "-" + w.Name
	if len(n) > 253 {
		n = n[:253]
	}
	return n
}

func dnsRule() networkingv1.NetworkPolicyEgressRule {
	udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
	p53 := intstr.FromInt32(53)
	return networkingv1.NetworkPolicyEgressRule{
		To: []networkingv1.NetworkPolicyPeer{{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{NamespaceLabel: DNSNamespace}},
			PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{DNSLabelKey: DNSLabelValue}},
		}},
		Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &p53}, {Protocol: &tcp, Port: &p53}},
	}
}

// npPeer renders p as seen from subject w.
func (s *state) npPeer(w *v1alpha1.WorkloadRef, p peer, selFor func(*v1alpha1.WorkloadRef) (*metav1.LabelSelector, string)) (networkingv1.NetworkPolicyPeer, string) {
	if p.w == nil {
		return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: p.cidr.String()}}, ""
	}
	sel, perr := selFor(p.w)
	if perr != "" {
		return networkingv1.NetworkPolicyPeer{}, perr
	}
	out := networkingv1.NetworkPolicyPeer{PodSelector: sel}
	if p.w.Namespace != w.Namespace {
		out.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{NamespaceLabel: p.w.Namespace}}
	}
	return out, ""
}

// ports renders a rule's ports, by name when every destination pod
// declares the same name for the number and protocol.
func (s *state) ports(r *rule, dpods []*Pod) []networkingv1.NetworkPolicyPort {
	var out []networkingv1.NetworkPolicyPort
	for _, pk := range sortedPorts(r.ports) {
		proto := corev1.Protocol(pk.proto)
		port := intstr.FromInt32(pk.port)
		if name := namedPort(dpods, pk); name != "" {
			port = intstr.FromString(name)
		}
		out = append(out, networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &port})
	}
	return out
}

func namedPort(pods []*Pod, pk portKey) string {
	name := ""
	for i, p := range pods {
		found := ""
		for _, cp := range p.Ports {
			proto := cp.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			if cp.ContainerPort == pk.port && string(proto) == string(pk.proto) && cp.Name != "" {
				found = cp.Name
				break
			}
		}
		if found == "" || (i > 0 && found != name) {
			return ""
		}
		name = found
	}
	return name
}

func sortedRules(m map[string]*rule) []*rule {
	out := make([]*rule, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].peer.key() < out[j].peer.key() })
	return out
}

func sortedPorts(m map[portKey]*agg) []portKey {
	out := make([]portKey, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].proto != out[j].proto {
			return out[i].proto < out[j].proto
		}
		return out[i].port < out[j].port
	})
	return out
}

func portsText(m map[portKey]*agg) string {
	var parts []string
	for _, pk := range sortedPorts(m) {
		parts = append(parts, fmt.Sprintf("%s/%d", pk.proto, pk.port))
	}
	return strings.Join(parts, ", ")
}

package policy

import (
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// Stats counts the engine's work since New, for incrementality tests and
// metrics.
type Stats struct {
	// EndpointsCompiled counts endpoint chain compilations.
	EndpointsCompiled int
	// SetsRebuilt counts address set content computations.
	SetsRebuilt int
	// SetsPatched counts zone sets patched at the addresses of pods that
	// changed zone, instead of rebuilt.
	SetsPatched int
	// SelectorEvaluations counts pod selector matches against one pod.
	SelectorEvaluations int
	// NodesRebuilt counts NodePolicy assemblies.
	NodesRebuilt int
}

// Engine is the cluster model and its compiled per-node policies. It is not
// safe for concurrent mutation; callers serialize.
type Engine struct {
	namespaces map[string]*nsInfo
	pods       map[string]*podInfo
	podsByNS   map[string]map[string]*podInfo
	podByIP    map[netip.Addr]*podInfo
	nextIdx    int32
	podsByIdx  []*podInfo // by podInfo.idx; nil for removed pods

	nps         map[string]*npInfo
	npsByNS     map[string][]*npInfo // sorted by name
	npsByAnchor map[string]map[string][]*npInfo
	npsNoAnchor map[string][]*npInfo
	podsByLabel map[string]map[string]map[string]*podInfo // ns -> "k=v" -> name -> pod
	zones       map[string]*zoneInfo
	zoneList    []*zoneInfo // by creation, then name
	zps         map[string]*zpInfo
	zpList      []*zpInfo // by priority, then name
	quars       map[string]*quarInfo
	quarList    []*quarInfo // by key

	nodes        map[string]*nodeInfo
	ups          map[string]*upInfo // kind/name
	upAdmin      []*upInfo          // by priority, kind, name
	upBaseline   []*upInfo          // by priority, kind, name
	upAdminCount int
	upNodePeers  bool

	selIntern map[string]*podSel
	npSerial  uint64
	selCache  map[string]*selInfo // see cachedSelector
	dnsSel    *podSel

	c     compileState
	stats Stats
}

// New returns an empty engine.
func New() *Engine {
	e := &Engine{
		namespaces:  map[string]*nsInfo{},
		pods:        map[string]*podInfo{},
		podsByNS:    map[string]map[string]*podInfo{},
		podByIP:     map[netip.Addr]*podInfo{},
		nps:         map[string]*npInfo{},
		npsByAnchor: map[string]map[string][]*npInfo{},
		npsNoAnchor: map[string][]*npInfo{},
		podsByLabel: map[string]map[string]map[string]*podInfo{},
		npsByNS:     map[string][]*npInfo{},
		zones:       map[string]*zoneInfo{},
		zps:         map[string]*zpInfo{},
		quars:       map[string]*quarInfo{},
		nodes:       map[string]*nodeInfo{},
		ups:         map[string]*upInfo{},
		selIntern:   map[string]*podSel{},
		selCache:    map[string]*selInfo{},
	}
	e.dnsSel = e.internSel(&podSel{fixedNS: "kube-system", podSel: labels.SelectorFromSet(labels.Set{"k8s-app": "kube-dns"})})
	e.c.init()
	e.globalChanged() // nothing is compiled yet
	return e
}

// Stats returns the work counters.
func (e *Engine) Stats() Stats { return e.stats }

// SetNamespace adds or updates a namespace. The label
// kubernetes.io/metadata.name is always set to the name, as the API server
// does.
func (e *Engine) SetNamespace(ns *corev1.Namespace) {
	l := labels.Set(maps(ns.Labels))
	l[corev1.LabelMetadataName] = ns.Name
	old := e.namespaces[ns.Name]
	if old != nil && labels.Equals(old.labels, l) {
		return
	}
	e.namespaces[ns.Name] = &nsInfo{name: ns.Name, labels: l}
	e.namespaceChanged(ns.Name)
}

// DeleteNamespace removes a namespace's labels; its pods stay until they
// are deleted themselves.
func (e *Engine) DeleteNamespace(name string) {
	if _, ok := e.namespaces[name]; !ok {
		return
	}
	delete(e.namespaces, name)
	e.namespaceChanged(name)
}

func (e *Engine) namespaceChanged(name string) {
	for _, p := range e.podsByNS[name] {
		old := *p
		e.assignZone(p)
		e.podChanged(&old, p, true)
	}
}

// SetPod adds or updates a pod. Pods without IPs, hostNetwork pods and
// Succeeded or Failed pods are not endpoints: setting one removes any
// earlier version.
func (e *Engine) SetPod(p *corev1.Pod) {
	pi := convertPod(p)
	ns := p.Namespace
	if ns == "" {
		ns = "default"
	}
	key := ns + "/" + p.Name
	old := e.pods[key]
	if pi == nil {
		if old != nil {
			e.removePod(old)
		}
		return
	}
	if old != nil {
		e.indexPod(old, false)
		pi.idx = old.idx
		for _, a := range old.ips {
			if e.podByIP[a] == old {
				delete(e.podByIP, a)
			}
		}
	} else {
		pi.idx = e.nextIdx
		e.nextIdx++
		e.podsByIdx = append(e.podsByIdx, nil)
	}
	e.podsByIdx[pi.idx] = pi
	e.pods[key] = pi
	if e.podsByNS[ns] == nil {
		e.podsByNS[ns] = map[string]*podInfo{}
	}
	e.podsByNS[ns][p.Name] = pi
	e.indexPod(pi, true)
	for _, a := range pi.ips {
		e.podByIP[a] = pi
	}
	e.assignZone(pi)
	e.assignQuarantine(pi)
	e.podChanged(old, pi, false)
}

// DeletePod removes a pod.
func (e *Engine) DeletePod(namespace, name string) {
	if p := e.pods[namespace+"/"+name]; p != nil {
		e.removePod(p)
	}
}

func (e *Engine) removePod(p *podInfo) {
	e.indexPod(p, false)
	delete(e.pods, p.key)
	e.podsByIdx[p.idx] = nil
	delete(e.podsByNS[p.ns], p.name)
	if len(e.podsByNS[p.ns]) == 0 {
		delete(e.podsByNS, p.ns)
	}
	for _, a := range p.ips {
		if e.podByIP[a] == p {
			delete(e.podByIP, a)
		}
	}
	e.podChanged(p, nil, false)
}

func (e *Engine) assignZone(p *podInfo) {
	p.zone = ""
	for _, z := range e.zoneList {
		if z.pods && e.zoneSelects(z, p) {
			p.zone = z.name
			return
		}
	}
}

func (e *Engine) zoneSelects(z *zoneInfo, p *podInfo) bool {
	e.stats.SelectorEvaluations++
	if !z.pods {
		return false
	}
	if !z.podSel.Matches(p.labels) {
		return false
	}
	return z.nsSel.Matches(e.nsLabels(p.ns))
}

func (e *Engine) nsLabels(ns string) labels.Set {
	if n := e.namespaces[ns]; n != nil {
		return n.labels
	}
	return labels.Set{corev1.LabelMetadataName: ns}
}

func (e *Engine) assignQuarantine(p *podInfo) {
	p.quar = nil
	for _, q := range e.quarList {
		if q.selects(p) {
			p.quar = append(p.quar, q)
		}
	}
}

// SetNetworkPolicy adds or updates a NetworkPolicy. An invalid policy is
// rejected with a *FieldError and removed from the model.
func (e *Engine) SetNetworkPolicy(np *networkingv1.NetworkPolicy) error {
	n, ferr := e.convertNP(np)
	ns := np.Namespace
	if ns == "" {
		ns = "default"
	}
	key := ns + "/" + np.Name
	old := e.nps[key]
	if ferr != nil {
		if old != nil {
			e.DeleteNetworkPolicy(ns, np.Name)
		}
		return ferr
	}
	if old != nil {
		e.indexNP(old, false)
	}
	e.indexNP(n, true)
	e.nps[key] = n
	// the list is shared with no one; keep it sorted by name
	list := e.npsByNS[ns]
	i, found := slices.BinarySearchFunc(list, np.Name, func(x *npInfo, name string) int { return strings.Compare(x.name, name) })
	if found {
		list[i] = n
	} else {
		list = slices.Insert(list, i, n)
	}
	e.npsByNS[ns] = list
	e.npChanged(old, n)
	return nil
}

// DeleteNetworkPolicy removes a NetworkPolicy.
func (e *Engine) DeleteNetworkPolicy(namespace, name string) {
	key := namespace + "/" + name
	old := e.nps[key]
	if old == nil {
		return
	}
	delete(e.nps, key)
	e.indexNP(old, false)
	e.npsByNS[namespace] = slices.DeleteFunc(e.npsByNS[namespace], func(x *npInfo) bool { return x.key == key })
	if len(e.npsByNS[namespace]) == 0 {
		delete(e.npsByNS, namespace)
	}
	e.npChanged(old, nil)
}

// SetZone adds or updates a Zone.
func (e *Engine) SetZone(z *v1alpha1.Zone) error {
	zi, ferr := e.convertZone(z)
	if ferr != nil {
		if _, ok := e.zones[z.Name]; ok {
			e.DeleteZone(z.Name)
		}
		return ferr
	}
	old := e.zones[z.Name]
	e.zones[z.Name] = zi
	e.zoneChanged(old, zi)
	return nil
}

// DeleteZone removes a Zone.
func (e *Engine) DeleteZone(name string) {
	old, ok := e.zones[name]
	if !ok {
		return
	}
	delete(e.zones, name)
	e.zoneChanged(old, nil)
}

// zoneChanged follows a change of one zone from old to cur (either may be
// nil). A chain's zone boundary depends only on its endpoint's own zone
// (and that zone's mode) and on whether any zone exists: the members of
// other zones are in the shared sets ZoneMode/Enforce and
// ZoneMode/AuditOrLearn. So besides the zone sets, which are rebuilt, only
// these recompile: the endpoints that change zone; the zone's members when
// it appears, goes, or changes mode or intra-zone posture; the endpoints of
// the zones that ZonePolicies pair with it when it appears or goes (their
// rules name only existing zones), or, when it changes mode, the unzoned
// endpoints and those of Audit/Learn zones that Deny ZonePolicies pair
// with it (their rules split by the flow's effective mode, see
// zpInfo.splitsByMode); and quarantined endpoints. The first zone to
// appear or the last to go adds or removes the boundary rules of every
// chain: then everything recompiles.
func (e *Engine) zoneChanged(old, cur *zoneInfo) {
	e.sortZones()
	c := &e.c
	if old == nil && len(e.zones) == 1 || cur == nil && len(e.zones) == 0 {
		for _, p := range e.pods {
			e.assignZone(p)
		}
		e.globalChanged()
		return
	}
	bulk := c.all && c.allStale
	for _, p := range e.pods {
		was := *p
		e.assignZone(p)
		if p.zone != was.zone && !bulk {
			e.markPodChanged(&was, p, p.key, false, false)
		}
	}
	if bulk {
		return
	}
	for s := range c.zoneSets {
		c.staleSets[s] = true
	}
	// quarantined endpoints expand allow-list zones over pods
	for _, q := range c.quarPods {
		c.dirty[q.key] = true
	}
	z := cur
	if z == nil {
		z = old
	}
	existence := old == nil || cur == nil
	modeChanged := existence || old.audit() != cur.audit()
	if modeChanged || old.intraDeny != cur.intraDeny {
		for _, p := range e.pods {
			if p.zone == z.name {
				c.dirty[p.key] = true
			}
		}
	}
	if !modeChanged {
		return
	}
	var names []string
	for _, zp := range e.zpList {
		if !existence && !zp.splitsByMode() {
			continue
		}
		if slices.Contains(zp.from, z.name) || slices.Contains(zp.to, z.name) {
			names = append(append(names, zp.from...), zp.to...)
		}
	}
	if len(names) == 0 {
		return
	}
	for _, p := range e.pods {
		if !slices.Contains(names, p.zoneName()) {
			continue
		}
		if pz := e.zones[p.zone]; !existence && pz != nil && !pz.audit() {
			// the flows of an endpoint in an Enforce zone are enforced
			// whatever the peer zone's mode
			continue
		}
		c.dirty[p.key] = true
	}
}

// sortZones orders the zones by age and carves the networks that older
// zones keep out of younger ones.
func (e *Engine) sortZones() {
	e.zoneList = e.zoneList[:0]
	for _, z := range e.zones {
		e.zoneList = append(e.zoneList, z)
	}
	sort.Slice(e.zoneList, func(i, j int) bool {
		a, b := e.zoneList[i], e.zoneList[j]
		if !a.created.Equal(b.created) {
			return a.created.Before(b.created)
		}
		return a.name < b.name
	})
	var taken []ipRange
	for _, z := range e.zoneList {
		z.effNets = z.nets
		if len(z.nets) > 0 && len(taken) > 0 {
			z.effNets = subtract(z.nets, taken)
		}
		taken = normalize(append(slices.Clone(taken), z.nets...))
	}
}

// SetZonePolicy adds or updates a ZonePolicy.
func (e *Engine) SetZonePolicy(p *v1alpha1.ZonePolicy) error {
	zp, ferr := e.convertZonePolicy(p)
	if ferr != nil {
		if _, ok := e.zps[p.Name]; ok {
			e.DeleteZonePolicy(p.Name)
		}
		return ferr
	}
	old := e.zps[p.Name]
	e.zps[p.Name] = zp
	e.zonePoliciesChanged(old, zp)
	return nil
}

// DeleteZonePolicy removes a ZonePolicy.
func (e *Engine) DeleteZonePolicy(name string) {
	old, ok := e.zps[name]
	if !ok {
		return
	}
	delete(e.zps, name)
	e.zonePoliciesChanged(old, nil)
}

// zonePoliciesChanged follows a change of one ZonePolicy from old to cur
// (either may be nil). Its rules appear only in the egress chains of
// endpoints in its from zones and the ingress chains of endpoints in its
// to zones, so only those recompile.
func (e *Engine) zonePoliciesChanged(old, cur *zpInfo) {
	e.zpList = e.zpList[:0]
	for _, z := range e.zps {
		e.zpList = append(e.zpList, z)
	}
	sort.Slice(e.zpList, func(i, j int) bool {
		a, b := e.zpList[i], e.zpList[j]
		if a.prio != b.prio {
			return a.prio < b.prio
		}
		return a.name < b.name
	})
	c := &e.c
	if c.all {
		return
	}
	var names []string
	for _, zp := range []*zpInfo{old, cur} {
		if zp != nil {
			names = append(append(names, zp.from...), zp.to...)
		}
	}
	for _, p := range e.pods {
		if slices.Contains(names, p.zoneName()) {
			c.dirty[p.key] = true
		}
	}
	for s := range c.zoneSets {
		if d := c.sets[s].desc; d.kind == setZPNamed && (old != nil && d.zpName == old.name || cur != nil && d.zpName == cur.name) {
			c.staleSets[s] = true
		}
	}
}

// SetQuarantine adds or updates a Quarantine. A quarantine with
// spec.released, or with status.phase Expired or Released, is inactive: it
// is kept but has no effect.
func (e *Engine) SetQuarantine(q *v1alpha1.Quarantine) error {
	qi, ferr := e.convertQuarantine(q)
	if ferr != nil {
		ns := q.Namespace
		if ns == "" {
			ns = "default"
		}
		if _, ok := e.quars[ns+"/"+q.Name]; ok {
			e.DeleteQuarantine(ns, q.Name)
		}
		return ferr
	}
	e.quars[qi.key] = qi
	e.quarantinesChanged(qi.key)
	return nil
}

// DeleteQuarantine removes a Quarantine.
func (e *Engine) DeleteQuarantine(namespace, name string) {
	key := namespace + "/" + name
	if _, ok := e.quars[key]; !ok {
		return
	}
	delete(e.quars, key)
	e.quarantinesChanged(key)
}

// quarantinesChanged follows a change of the quarantine with the key.
// Only the pods whose quarantines change, the endpoints their allow-lists
// admit or admitted, and the quarantined endpoints recompile; see
// markQuarantinedChanged.
func (e *Engine) quarantinesChanged(key string) {
	e.quarList = e.quarList[:0]
	for _, q := range e.quars {
		e.quarList = append(e.quarList, q)
	}
	sort.Slice(e.quarList, func(i, j int) bool { return e.quarList[i].key < e.quarList[j].key })
	c := &e.c
	bulk := c.all && c.allStale
	var changed []*podInfo
	for _, p := range e.pods {
		was := p.quar
		e.assignQuarantine(p)
		if !bulk && !slices.Equal(was, p.quar) {
			changed = append(changed, p)
		}
	}
	if bulk {
		return
	}
	for _, p := range changed {
		e.markQuarantinedChanged(p.key, p)
	}
	for _, q := range c.quarPods {
		c.dirty[q.key] = true
	}
	// the entry sets of the quarantine follow its new allow-lists
	for name := range c.qSets[key] {
		s := c.sets[name]
		if s == nil {
			continue
		}
		for _, sel := range e.descSels(s.desc) {
			e.watchSel(sel)
			addTo(c.selUsers, sel, name)
		}
		c.staleSets[name] = true
	}
}

// ---- queries ----

// Nodes returns the sorted names of nodes that host at least one endpoint.
func (e *Engine) Nodes() []string {
	seen := map[string]bool{}
	for _, p := range e.pods {
		if p.node != "" {
			seen[p.node] = true
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// ZoneInfo is a zone's membership facts.
type ZoneInfo struct {
	// Exists is false for a zone the engine does not know.
	Exists bool
	// Members is the number of member pods (pod zones) or the number of
	// networks (CIDR zones).
	Members int
	// ConflictsWith names older zones that keep endpoints this zone also
	// claims, sorted.
	ConflictsWith []string
}

// ZoneStatus returns a zone's member count and conflicts.
func (e *Engine) ZoneStatus(name string) ZoneInfo {
	z := e.zones[name]
	if z == nil {
		return ZoneInfo{}
	}
	info := ZoneInfo{Exists: true}
	conf := map[string]bool{}
	if z.pods {
		for _, p := range e.pods {
			if p.zone == name {
				info.Members++
				continue
			}
			if p.zone != "" && e.zoneSelects(z, p) {
				conf[p.zone] = true
			}
		}
	} else {
		info.Members = len(toPrefixes(z.effNets))
		for _, o := range e.zoneList {
			if o == z {
				break
			}
			if len(o.nets) > 0 && len(intersect(o.nets, z.nets)) > 0 {
				conf[o.name] = true
			}
		}
	}
	for c := range conf {
		info.ConflictsWith = append(info.ConflictsWith, c)
	}
	sort.Strings(info.ConflictsWith)
	return info
}

// PodRef names a pod and its node.
type PodRef struct {
	Namespace string
	Name      string
	Node      string
}

// QuarantinedPods returns the endpoints an active quarantine isolates,
// sorted by namespace and name.
func (e *Engine) QuarantinedPods(namespace, name string) []PodRef {
	q := e.quars[namespace+"/"+name]
	if q == nil || !q.active {
		return nil
	}
	var out []PodRef
	for _, p := range e.podsByNS[namespace] {
		if q.selects(p) {
			out = append(out, PodRef{Namespace: p.ns, Name: p.name, Node: p.node})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ObjectRef names a policy object: Kind is NetworkPolicy, Zone,
// ZonePolicy or Quarantine; Namespace is empty for cluster-scoped kinds.
type ObjectRef struct {
	Kind      string
	Namespace string
	Name      string
}

func (r ObjectRef) prefix() string {
	if r.Namespace == "" {
		return r.Kind + "/" + r.Name + "/"
	}
	return r.Kind + "/" + r.Namespace + "/" + r.Name + "/"
}

// ObjectNodes returns the sorted nodes whose NodePolicy contains rules
// derived from the object. A Zone's are the nodes holding rules or sets
// named after it and every node holding zone boundary rules: the boundary
// of an endpoint outside the zone judges the zone's members through the
// ZoneMode/* sets or a negated set of its own zone, without naming it.
func (e *Engine) ObjectNodes(ref ObjectRef) []string {
	e.flush()
	var ids []string
	switch ref.Kind {
	case "Zone":
		ids = []string{"ZoneBoundary/" + ref.Name, "ZoneBaseline/" + ref.Name}
	case "ZonePolicy":
		ids = []string{"ZonePolicy/" + ref.Name}
	}
	pre := ref.prefix()
	nodes := map[string]bool{}
	for key, ep := range e.c.eps {
		p := e.pods[key]
		if p == nil || p.node == "" || nodes[p.node] {
			continue
		}
		found := false
		for _, ch := range []*ir.Chain{&ep.ep.Ingress, &ep.ep.Egress} {
			for _, t := range ch.Tiers {
				for _, r := range t.Rules {
					if strings.HasPrefix(r.ID+"/", pre) || slices.Contains(ids, r.ID) {
						found = true
					}
					if ref.Kind == "Zone" && IsBoundaryRuleID(r.ID) {
						found = true
					}
				}
			}
		}
		if !found && ref.Kind == "Zone" {
			// a zone's membership sets are referenced by ZonePolicies
			for _, s := range ep.sets {
				if s.name == zoneSetName(ref.Name) {
					found = true
				}
			}
		}
		if found {
			nodes[p.node] = true
		}
	}
	out := make([]string, 0, len(nodes))
	for n := range nodes {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

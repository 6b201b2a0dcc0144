package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/stream"
)

// Kinds tracked for status, as policy.ObjectRef.Kind.
const (
	KindZone          = "Zone"
	KindZonePolicy    = "ZonePolicy"
	KindQuarantine    = "Quarantine"
	KindNetworkPolicy = "NetworkPolicy"
)

// Model is the controller's in-memory state: the engine, the hub it
// publishes to, and what each policy object needs for status.
type Model struct {
	log      logr.Logger
	hub      *stream.Hub
	debounce time.Duration
	metrics  *Metrics
	now      func() time.Time

	mu   sync.Mutex
	eng  *policy.Engine
	objs map[policy.ObjectRef]*objTrack
	// changedObjs are the tracked objects whose t.changed is set, so a
	// publish retracks them without scanning every object.
	changedObjs map[policy.ObjectRef]struct{}
	k8sNode     map[string]bool // Node objects
	pending     map[string]bool // nodes to publish besides the engine's dirty ones
	// podNodes are the nodes of pods changed since the last publish: a
	// publish compiles and sends them first (see takeDirtyLocked).
	podNodes map[string]bool
	events   int // changes since the last publish
	// nodeRefs and refNodes index which objects' rules each published
	// node policy holds (derived from rule IDs and zone set names).
	nodeRefs map[string]map[policy.ObjectRef]struct{}
	refNodes map[policy.ObjectRef]map[string]struct{}
	// zones are the tracked Zones: every one of them is enforced on the
	// nodes of boundaryRef besides its own (see refsOf).
	zones   map[policy.ObjectRef]struct{}
	nodeGen map[string]uint64
	// waiting holds, per node, the objects whose required generation on
	// it (objTrack.required) the node has not acknowledged yet, so an
	// ack notifies only the objects whose enforcement it can change.
	waiting map[string]map[policy.ObjectRef]uint64
	// hints are endpoint hints from agents; bare are pods without status
	// IPs that a hint may complete (see Hint).
	hints map[string]podHint
	bare  map[string]*corev1.Pod

	kick chan struct{}

	// notify, when set, is told about objects whose status may have
	// changed. It must not block.
	notifyMu sync.Mutex
	notify   func(policy.ObjectRef)
}

type objTrack struct {
	acceptErr string
	changed   bool
	// required is, per desired node, the first generation that contains
	// the object's current form.
	required   map[string]uint64
	enforcedAt map[string]time.Time
}

// NewModel returns a model publishing to hub. debounce coalesces bursts
// of changes into one publish.
func NewModel(hub *stream.Hub, debounce time.Duration, m *Metrics, log logr.Logger) *Model {
	if m == nil {
		m = NewMetrics(nil)
	}
	md := &Model{
		log: log.WithName("model"), hub: hub, debounce: debounce, metrics: m, now: time.Now,
		eng: policy.New(), objs: map[policy.ObjectRef]*objTrack{}, changedObjs: map[policy.ObjectRef]struct{}{}, k8sNode: map[string]bool{}, pending: map[string]bool{}, podNodes: map[string]bool{},
		nodeRefs: map[string]map[policy.ObjectRef]struct{}{}, refNodes: map[policy.ObjectRef]map[string]struct{}{}, zones: map[policy.ObjectRef]struct{}{}, nodeGen: map[string]uint64{}, waiting: map[string]map[policy.ObjectRef]uint64{},
		hints: map[string]podHint{}, bare: map[string]*corev1.Pod{},
		kick: make(chan struct{}, 1),
	}
	hub.SetOnAck(md.onAck)
	return md
}

// Hub returns the hub the model publishes to.
func (m *Model) Hub() *stream.Hub { return m.hub }

// SetNotify registers the status notifier.
func (m *Model) SetNotify(f func(policy.ObjectRef)) {
	m.notifyMu.Lock()
	m.notify = f
	m.notifyMu.Unlock()
}

func (m *Model) notifyRef(ref policy.ObjectRef) {
	m.notifyMu.Lock()
	f := m.notify
	m.notifyMu.Unlock()
	if f != nil {
		f(ref)
	}
}

func (m *Model) changed() {
	m.events++
	m.metrics.QueueDepth.Set(float64(m.events))
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (m *Model) track(ref policy.ObjectRef, err error) {
	t := m.objs[ref]
	if t == nil {
		t = &objTrack{required: map[string]uint64{}, enforcedAt: map[string]time.Time{}}
		m.objs[ref] = t
	}
	t.acceptErr = errString(err)
	t.changed = true
	m.changedObjs[ref] = struct{}{}
}

// Upsert feeds one watched object into the engine.
func (m *Model) Upsert(obj any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch o := obj.(type) {
	case *corev1.Pod:
		m.podNodes[o.Spec.NodeName] = true
		m.eng.SetPod(m.hintedLocked(o))
	case *corev1.Namespace:
		m.eng.SetNamespace(o)
	case *corev1.Node:
		if !m.k8sNode[o.Name] {
			m.k8sNode[o.Name] = true
			m.pending[o.Name] = true
		}
		m.eng.SetNode(o)
	case *networkingv1.NetworkPolicy:
		m.track(policy.ObjectRef{Kind: KindNetworkPolicy, Namespace: o.Namespace, Name: o.Name}, m.eng.SetNetworkPolicy(o))
	case *v1alpha1.Zone:
		ref := policy.ObjectRef{Kind: KindZone, Name: o.Name}
		m.zones[ref] = struct{}{}
		m.track(ref, m.eng.SetZone(o))
	case *v1alpha1.ZonePolicy:
		m.track(policy.ObjectRef{Kind: KindZonePolicy, Name: o.Name}, m.eng.SetZonePolicy(o))
	case *v1alpha1.Quarantine:
		m.track(policy.ObjectRef{Kind: KindQuarantine, Namespace: o.Namespace, Name: o.Name}, m.eng.SetQuarantine(o))
	default:
		if !m.upsertUpstream(obj) {
			m.log.Info("ignoring object of unexpected type", "type", fmt.Sprintf("%T", obj))
			return
		}
	}
	m.changed()
}

// Delete removes one watched object from the engine.
func (m *Model) Delete(obj any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch o := obj.(type) {
	case *corev1.Pod:
		m.podNodes[o.Spec.NodeName] = true
		m.forgetHintLocked(o.Namespace, o.Name)
		m.eng.DeletePod(o.Namespace, o.Name)
	case *corev1.Namespace:
		m.eng.DeleteNamespace(o.Name)
	case *corev1.Node:
		delete(m.k8sNode, o.Name)
		m.pending[o.Name] = true
		m.eng.DeleteNode(o.Name)
	case *networkingv1.NetworkPolicy:
		m.eng.DeleteNetworkPolicy(o.Namespace, o.Name)
		delete(m.objs, policy.ObjectRef{Kind: KindNetworkPolicy, Namespace: o.Namespace, Name: o.Name})
	case *v1alpha1.Zone:
		m.eng.DeleteZone(o.Name)
		delete(m.objs, policy.ObjectRef{Kind: KindZone, Name: o.Name})
		delete(m.zones, policy.ObjectRef{Kind: KindZone, Name: o.Name})
	case *v1alpha1.ZonePolicy:
		m.eng.DeleteZonePolicy(o.Name)
		delete(m.objs, policy.ObjectRef{Kind: KindZonePolicy, Name: o.Name})
	case *v1alpha1.Quarantine:
		m.eng.DeleteQuarantine(o.Namespace, o.Name)
		delete(m.objs, policy.ObjectRef{Kind: KindQuarantine, Namespace: o.Namespace, Name: o.Name})
	default:
		if !m.deleteUpstream(obj) {
			return
		}
	}
	m.changed()
}

// Run publishes after changes until ctx ends, at most once per debounce
// interval: a change after a quiet interval is published at once, and
// changes that arrive within the interval after a publish wait for its
// end and are published together.
func (m *Model) Run(ctx context.Context) error {
	var last time.Time // end of the previous publish
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.kick:
		}
		if wait := m.debounce - time.Since(last); m.debounce > 0 && wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		m.Publish()
		last = time.Now()
	}
}

// Publish recompiles the dirty nodes, publishes their policies and
// refreshes status tracking. Run calls it; tests and start-up may too.
func (m *Model) Publish() {
	var notify []policy.ObjectRef
	m.mu.Lock()
	start := m.now()
	dirty := m.takeDirtyLocked()
	touched := map[policy.ObjectRef]bool{}
	for _, n := range dirty {
		delete(m.pending, n)
		np := m.eng.NodePolicy(n)
		m.publishLocked(n, np, touched)
	}
	for n := range m.pending {
		np := m.eng.NodePolicy(n)
		if np == nil || (len(np.Endpoints) == 0 && !m.k8sNode[n]) {
			// No pods and no Node object: the node is gone.
			m.publishLocked(n, &ir.NodePolicy{Node: n}, touched)
			m.hub.Forget(n)
			delete(m.nodeGen, n)
		} else {
			m.publishLocked(n, np, touched)
		}
	}
	clear(m.pending)
	m.hub.EndRound()
	m.events = 0
	m.metrics.QueueDepth.Set(0)
	m.metrics.ComputeSeconds.Observe(m.now().Sub(start).Seconds())
	notify = m.retrackLocked(touched)
	m.mu.Unlock()
	for _, r := range notify {
		m.notifyRef(r)
	}
}

// takeDirtyLocked returns the nodes to recompile, the nodes of changed
// pods first: their endpoints changed and the pod's own traffic waits for
// its node, while the other nodes usually see only set members move.
// Each commit starts that node's send at once, so this is the order in
// which the nodes' deltas leave.
func (m *Model) takeDirtyLocked() []string {
	dirty := m.eng.TakeDirtyNodes()
	if len(m.podNodes) > 0 {
		sort.SliceStable(dirty, func(i, j int) bool { return m.podNodes[dirty[i]] && !m.podNodes[dirty[j]] })
		clear(m.podNodes)
	}
	return dirty
}

// publishLocked publishes one node's policy and, when its generation
// moved, re-indexes which objects it holds, marking in touched the
// objects that gained or lost the node.
func (m *Model) publishLocked(node string, np *ir.NodePolicy, touched map[policy.ObjectRef]bool) {
	gen, d := m.hub.PublishDelta(node, np)
	if g, ok := m.nodeGen[node]; ok && g == gen {
		return
	}
	m.nodeGen[node] = gen
	if d != nil && len(d.GetUpsertedEndpoints())+len(d.GetRemovedEndpoints())+len(d.GetUpsertedSets())+len(d.GetRemovedSets()) == 0 {
		// Only set members changed: the node holds the same objects'
		// rules as before, in the same form.
		return
	}
	refs := refsOf(np)
	old := m.nodeRefs[node]
	for r := range old {
		if _, ok := refs[r]; !ok {
			delete(m.refNodes[r], node)
			if len(m.refNodes[r]) == 0 {
				delete(m.refNodes, r)
			}
			touched[r] = true
		}
	}
	for r := range refs {
		if _, ok := old[r]; !ok {
			if m.refNodes[r] == nil {
				m.refNodes[r] = map[string]struct{}{}
			}
			m.refNodes[r][node] = struct{}{}
		}
		touched[r] = true // its compiled form on this node may have changed
	}
	if len(refs) == 0 {
		delete(m.nodeRefs, node)
	} else {
		m.nodeRefs[node] = refs
	}
}

// boundaryRef stands for the zone boundary in refsOf: a node whose chains
// hold boundary rules enforces every zone's boundary. The boundary rules
// of an endpoint outside a zone name that zone nowhere: they judge its
// members through the sets of all zones of a mode (ZoneMode/Enforce,
// ZoneMode/AuditOrLearn) or of everything outside the endpoint's own zone
// (a negated Zones/<own zone>). It is no object: retrackLocked adds its
// nodes to every Zone's.
var boundaryRef = policy.ObjectRef{Kind: "ZoneBoundary"}

// refsOf returns the objects whose rules a node policy holds, from the
// rule IDs ("Kind/[namespace/]name/...", "ZoneBoundary/zone",
// "ZoneBaseline/zone"; any zone boundary rule adds boundaryRef) and the
// zone membership sets ("Zones/zone") it references. It mirrors
// policy.Engine.ObjectNodes without scanning every endpoint of the
// cluster.
func refsOf(np *ir.NodePolicy) map[policy.ObjectRef]struct{} {
	out := map[policy.ObjectRef]struct{}{}
	if np == nil {
		return out
	}
	last := ""
	for i := range np.Endpoints {
		for _, ch := range []*ir.Chain{&np.Endpoints[i].Ingress, &np.Endpoints[i].Egress} {
			for _, t := range ch.Tiers {
				for _, r := range t.Rules {
					if r.ID == last {
						continue
					}
					last = r.ID
					if ref, ok := refOfRuleID(r.ID); ok {
						out[ref] = struct{}{}
					}
					if policy.IsBoundaryRuleID(r.ID) {
						out[boundaryRef] = struct{}{}
					}
				}
			}
		}
	}
	for _, s := range np.Sets {
		if z, ok := strings.CutPrefix(s.Name, "Zones/"); ok {
			out[policy.ObjectRef{Kind: KindZone, Name: z}] = struct{}{}
		}
	}
	return out
}

// refOfRuleID parses a rule ID without allocating: it runs for every
// rule of a republished node.
func refOfRuleID(id string) (policy.ObjectRef, bool) {
	kind, rest, ok := strings.Cut(id, "/")
	if !ok {
		return policy.ObjectRef{}, false
	}
	first, rest, more := strings.Cut(rest, "/")
	switch kind {
	case "ZoneBoundary", "ZoneBaseline":
		return policy.ObjectRef{Kind: KindZone, Name: first}, true
	case KindZonePolicy:
		return policy.ObjectRef{Kind: KindZonePolicy, Name: first}, true
	case policy.KindClusterNetworkPolicy, policy.KindAdminNetworkPolicy, policy.KindBaselineAdminNetworkPolicy:
		return policy.ObjectRef{Kind: kind, Name: first}, true
	case KindNetworkPolicy, KindQuarantine:
		if !more {
			return policy.ObjectRef{}, false
		}
		name, _, _ := strings.Cut(rest, "/")
		return policy.ObjectRef{Kind: kind, Namespace: first, Name: name}, true
	}
	return policy.ObjectRef{}, false
}

// retrackLocked updates, for changed objects and those whose nodes were
// republished, the nodes they must be enforced on and the generation each
// must reach: the first generation that contains the object's current
// form.
func (m *Model) retrackLocked(touched map[policy.ObjectRef]bool) []policy.ObjectRef {
	var out []policy.ObjectRef
	for ref := range m.changedObjs {
		touched[ref] = true
	}
	clear(m.changedObjs)
	if touched[boundaryRef] {
		for ref := range m.zones {
			touched[ref] = true
		}
	}
	for ref := range touched {
		t := m.objs[ref]
		if t == nil {
			continue
		}
		want := m.refNodes[ref]
		if ref.Kind == KindZone {
			want = m.zoneNodesLocked(ref)
		}
		moved := t.changed
		for n := range want {
			g := m.hub.Generation(n)
			if old, ok := t.required[n]; !ok || (t.changed && old != g) {
				t.required[n] = g
				delete(t.enforcedAt, n)
				m.waitLocked(n, ref, g)
				moved = true
			}
		}
		for n := range t.required {
			if _, ok := want[n]; !ok {
				delete(t.required, n)
				delete(t.enforcedAt, n)
				m.unwaitLocked(n, ref)
				moved = true
			}
		}
		t.changed = false
		if moved {
			out = append(out, ref)
		}
	}
	return out
}

// zoneNodesLocked returns the nodes that enforce a zone: those holding
// its rules or sets by name, and those holding any zone boundary rule.
func (m *Model) zoneNodesLocked(ref policy.ObjectRef) map[string]struct{} {
	own, all := m.refNodes[ref], m.refNodes[boundaryRef]
	if len(own) == 0 {
		return all
	}
	if len(all) == 0 {
		return own
	}
	out := make(map[string]struct{}, len(all)+len(own))
	for n := range all {
		out[n] = struct{}{}
	}
	for n := range own {
		out[n] = struct{}{}
	}
	return out
}

func (m *Model) waitLocked(node string, ref policy.ObjectRef, gen uint64) {
	w := m.waiting[node]
	if w == nil {
		w = map[policy.ObjectRef]uint64{}
		m.waiting[node] = w
	}
	w[ref] = gen
}

func (m *Model) unwaitLocked(node string, ref policy.ObjectRef) {
	if w := m.waiting[node]; w != nil {
		delete(w, ref)
		if len(w) == 0 {
			delete(m.waiting, node)
		}
	}
}

// onAck notifies the objects whose enforcement on the node the ack can
// change: those waiting for a generation it reached, which stop waiting,
// and those waiting for a generation it failed, which go on waiting.
// Objects the node had already acknowledged keep their status, so every
// other object on the node is left alone (at 100 nodes and hundreds of
// objects per node, notifying all of them on every ack flooded the status
// queues and cost more than the publish).
func (m *Model) onAck(node string) {
	var out []policy.ObjectRef
	st, _ := m.hub.State(node)
	m.mu.Lock()
	for ref, req := range m.waiting[node] {
		t := m.objs[ref]
		switch {
		case t == nil || t.required[node] != req:
			// Deleted, or no longer wanted on the node.
			m.unwaitLocked(node, ref)
		case st.Acked >= req:
			m.unwaitLocked(node, ref)
			out = append(out, ref)
		case st.Err != "" && st.ErrGeneration >= req:
			out = append(out, ref)
		}
	}
	m.mu.Unlock()
	for _, r := range out {
		m.notifyRef(r)
	}
}

// NodePolicy returns the engine's current policy for a node (recompiling
// if needed); for tests and the CLI. Do not modify it.
func (m *Model) NodePolicy(node string) *ir.NodePolicy {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.eng.NodePolicy(node)
}

// Realization is an object's enforcement as of now.
type Realization struct {
	AcceptErr string
	Desired   []string
	Enforced  []string
	Lagging   []string
	// Failed maps node to its error message.
	Failed     map[string]string
	EnforcedAt time.Time
	// NodeEnforcedAt is when each enforced node acknowledged.
	NodeEnforcedAt map[string]time.Time
	// Zone facts (Kind Zone only).
	Zone policy.ZoneInfo
	// MatchedPods (Kind Quarantine only) as namespace/name, with nodes.
	MatchedPods []policy.PodRef
	Known       bool
	// Unpublished is set while the object changed since the last
	// publish: no node holds its current form yet, whatever it acked.
	Unpublished bool
}

// Reportable reports whether status may be written from r: the object is
// known and its current form is published. Until then status waits for
// the publish, which notifies it.
func (r Realization) Reportable() bool { return r.Known && !r.Unpublished }

// Realization computes an object's enforcement from the hub's acks.
func (m *Model) Realization(ref policy.ObjectRef) Realization {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := Realization{Failed: map[string]string{}, NodeEnforcedAt: map[string]time.Time{}}
	t := m.objs[ref]
	if t == nil {
		return r
	}
	r.Known = true
	r.Unpublished = t.changed
	r.AcceptErr = t.acceptErr
	switch ref.Kind {
	case KindZone:
		r.Zone = m.eng.ZoneStatus(ref.Name)
	case KindQuarantine:
		r.MatchedPods = m.eng.QuarantinedPods(ref.Namespace, ref.Name)
	}
	for n, req := range t.required {
		r.Desired = append(r.Desired, n)
		st, _ := m.hub.State(n)
		switch {
		case t.changed:
			r.Lagging = append(r.Lagging, n)
		case st.Acked >= req:
			r.Enforced = append(r.Enforced, n)
			at, ok := t.enforcedAt[n]
			if !ok {
				at = st.AckedAt
				t.enforcedAt[n] = at
			}
			r.NodeEnforcedAt[n] = at
			if at.After(r.EnforcedAt) {
				r.EnforcedAt = at
			}
		case st.Err != "" && st.ErrGeneration >= req:
			r.Failed[n] = st.Err
			r.Lagging = append(r.Lagging, n)
		default:
			r.Lagging = append(r.Lagging, n)
		}
	}
	sort.Strings(r.Desired)
	sort.Strings(r.Enforced)
	sort.Strings(r.Lagging)
	return r
}

// Objects returns every tracked object, sorted.
func (m *Model) Objects() []policy.ObjectRef {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]policy.ObjectRef, 0, len(m.objs))
	for r := range m.objs {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return out
}

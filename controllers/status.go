package controllers

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// +kubebuilder:rbac:groups=segmentation.bulkhead.dev,resources=zones/status;zonepolicies/status;quarantines/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// pollWhilePending is how often status is recomputed while an object is
// not enforced everywhere (acks also trigger it at once).
const pollWhilePending = 2 * time.Second

// StatusReconciler writes Zone, ZonePolicy and Quarantine status and
// NetworkPolicy events from the model. Controllers need the leader, so
// only the leader writes.
type StatusReconciler struct {
	Client client.Client
	// Reader, when set, reads straight from the API server. A status
	// update that conflicts is retried at once from a fresh read, so a
	// cache that lags behind the controller's own writes cannot hold
	// status back (each conflict returned as an error would back the
	// object off exponentially).
	Reader   client.Reader
	Model    *Model
	Recorder recorder.EventRecorder
	Metrics  *Metrics
	// Blocked, when set, supplies the quarantines' refused flow records.
	Blocked *BlockedFlows
	// Upstream are the served upstream admin policy kinds (from
	// DiscoverUpstream), one empty object each; their status gets
	// Bulkhead's prefixed conditions.
	Upstream []client.Object
	now      func() time.Time

	// upstream maps an upstream kind to its object, for enqueue.
	upstream map[string]client.Object

	chans map[string]chan event.GenericEvent
	// npSeen remembers the last NetworkPolicy summary reported as an
	// event, so each change is reported once.
	npSeen map[types.NamespacedName]string
}

// SetupWithManager registers one controller per kind.
func (r *StatusReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.now == nil {
		r.now = time.Now
	}
	r.npSeen = map[types.NamespacedName]string{}
	r.chans = map[string]chan event.GenericEvent{}
	kinds := []struct {
		kind string
		obj  client.Object
		fn   reconcile.Func
	}{
		{KindZone, &v1alpha1.Zone{}, r.reconcileZone},
		{KindZonePolicy, &v1alpha1.ZonePolicy{}, r.reconcileZonePolicy},
		{KindQuarantine, &v1alpha1.Quarantine{}, r.reconcileQuarantine},
		{KindNetworkPolicy, &networkingv1.NetworkPolicy{}, r.reconcileNetworkPolicy},
	}
	r.upstream = map[string]client.Object{}
	for _, o := range r.Upstream {
		kind, _, ok := upstreamConditions(o)
		if !ok {
			return fmt.Errorf("status for %T: not an upstream admin policy", o)
		}
		r.upstream[kind] = o
		kinds = append(kinds, struct {
			kind string
			obj  client.Object
			fn   reconcile.Func
		}{kind, o, r.reconcileUpstream(o)})
	}
	for _, k := range kinds {
		ch := make(chan event.GenericEvent, 4096)
		r.chans[k.kind] = ch
		if err := builder.ControllerManagedBy(mgr).
			Named(strings.ToLower(k.kind)+"-status").
			For(k.obj, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
			WatchesRawSource(source.Channel(ch, &handler.EnqueueRequestForObject{})).
			Complete(k.fn); err != nil {
			return fmt.Errorf("setting up %s status controller: %w", k.kind, err)
		}
	}
	r.Model.SetNotify(r.enqueue)
	return nil
}

// enqueue asks for a status refresh; a full queue drops the request, which
// the periodic requeue of pending objects makes up for.
func (r *StatusReconciler) enqueue(ref policy.ObjectRef) {
	ch := r.chans[ref.Kind]
	if ch == nil {
		return
	}
	var obj client.Object
	switch ref.Kind {
	case KindZone:
		obj = &v1alpha1.Zone{}
	case KindZonePolicy:
		obj = &v1alpha1.ZonePolicy{}
	case KindQuarantine:
		obj = &v1alpha1.Quarantine{}
	case KindNetworkPolicy:
		obj = &networkingv1.NetworkPolicy{}
	default:
		o := r.upstream[ref.Kind]
		if o == nil {
			return
		}
		obj = o.DeepCopyObject().(client.Object)
	}
	obj.SetNamespace(ref.Namespace)
	obj.SetName(ref.Name)
	select {
	case ch <- event.GenericEvent{Object: obj}:
	default:
	}
}

// summary is the enforcement state of one object, for conditions.
type summary struct {
	real     Realization
	enforced bool
	message  string
}

func summarize(real Realization) summary {
	s := summary{real: real}
	n, d := len(real.Enforced), len(real.Desired)
	s.enforced = n == d && !real.Unpublished
	switch {
	case len(real.Failed) > 0:
		var parts []string
		for _, node := range sortedKeys(real.Failed) {
			parts = append(parts, fmt.Sprintf("%s: %s", node, real.Failed[node]))
		}
		s.message = fmt.Sprintf("enforced on %d/%d nodes; failed on %s", n, d, strings.Join(parts, "; "))
	case !s.enforced:
		s.message = fmt.Sprintf("enforced on %d/%d nodes; waiting for %s", n, d, strings.Join(real.Lagging, ", "))
	case d == 0:
		s.message = "enforced on 0/0 nodes: no node hosts an endpoint this object applies to"
	default:
		s.message = fmt.Sprintf("enforced on %d/%d nodes since %s", n, d, real.EnforcedAt.UTC().Format(time.RFC3339))
	}
	return s
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func realization(s summary) *v1alpha1.Realization {
	r := &v1alpha1.Realization{NodesDesired: int32(len(s.real.Desired)), NodesEnforced: int32(len(s.real.Enforced))}
	if s.enforced && !s.real.EnforcedAt.IsZero() {
		t := metav1.NewTime(s.real.EnforcedAt.Truncate(time.Second))
		r.EnforcedAt = &t
	}
	for _, n := range sortedKeys(s.real.Failed) {
		r.FailedNodes = append(r.FailedNodes, v1alpha1.NodeError{Node: n, Message: s.real.Failed[n]})
	}
	return r
}

// setConditions sets Accepted and Enforced; it returns the previous
// Enforced condition for event decisions.
func setConditions(conds *[]metav1.Condition, gen int64, s summary) (prev metav1.Condition) {
	return setConditionTypes(conds, gen, s, v1alpha1.ConditionAccepted, v1alpha1.ConditionEnforced)
}

// setConditionTypes is setConditions with the two condition types named.
func setConditionTypes(conds *[]metav1.Condition, gen int64, s summary, accepted, enforced string) (prev metav1.Condition) {
	if c := meta.FindStatusCondition(*conds, enforced); c != nil {
		prev = *c
	}
	if s.real.AcceptErr != "" {
		meta.SetStatusCondition(conds, metav1.Condition{Type: accepted, Status: metav1.ConditionFalse, Reason: "Invalid", Message: s.real.AcceptErr, ObservedGeneration: gen})
		meta.SetStatusCondition(conds, metav1.Condition{Type: enforced, Status: metav1.ConditionFalse, Reason: "NotAccepted", Message: "the engine refused the object", ObservedGeneration: gen})
		return prev
	}
	meta.SetStatusCondition(conds, metav1.Condition{Type: accepted, Status: metav1.ConditionTrue, Reason: "Accepted", Message: "the engine accepted the object", ObservedGeneration: gen})
	c := metav1.Condition{Type: enforced, Status: metav1.ConditionTrue, Reason: "Enforced", Message: s.message, ObservedGeneration: gen}
	switch {
	case len(s.real.Failed) > 0:
		c.Status, c.Reason = metav1.ConditionFalse, "NodeFailed"
	case !s.enforced:
		c.Status, c.Reason = metav1.ConditionFalse, "Pending"
	}
	meta.SetStatusCondition(conds, c)
	return prev
}

// emit records events for changes of the Enforced condition.
func (r *StatusReconciler) emit(obj client.Object, prev metav1.Condition, s summary) {
	if r.Recorder == nil {
		return
	}
	if s.real.AcceptErr != "" {
		if prev.Reason != "NotAccepted" {
			r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, "Invalid", "Accept", "%s", s.real.AcceptErr)
		}
		return
	}
	switch {
	case len(s.real.Failed) > 0 && (prev.Reason != "NodeFailed" || prev.Message != s.message):
		r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, "NodeFailed", "Enforce", "%s", s.message)
	case s.enforced && prev.Status != metav1.ConditionTrue:
		r.Recorder.Eventf(obj, nil, corev1.EventTypeNormal, "Enforced", "Enforce", "%s", s.message)
	}
}

func requeue(s summary) reconcile.Result {
	if !s.enforced && s.real.AcceptErr == "" {
		return reconcile.Result{RequeueAfter: pollWhilePending}
	}
	return reconcile.Result{}
}

func (r *StatusReconciler) writeStatus(ctx context.Context, kind string, obj client.Object) error {
	if err := r.Client.Status().Update(ctx, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("updating %s %s status: %w", kind, client.ObjectKeyFromObject(obj), err)
	}
	if r.Metrics != nil {
		r.Metrics.StatusWrites.WithLabelValues(kind).Inc()
	}
	return nil
}

// maxStatusAttempts bounds the fresh-read retries of a conflicting
// status update within one reconcile.
const maxStatusAttempts = 3

// withFreshRetry reads the object (from the cache first) and runs write on
// it; when write's status update conflicts, it reads the object from the
// API server and runs write again, up to maxStatusAttempts times. gone,
// when set, runs when the object no longer exists.
func withFreshRetry[T client.Object](ctx context.Context, r *StatusReconciler, req reconcile.Request, newObj func() T, gone func(), write func(context.Context, T) (reconcile.Result, error)) (reconcile.Result, error) {
	var reader client.Reader = r.Client
	for attempt := 1; ; attempt++ {
		obj := newObj()
		if err := reader.Get(ctx, req.NamespacedName, obj); err != nil {
			if apierrors.IsNotFound(err) && gone != nil {
				gone()
			}
			return reconcile.Result{}, client.IgnoreNotFound(err)
		}
		res, err := write(ctx, obj)
		if err == nil || !apierrors.IsConflict(err) || r.Reader == nil || attempt == maxStatusAttempts {
			return res, err
		}
		if r.Metrics != nil {
			r.Metrics.StatusConflicts.Inc()
		}
		reader = r.Reader
	}
}

func (r *StatusReconciler) reconcileZone(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	return withFreshRetry(ctx, r, req, func() *v1alpha1.Zone { return &v1alpha1.Zone{} }, nil, r.writeZone)
}

func (r *StatusReconciler) writeZone(ctx context.Context, z *v1alpha1.Zone) (reconcile.Result, error) {
	real := r.Model.Realization(policy.ObjectRef{Kind: KindZone, Name: z.Name})
	if !real.Reportable() {
		return reconcile.Result{RequeueAfter: pollWhilePending}, nil
	}
	s := summarize(real)
	st := z.Status.DeepCopy()
	st.ObservedGeneration = z.Generation
	st.Members = int32(real.Zone.Members)
	st.Realization = realization(s)
	prev := setConditions(&st.Conditions, z.Generation, s)
	if len(real.Zone.ConflictsWith) > 0 {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha1.ConditionConflict, Status: metav1.ConditionTrue, Reason: "OverlapsOlderZone",
			Message: "endpoints selected by this zone stay in older zones: " + strings.Join(real.Zone.ConflictsWith, ", "), ObservedGeneration: z.Generation})
	} else {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha1.ConditionConflict, Status: metav1.ConditionFalse, Reason: "NoOverlap",
			Message: "no member is claimed by an older zone", ObservedGeneration: z.Generation})
	}
	if !equality.Semantic.DeepEqual(st, &z.Status) {
		old := meta.FindStatusCondition(z.Status.Conditions, v1alpha1.ConditionConflict)
		z.Status = *st
		if err := r.writeStatus(ctx, KindZone, z); err != nil {
			return reconcile.Result{}, err
		}
		r.emit(z, prev, s)
		if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionConflict); c.Status == metav1.ConditionTrue && (old == nil || old.Message != c.Message) && r.Recorder != nil {
			r.Recorder.Eventf(z, nil, corev1.EventTypeWarning, "Conflict", "Membership", "%s", c.Message)
		}
	}
	return requeue(s), nil
}

func (r *StatusReconciler) reconcileZonePolicy(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	return withFreshRetry(ctx, r, req, func() *v1alpha1.ZonePolicy { return &v1alpha1.ZonePolicy{} }, nil, r.writeZonePolicy)
}

func (r *StatusReconciler) writeZonePolicy(ctx context.Context, p *v1alpha1.ZonePolicy) (reconcile.Result, error) {
	real := r.Model.Realization(policy.ObjectRef{Kind: KindZonePolicy, Name: p.Name})
	if !real.Reportable() {
		return reconcile.Result{RequeueAfter: pollWhilePending}, nil
	}
	s := summarize(real)
	st := p.Status.DeepCopy()
	st.ObservedGeneration = p.Generation
	st.Realization = realization(s)
	prev := setConditions(&st.Conditions, p.Generation, s)
	if !equality.Semantic.DeepEqual(st, &p.Status) {
		p.Status = *st
		if err := r.writeStatus(ctx, KindZonePolicy, p); err != nil {
			return reconcile.Result{}, err
		}
		r.emit(p, prev, s)
	}
	return requeue(s), nil
}

// QuarantineExpiry returns when a quarantine expires, or the zero time.
func QuarantineExpiry(q *v1alpha1.Quarantine) time.Time {
	switch {
	case q.Spec.ExpireAt != nil:
		return q.Spec.ExpireAt.Time
	case q.Spec.ExpireAfter != nil:
		return q.CreationTimestamp.Add(q.Spec.ExpireAfter.Duration)
	}
	return time.Time{}
}

// podNodesEnforced reports whether the node of every matched pod has
// acknowledged a policy that contains the quarantine. Until the quarantine
// is in a published policy its set of desired nodes is empty, and an empty
// set must not count as enforced.
func podNodesEnforced(real Realization) bool {
	for _, p := range real.MatchedPods {
		if _, ok := real.NodeEnforcedAt[p.Node]; !ok {
			return false
		}
	}
	return true
}

func (r *StatusReconciler) reconcileQuarantine(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	ref := policy.ObjectRef{Kind: KindQuarantine, Namespace: req.Namespace, Name: req.Name}
	gone := func() {
		if r.Blocked != nil {
			r.Blocked.Forget(ref)
		}
	}
	return withFreshRetry(ctx, r, req, func() *v1alpha1.Quarantine { return &v1alpha1.Quarantine{} }, gone, r.writeQuarantine)
}

func (r *StatusReconciler) writeQuarantine(ctx context.Context, q *v1alpha1.Quarantine) (reconcile.Result, error) {
	ref := policy.ObjectRef{Kind: KindQuarantine, Namespace: q.Namespace, Name: q.Name}
	real := r.Model.Realization(ref)
	if !real.Reportable() {
		return reconcile.Result{RequeueAfter: pollWhilePending}, nil
	}
	now := r.now()
	s := summarize(real)
	st := q.Status.DeepCopy()
	st.ObservedGeneration = q.Generation
	if st.RequestedAt == nil {
		t := q.CreationTimestamp
		st.RequestedAt = &t
	}
	expiry := QuarantineExpiry(q)
	ended := st.Phase == v1alpha1.QuarantineExpired || st.Phase == v1alpha1.QuarantineReleased
	switch {
	case q.Spec.Released:
		st.Phase = v1alpha1.QuarantineReleased
	case st.Phase == v1alpha1.QuarantineExpired:
	case !expiry.IsZero() && !now.Before(expiry):
		st.Phase = v1alpha1.QuarantineExpired
	case len(real.MatchedPods) > 0 && s.enforced && podNodesEnforced(real):
		st.Phase = v1alpha1.QuarantineActive
	case st.Phase == v1alpha1.QuarantineActive:
		// Stays active: earlier pods are isolated while new ones catch up.
	default:
		st.Phase = v1alpha1.QuarantinePending
	}
	nowEnded := st.Phase == v1alpha1.QuarantineExpired || st.Phase == v1alpha1.QuarantineReleased
	st.AuthenticatedRequester = q.Annotations[v1alpha1.AuthenticatedRequesterAnnotation]
	var newBlocked []v1alpha1.QuarantineFlow
	var newTotal int64
	if r.Blocked != nil {
		newBlocked, newTotal = r.Blocked.Take(ref)
		if newTotal > 0 {
			st.BlockedFlows = mergeBlocked(st.BlockedFlows, newBlocked)
			st.BlockedFlowsTotal += newTotal
		}
	}
	if nowEnded && st.EndedAt == nil {
		t := metav1.NewMicroTime(now.Truncate(time.Microsecond))
		st.EndedAt = &t
	}
	if !ended || !nowEnded {
		st.MatchedPods = nil
		for _, p := range real.MatchedPods {
			st.MatchedPods = append(st.MatchedPods, p.Namespace+"/"+p.Name)
		}
		st.Nodes = nil
		for _, n := range real.Desired {
			qn := v1alpha1.QuarantineNode{Node: n, Error: real.Failed[n]}
			if at, ok := real.NodeEnforcedAt[n]; ok {
				t := metav1.NewMicroTime(at.Truncate(time.Microsecond))
				qn.EnforcedAt = &t
			}
			st.Nodes = append(st.Nodes, qn)
		}
		if s.enforced && len(real.MatchedPods) > 0 && podNodesEnforced(real) && st.EnforcedAt == nil && !real.EnforcedAt.IsZero() {
			t := metav1.NewMicroTime(real.EnforcedAt.Truncate(time.Microsecond))
			st.EnforcedAt = &t
		}
	}
	if nowEnded {
		st.MatchedPods = nil
	}
	prev := setConditions(&st.Conditions, q.Generation, s)
	if st.Phase == v1alpha1.QuarantinePending && len(real.MatchedPods) == 0 && real.AcceptErr == "" {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha1.ConditionEnforced, Status: metav1.ConditionFalse, Reason: "NoMatchingPods",
			Message: "no running pod matches the quarantine yet", ObservedGeneration: q.Generation})
	}
	res := requeue(s)
	if st.Phase == v1alpha1.QuarantinePending && len(real.MatchedPods) > 0 && res.RequeueAfter == 0 {
		// Matched pods whose nodes have not acknowledged yet.
		res.RequeueAfter = pollWhilePending
	}
	if !nowEnded && !expiry.IsZero() {
		if d := expiry.Sub(now); res.RequeueAfter == 0 || d < res.RequeueAfter {
			res.RequeueAfter = max(d, time.Millisecond)
		}
	}
	if nowEnded {
		res = reconcile.Result{}
	}
	if !equality.Semantic.DeepEqual(st, &q.Status) {
		oldPhase := q.Status.Phase
		q.Status = *st
		if err := r.writeStatus(ctx, KindQuarantine, q); err != nil {
			if r.Blocked != nil {
				r.Blocked.Return(ref, newBlocked, newTotal)
			}
			return reconcile.Result{}, err
		}
		if oldPhase != st.Phase && r.Recorder != nil {
			typ, note := corev1.EventTypeNormal, ""
			switch st.Phase {
			case v1alpha1.QuarantinePending:
				note = fmt.Sprintf("quarantine requested (reason %q); waiting for nodes to enforce it", q.Spec.Reason)
			case v1alpha1.QuarantineActive:
				note = fmt.Sprintf("pods %s isolated; %s", strings.Join(st.MatchedPods, ", "), s.message)
			case v1alpha1.QuarantineExpired:
				note = "quarantine expired at " + expiry.UTC().Format(time.RFC3339)
			case v1alpha1.QuarantineReleased:
				note = "quarantine released"
			}
			r.Recorder.Eventf(q, nil, typ, string(st.Phase), "Quarantine", "%s", note)
		}
		if !nowEnded {
			r.emit(q, prev, s)
		}
	}
	log.FromContext(ctx).V(1).Info("quarantine status", "phase", st.Phase, "requeue", res.RequeueAfter)
	return res, nil
}

// reconcileUpstream writes Bulkhead's conditions on one upstream admin
// policy kind (its object is proto) and records events when they change.
func (r *StatusReconciler) reconcileUpstream(proto client.Object) reconcile.Func {
	return func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		return withFreshRetry(ctx, r, req, func() client.Object { return proto.DeepCopyObject().(client.Object) }, nil, r.writeUpstream)
	}
}

func (r *StatusReconciler) writeUpstream(ctx context.Context, obj client.Object) (reconcile.Result, error) {
	kind, conds, _ := upstreamConditions(obj)
	real := r.Model.Realization(policy.ObjectRef{Kind: kind, Name: obj.GetName()})
	if !real.Reportable() {
		return reconcile.Result{RequeueAfter: pollWhilePending}, nil
	}
	s := summarize(real)
	before := slices.Clone(*conds)
	prev := setConditionTypes(conds, obj.GetGeneration(), s, UpstreamConditionAccepted, UpstreamConditionEnforced)
	if !equality.Semantic.DeepEqual(before, *conds) {
		if err := r.writeStatus(ctx, kind, obj); err != nil {
			return reconcile.Result{}, err
		}
		r.emit(obj, prev, s)
	}
	return requeue(s), nil
}

// reconcileNetworkPolicy reports a NetworkPolicy's realization through
// events (its status belongs to upstream), once per change.
func (r *StatusReconciler) reconcileNetworkPolicy(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var np networkingv1.NetworkPolicy
	if err := r.Client.Get(ctx, req.NamespacedName, &np); err != nil {
		if apierrors.IsNotFound(err) {
			delete(r.npSeen, req.NamespacedName)
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	real := r.Model.Realization(policy.ObjectRef{Kind: KindNetworkPolicy, Namespace: np.Namespace, Name: np.Name})
	if !real.Reportable() {
		return reconcile.Result{RequeueAfter: pollWhilePending}, nil
	}
	s := summarize(real)
	key := fmt.Sprintf("%d|%s|%v|%d", np.Generation, real.AcceptErr, s.enforced, len(real.Failed))
	if len(real.Failed) > 0 {
		key += "|" + s.message
	}
	if r.npSeen[req.NamespacedName] != key && r.Recorder != nil {
		switch {
		case real.AcceptErr != "":
			r.Recorder.Eventf(&np, nil, corev1.EventTypeWarning, "Invalid", "Accept", "%s", real.AcceptErr)
		case len(real.Failed) > 0:
			r.Recorder.Eventf(&np, nil, corev1.EventTypeWarning, "NodeFailed", "Enforce", "%s", s.message)
		case s.enforced:
			r.Recorder.Eventf(&np, nil, corev1.EventTypeNormal, "Enforced", "Enforce", "%s", s.message)
		}
		if real.AcceptErr != "" || len(real.Failed) > 0 || s.enforced {
			r.npSeen[req.NamespacedName] = key
		}
	}
	return requeue(s), nil
}

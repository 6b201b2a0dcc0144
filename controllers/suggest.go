package controllers

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/attrib"
	"github.com/bulkhead-dev/bulkhead/internal/suggest"
)

// +kubebuilder:rbac:groups=segmentation.bulkhead.dev,resources=policysuggestions,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=segmentation.bulkhead.dev,resources=policysuggestions/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=segmentation.bulkhead.dev,resources=flowedgesets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods;namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups=segmentation.bulkhead.dev,resources=zones,verbs=get;list;watch

// Annotations and labels on PolicySuggestions.
const (
	// AnnotationStagedAt is set by `bulkhead suggest apply` when it stages
	// a suggestion (RFC 3339). Audit edges last seen after it are drift.
	AnnotationStagedAt = "bulkhead.dev/staged-at"
	// LabelDriftOf marks a drift suggestion with the suggestion it adds to.
	LabelDriftOf = "bulkhead.dev/drift-of"
	// ConditionStable is true when no new edge arrived for stableAfter.
	ConditionStable = "Stable"
)

// SuggestOptions configure the suggestion controller.
type SuggestOptions struct {
	// StableAfter: a suggestion with no new edge for this long is Stable.
	StableAfter time.Duration
	// Interval between two suggestion runs.
	Interval time.Duration
}

// Suggester writes PolicySuggestions from FlowEdgeSets and the live world.
// It runs on the leader only.
type Suggester struct {
	Client   client.Client
	Recorder recorder.EventRecorder
	Opts     SuggestOptions
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	reported map[string]string
}

// SetupSuggest adds the suggestion controller to mgr.
func SetupSuggest(mgr manager.Manager, o SuggestOptions) error {
	if o.StableAfter <= 0 {
		return fmt.Errorf("--suggest-stable-after must be positive, got %s", o.StableAfter)
	}
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	return mgr.Add(&Suggester{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("bulkhead-suggester"), Opts: o})
}

// NeedLeaderElection: only the leader writes suggestions.
func (s *Suggester) NeedLeaderElection() bool { return true }

// Start runs Sync every interval until ctx ends.
func (s *Suggester) Start(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx).WithName("suggester")
	t := time.NewTicker(s.Opts.Interval)
	defer t.Stop()
	for {
		if err := s.Sync(ctx); err != nil && ctx.Err() == nil {
			log.Error(err, "suggestion run failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *Suggester) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// World reads the live pods and zones the suggester checks selectors
// against.
func World(ctx context.Context, r client.Reader) (suggest.World, error) {
	var pods corev1.PodList
	if err := r.List(ctx, &pods); err != nil {
		return suggest.World{}, fmt.Errorf("listing pods: %w", err)
	}
	var zones v1alpha1.ZoneList
	if err := r.List(ctx, &zones); err != nil {
		return suggest.World{}, fmt.Errorf("listing zones: %w", err)
	}
	var svcs corev1.ServiceList
	if err := r.List(ctx, &svcs); err != nil {
		return suggest.World{}, fmt.Errorf("listing services: %w", err)
	}
	a := &attrib.Attributor{Owners: OwnerLookup(ctx, r)}
	w := suggest.World{Zones: zones.Items}
	for _, svc := range svcs.Items {
		ss := suggest.Service{Namespace: svc.Namespace, Name: svc.Name, Selector: svc.Spec.Selector, Ports: svc.Spec.Ports}
		for _, ip := range svc.Spec.ClusterIPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				ss.ClusterIPs = append(ss.ClusterIPs, a)
			}
		}
		w.Services = append(w.Services, ss)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		wl := a.Workload(attrib.Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, Owner: controllerOf(p)})
		sp := suggest.Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, WorkloadKind: wl.Kind, WorkloadName: wl.Name}
		for _, c := range p.Spec.Containers {
			sp.Ports = append(sp.Ports, c.Ports...)
		}
		w.Pods = append(w.Pods, sp)
	}
	return w, nil
}

// Sync runs the suggester once.
func (s *Suggester) Sync(ctx context.Context) error {
	var sets v1alpha1.FlowEdgeSetList
	if err := s.Client.List(ctx, &sets); err != nil {
		return fmt.Errorf("listing flow edge sets: %w", err)
	}
	sort.Slice(sets.Items, func(i, j int) bool { return sets.Items[i].Name < sets.Items[j].Name })
	var edges []v1alpha1.FlowEdge
	for _, fs := range sets.Items {
		edges = append(edges, fs.Spec.Edges...)
	}
	world, err := World(ctx, s.Client)
	if err != nil {
		return err
	}
	var existing v1alpha1.PolicySuggestionList
	if err := s.Client.List(ctx, &existing); err != nil {
		return fmt.Errorf("listing policy suggestions: %w", err)
	}
	byName := map[string]*v1alpha1.PolicySuggestion{}
	for i := range existing.Items {
		byName[existing.Items[i].Name] = &existing.Items[i]
	}
	now := s.now()
	learned := suggest.Suggest(edges, world, suggest.Options{Now: now, StableAfter: s.Opts.StableAfter})
	var errs []string
	for i := range learned.Suggestions {
		sg := &learned.Suggestions[i]
		cur := byName[sg.Name]
		if cur != nil && cur.Spec.State != v1alpha1.SuggestionLearning && cur.Spec.State != v1alpha1.SuggestionStable {
			continue // staged, enforced or rejected: drift handles it below
		}
		if err := s.write(ctx, sg.Name, "", sg, cur); err != nil {
			errs = append(errs, err.Error())
		}
	}
	// Drift: Audit edges seen after a suggestion was staged.
	for _, cur := range existing.Items {
		if cur.Labels[LabelDriftOf] != "" || (cur.Spec.State != v1alpha1.SuggestionStaged && cur.Spec.State != v1alpha1.SuggestionEnforced) {
			continue
		}
		at, err := time.Parse(time.RFC3339, cur.Annotations[AnnotationStagedAt])
		if err != nil {
			s.event(&cur, corev1.EventTypeWarning, "NoStagedAt", fmt.Sprintf("annotation %s: %v", AnnotationStagedAt, err))
			continue
		}
		drift := suggest.Suggest(edges, world, suggest.Options{Now: now, StableAfter: s.Opts.StableAfter, Since: at,
			Verdicts: []v1alpha1.FlowVerdict{v1alpha1.VerdictAudit}})
		sg, ok := drift.Find(cur.Name)
		if !ok {
			continue
		}
		name := cur.Name + "-drift"
		dcur := byName[name]
		if dcur != nil && dcur.Spec.State != v1alpha1.SuggestionLearning && dcur.Spec.State != v1alpha1.SuggestionStable {
			continue
		}
		if err := s.write(ctx, name, cur.Name, sg, dcur); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("writing suggestions: %s", strings.Join(errs, "; "))
	}
	return nil
}

func (s *Suggester) event(obj client.Object, typ, reason, msg string) {
	if s.Recorder == nil {
		return
	}
	if s.reported == nil {
		s.reported = map[string]string{}
	}
	k := obj.GetName() + "/" + reason
	if s.reported[k] == msg {
		return
	}
	s.reported[k] = msg
	s.Recorder.Eventf(obj, nil, typ, reason, "Suggest", "%s", msg)
}

// write creates or updates one PolicySuggestion and its status.
func (s *Suggester) write(ctx context.Context, name, driftOf string, sg *suggest.Suggestion, cur *v1alpha1.PolicySuggestion) error {
	spec, err := sg.Spec()
	if err != nil {
		return fmt.Errorf("suggestion %s: %w", name, err)
	}
	obj := cur
	if obj == nil {
		obj = &v1alpha1.PolicySuggestion{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if driftOf != "" {
			obj.Labels = map[string]string{LabelDriftOf: driftOf}
		}
		obj.Spec = spec
		if err := s.Client.Create(ctx, obj); err != nil {
			return fmt.Errorf("creating suggestion %s: %w", name, err)
		}
	} else if !apiequality.Semantic.DeepEqual(obj.Spec, spec) {
		obj.Spec = spec
		if err := s.Client.Update(ctx, obj); err != nil {
			if apierrors.IsConflict(err) {
				return nil // next run retries
			}
			return fmt.Errorf("updating suggestion %s: %w", name, err)
		}
	}
	st := obj.Status.DeepCopy()
	if !sg.LastChange.IsZero() {
		lc := metav1.NewTime(sg.LastChange)
		st.LastChange = &lc
	}
	cond := metav1.Condition{Type: ConditionStable, Status: metav1.ConditionFalse, Reason: "Learning",
		Message: fmt.Sprintf("new edges seen within %s", s.Opts.StableAfter)}
	if sg.State == v1alpha1.SuggestionStable {
		cond = metav1.Condition{Type: ConditionStable, Status: metav1.ConditionTrue, Reason: "NoNewEdges",
			Message: fmt.Sprintf("no new edge for %s; %d NetworkPolicy rules (minimum %d) for %d observed tuples", s.Opts.StableAfter, sg.NetworkPolicyRules, sg.MinimumRules, sg.Tuples)}
	}
	meta.SetStatusCondition(&st.Conditions, cond)
	problems := metav1.Condition{Type: "Complete", Status: metav1.ConditionTrue, Reason: "AllEdgesCovered", Message: "every observed edge has a rule"}
	if len(sg.Problems) > 0 {
		msg := strings.Join(sg.Problems, "; ")
		problems = metav1.Condition{Type: "Complete", Status: metav1.ConditionFalse, Reason: "UncoveredEdges", Message: msg}
		s.event(obj, corev1.EventTypeWarning, "UncoveredEdges", msg)
	}
	meta.SetStatusCondition(&st.Conditions, problems)
	if !apiequality.Semantic.DeepEqual(&obj.Status, st) {
		obj.Status = *st
		if err := s.Client.Status().Update(ctx, obj); err != nil && !apierrors.IsConflict(err) {
			return fmt.Errorf("updating status of suggestion %s: %w", name, err)
		}
	}
	return nil
}

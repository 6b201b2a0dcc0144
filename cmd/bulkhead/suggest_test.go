package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/controllers"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// TestSuggestLifecycle runs the suggestion controller against a real API
// server on hand-made FlowEdgeSets, then stages, diffs and enforces the
// suggestion with the CLI's functions, and checks drift after staging.
func TestSuggestLifecycle(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	c := env.Client
	t0 := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	mustCreate := func(o client.Object) {
		t.Helper()
		if err := c.Create(ctx, o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
	for _, ns := range []string{"sg-web", "sg-shop"} {
		mustCreate(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"team": "sg"}}})
	}
	mustCreate(&v1alpha1.Zone{ObjectMeta: metav1.ObjectMeta{Name: "sgapp"}, Spec: v1alpha1.ZoneSpec{Mode: v1alpha1.ZoneModeLearn,
		Pods: &v1alpha1.ZonePods{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "sg"}}}}})
	pod := func(ns, name string, labels map[string]string) {
		mustCreate(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}})
	}
	pod("sg-web", "frontend-1", map[string]string{"app": "frontend"})
	pod("sg-shop", "api-1", map[string]string{"app": "api"})
	pod("sg-shop", "other-1", map[string]string{"app": "other"})
	wref := func(ns, name string, l map[string]string) v1alpha1.EdgeEndpoint {
		return v1alpha1.EdgeEndpoint{Workload: &v1alpha1.WorkloadRef{Namespace: ns, Kind: "Pod", Name: name, Labels: l, Zone: "sgapp"}}
	}
	fe, api := wref("sg-web", "frontend-1", map[string]string{"app": "frontend"}), wref("sg-shop", "api-1", map[string]string{"app": "api"})
	edge := func(src, dst v1alpha1.EdgeEndpoint, port int32, v v1alpha1.FlowVerdict, at time.Time) v1alpha1.FlowEdge {
		return v1alpha1.FlowEdge{Source: src, Destination: dst, Protocol: v1alpha1.ProtocolTCP, Port: port, Verdict: v,
			Connections: 3, SourcePodCount: 1, FirstSeen: metav1.NewTime(at), LastSeen: metav1.NewTime(at.Add(time.Second)), Samples: []string{"s"}}
	}
	set := &v1alpha1.FlowEdgeSet{ObjectMeta: metav1.ObjectMeta{Name: "sg-edges"}, Spec: v1alpha1.FlowEdgeSetSpec{Edges: []v1alpha1.FlowEdge{
		edge(fe, api, 8080, v1alpha1.VerdictForwarded, t0),
		edge(api, v1alpha1.EdgeEndpoint{CIDR: "10.99.0.5/32"}, 443, v1alpha1.VerdictAudit, t0),
	}}}
	mustCreate(set)

	now := t0.Add(10 * time.Minute)
	s := &controllers.Suggester{Client: c, Opts: controllers.SuggestOptions{StableAfter: 5 * time.Minute}, Now: func() time.Time { return now }}
	if err := s.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	var ps v1alpha1.PolicySuggestion
	if err := c.Get(ctx, client.ObjectKey{Name: "zone-sgapp"}, &ps); err != nil {
		t.Fatalf("suggestion zone-sgapp: %v", err)
	}
	if ps.Spec.State != v1alpha1.SuggestionStable || !meta.IsStatusConditionTrue(ps.Status.Conditions, controllers.ConditionStable) {
		t.Errorf("state %s conditions %+v, want Stable", ps.Spec.State, ps.Status.Conditions)
	}
	if !strings.Contains(ps.Spec.NetworkPolicies, "name: bulkhead-pod-api-1") || !strings.Contains(ps.Spec.ZonePolicies, "name: bulkhead-sgapp-to-world") {
		t.Fatalf("unexpected suggestion:\n%s\n%s", ps.Spec.NetworkPolicies, ps.Spec.ZonePolicies)
	}

	var out bytes.Buffer
	var ue usageError
	if err := suggestApply(ctx, c, &out, "zone-sgapp", true, now); !asUsage(err, &ue) {
		t.Errorf("apply --enforce before staging: want a usage error, got %v", err)
	}
	if err := suggestApply(ctx, c, &out, "missing", false, now); !asUsage(err, &ue) {
		t.Errorf("apply of a missing suggestion: want a usage error, got %v", err)
	}
	out.Reset()
	if err := suggestDiff(ctx, c, &out, "zone-sgapp", true); err != nil {
		t.Fatalf("diff: %v", err)
	}
	for _, want := range []string{"create ZonePolicy/bulkhead-sgapp-to-world", "create NetworkPolicy/sg-shop/bulkhead-pod-api-1", "zone sgapp mode Learn"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("diff output lacks %q:\n%s", want, out.String())
		}
	}
	stagedAt := now
	if err := suggestApply(ctx, c, &out, "zone-sgapp", false, stagedAt); err != nil {
		t.Fatalf("apply (stage): %v", err)
	}
	var zone v1alpha1.Zone
	if err := c.Get(ctx, client.ObjectKey{Name: "sgapp"}, &zone); err != nil || zone.Spec.Mode != v1alpha1.ZoneModeAudit {
		t.Errorf("zone after staging: mode %q err %v, want Audit", zone.Spec.Mode, err)
	}
	var zp v1alpha1.ZonePolicy
	if err := c.Get(ctx, client.ObjectKey{Name: "bulkhead-sgapp-to-world"}, &zp); err != nil || zp.Spec.Action != v1alpha1.ActionPass {
		t.Errorf("zone policy after staging: %+v err %v", zp.Spec, err)
	}
	var nps networkingv1.NetworkPolicyList
	if err := c.List(ctx, &nps, client.InNamespace("sg-shop")); err != nil || len(nps.Items) != 0 {
		t.Errorf("staging wrote %d NetworkPolicies (err %v), want none", len(nps.Items), err)
	}

	// Drift: an Audit edge seen after staging.
	if err := c.Get(ctx, client.ObjectKey{Name: "sg-edges"}, set); err != nil {
		t.Fatal(err)
	}
	set.Spec.Edges = append(set.Spec.Edges, edge(fe, v1alpha1.EdgeEndpoint{CIDR: "10.99.0.7/32"}, 443, v1alpha1.VerdictAudit, stagedAt.Add(time.Minute)))
	if err := c.Update(ctx, set); err != nil {
		t.Fatal(err)
	}
	now = stagedAt.Add(2 * time.Minute)
	if err := s.Sync(ctx); err != nil {
		t.Fatalf("Sync after staging: %v", err)
	}
	var drift v1alpha1.PolicySuggestion
	if err := c.Get(ctx, client.ObjectKey{Name: "zone-sgapp-drift"}, &drift); err != nil {
		t.Fatalf("drift suggestion: %v", err)
	}
	if drift.Labels[controllers.LabelDriftOf] != "zone-sgapp" || !strings.Contains(drift.Spec.NetworkPolicies, "10.99.0.7/32") || strings.Contains(drift.Spec.NetworkPolicies, "10.99.0.5/32") {
		t.Errorf("drift suggestion labels %v policies:\n%s", drift.Labels, drift.Spec.NetworkPolicies)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "zone-sgapp"}, &ps); err != nil || ps.Spec.State != v1alpha1.SuggestionStaged {
		t.Errorf("staged suggestion was changed: state %s err %v", ps.Spec.State, err)
	}

	if err := suggestApply(ctx, c, &out, "zone-sgapp", true, now); err != nil {
		t.Fatalf("apply --enforce: %v", err)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "sgapp"}, &zone); err != nil || zone.Spec.Mode != v1alpha1.ZoneModeEnforce {
		t.Errorf("zone after enforce: mode %q err %v", zone.Spec.Mode, err)
	}
	var np networkingv1.NetworkPolicy
	if err := c.Get(ctx, client.ObjectKey{Namespace: "sg-shop", Name: "bulkhead-pod-api-1"}, &np); err != nil {
		t.Fatalf("network policy after enforce: %v", err)
	}
	if d := np.Spec.PodSelector.MatchLabels; d["app"] != "api" || len(d) != 1 {
		t.Errorf("pod selector %v", d)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "zone-sgapp"}, &ps); err != nil || ps.Spec.State != v1alpha1.SuggestionEnforced {
		t.Errorf("state after enforce %s err %v", ps.Spec.State, err)
	}
}

package policy_test

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func mkQuarantine(ns, name, pod string, podSel map[string]string, ingressFrom map[string]string) *v1alpha1.Quarantine {
	q := &v1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	q.Spec.Reason = "test"
	if pod != "" {
		q.Spec.PodName = pod
	} else {
		q.Spec.PodSelector = &metav1.LabelSelector{MatchLabels: podSel}
	}
	if ingressFrom != nil {
		q.Spec.Allow.Ingress = []v1alpha1.ForensicsPeer{{Pods: &v1alpha1.ZonePods{PodSelector: &metav1.LabelSelector{MatchLabels: ingressFrom}}}}
	}
	return q
}

func allNodePolicies(t *testing.T, e *policy.Engine) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range e.Nodes() {
		b, err := json.Marshal(e.NodePolicy(n))
		if err != nil {
			t.Fatal(err)
		}
		out[n] = string(b)
	}
	return out
}

// TestIncrementalQuarantineWork: on the incCluster (30 pods), a pod
// joining or leaving a Quarantine recompiles only the pod itself, the
// endpoints that its allow-list admits (their chains accept it, see
// docs/policy-model.md "Compilation to the IR"), and the other quarantined
// endpoints; every other chain stays as it was. The result equals a full
// build of the same objects.
func TestIncrementalQuarantineWork(t *testing.T) {
	tests := []struct {
		name     string
		before   []*v1alpha1.Quarantine // applied and compiled first
		change   func(t *testing.T, e *policy.Engine)
		after    []*v1alpha1.Quarantine // the quarantines once changed
		pods     []*corev1.Pod          // pods changed by the change
		compiled int
	}{
		{
			name: "quarantining a pod with an empty allow-list recompiles only that pod",
			change: func(t *testing.T, e *policy.Engine) {
				if err := e.SetQuarantine(mkQuarantine("n0", "q", "web-0", nil, nil)); err != nil {
					t.Fatal(err)
				}
			},
			after:    []*v1alpha1.Quarantine{mkQuarantine("n0", "q", "web-0", nil, nil)},
			compiled: 1,
		},
		{
			// web-0 and the five "other" pods of n0 that its list admits
			name: "quarantining a pod recompiles it and the endpoints its allow-list admits",
			change: func(t *testing.T, e *policy.Engine) {
				if err := e.SetQuarantine(mkQuarantine("n0", "q", "web-0", nil, map[string]string{"app": "other"})); err != nil {
					t.Fatal(err)
				}
			},
			after:    []*v1alpha1.Quarantine{mkQuarantine("n0", "q", "web-0", nil, map[string]string{"app": "other"})},
			compiled: 6,
		},
		{
			name:   "releasing a quarantine recompiles the pod and the endpoints that accepted it",
			before: []*v1alpha1.Quarantine{mkQuarantine("n0", "q", "web-0", nil, map[string]string{"app": "other"})},
			change: func(t *testing.T, e *policy.Engine) {
				q := mkQuarantine("n0", "q", "web-0", nil, map[string]string{"app": "other"})
				q.Spec.Released = true
				if err := e.SetQuarantine(q); err != nil {
					t.Fatal(err)
				}
			},
			compiled: 6,
		},
		{
			name:   "deleting a quarantine with an empty allow-list recompiles only its pod",
			before: []*v1alpha1.Quarantine{mkQuarantine("n0", "q", "db-1", nil, nil)},
			change: func(t *testing.T, e *policy.Engine) {
				e.DeleteQuarantine("n0", "q")
			},
			compiled: 1,
		},
		{
			// n1/db-2 joins; n0/web-0 stays quarantined and is recompiled
			// because quarantined chains name every quarantined peer
			name:   "a second quarantine recompiles its pod and the pods already quarantined",
			before: []*v1alpha1.Quarantine{mkQuarantine("n0", "q", "web-0", nil, nil)},
			change: func(t *testing.T, e *policy.Engine) {
				if err := e.SetQuarantine(mkQuarantine("n1", "q2", "db-2", nil, nil)); err != nil {
					t.Fatal(err)
				}
			},
			after:    []*v1alpha1.Quarantine{mkQuarantine("n0", "q", "web-0", nil, nil), mkQuarantine("n1", "q2", "db-2", nil, nil)},
			compiled: 2,
		},
		{
			// the five db pods of n1
			name: "a selector quarantine recompiles the pods it selects",
			change: func(t *testing.T, e *policy.Engine) {
				if err := e.SetQuarantine(mkQuarantine("n1", "dbs", "", map[string]string{"app": "db"}, nil)); err != nil {
					t.Fatal(err)
				}
			},
			after:    []*v1alpha1.Quarantine{mkQuarantine("n1", "dbs", "", map[string]string{"app": "db"}, nil)},
			compiled: 5,
		},
		{
			// n1/web-0 starts matching the selector quarantine "webs"
			// (app=web2), which selected no pod before
			name:   "a pod joining a selector quarantine by relabel recompiles it and the quarantined pods",
			before: []*v1alpha1.Quarantine{mkQuarantine("n1", "webs", "", map[string]string{"app": "web2"}, nil)},
			change: func(t *testing.T, e *policy.Engine) {
				e.SetPod(mkPod("n1", "web-0", "web2", "node-0", "10.244.0.16"))
			},
			after:    []*v1alpha1.Quarantine{mkQuarantine("n1", "webs", "", map[string]string{"app": "web2"}, nil)},
			pods:     []*corev1.Pod{mkPod("n1", "web-0", "web2", "node-0", "10.244.0.16")},
			compiled: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _ := incCluster(t)
			for _, q := range tt.before {
				if err := e.SetQuarantine(q); err != nil {
					t.Fatal(err)
				}
			}
			if n := endpointsCompiledBy(e, func() { tt.change(t, e) }); n != tt.compiled {
				t.Errorf("endpoints compiled: %d, want %d", n, tt.compiled)
			}
			// the same objects compiled from scratch
			full, _ := incCluster(t)
			for _, q := range tt.after {
				if err := full.SetQuarantine(q); err != nil {
					t.Fatal(err)
				}
			}
			for _, p := range tt.pods {
				full.SetPod(p)
			}
			if diff := cmp.Diff(allNodePolicies(t, full), allNodePolicies(t, e)); diff != "" {
				t.Errorf("incremental differs from a full build (-full +incremental):\n%s", diff)
			}
		})
	}
}

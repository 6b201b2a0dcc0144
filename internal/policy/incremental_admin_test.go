package policy_test

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	anpv1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func mkZone(name string, age int, podSel map[string]string, nsSel map[string]string) *v1alpha1.Zone {
	z := &v1alpha1.Zone{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(int64(1000+age), 0))}}
	z.Spec.Pods = &v1alpha1.ZonePods{PodSelector: &metav1.LabelSelector{MatchLabels: podSel}}
	if nsSel != nil {
		z.Spec.Pods.NamespaceSelector = &metav1.LabelSelector{MatchLabels: nsSel}
	}
	return z
}

// TestIncrementalAdminWork: on the incCluster (30 pods: web, db and other
// in n0 and n1, 5 of each), with zone webz (the 10 web pods) and zone dbz
// (the 10 db pods), changes of zones, ZonePolicies, upstream admin
// policies and nodes recompile only the endpoints whose chains they
// change.
func TestIncrementalAdminWork(t *testing.T) {
	tests := []struct {
		name     string
		change   func(t *testing.T, e *policy.Engine)
		compiled int
	}{
		{
			// egress of the 10 web pods, ingress of the 10 db pods
			name: "adding a ZonePolicy recompiles only the endpoints of its from and to zones",
			change: func(t *testing.T, e *policy.Engine) {
				zp := &v1alpha1.ZonePolicy{ObjectMeta: metav1.ObjectMeta{Name: "web-to-db"}}
				zp.Spec.From, zp.Spec.To, zp.Spec.Action = []string{"webz"}, []string{"dbz"}, v1alpha1.ActionAccept
				if err := e.SetZonePolicy(zp); err != nil {
					t.Fatal(err)
				}
			},
			compiled: 20,
		},
		{
			name: "a ZonePolicy from unzoned recompiles only the unzoned endpoints and its to zone",
			change: func(t *testing.T, e *policy.Engine) {
				zp := &v1alpha1.ZonePolicy{ObjectMeta: metav1.ObjectMeta{Name: "other-to-web"}}
				zp.Spec.From, zp.Spec.To, zp.Spec.Action = []string{"unzoned"}, []string{"webz"}, v1alpha1.ActionDeny
				if err := e.SetZonePolicy(zp); err != nil {
					t.Fatal(err)
				}
			},
			compiled: 20,
		},
		{
			// the 5 db pods of n1 leave dbz; nobody else changes zone
			name: "narrowing a zone's selector recompiles only the endpoints that leave it",
			change: func(t *testing.T, e *policy.Engine) {
				if err := e.SetZone(mkZone("dbz", 2, map[string]string{"app": "db"}, map[string]string{corev1.LabelMetadataName: "n0"})); err != nil {
					t.Fatal(err)
				}
			},
			compiled: 5,
		},
		{
			name: "an AdminNetworkPolicy recompiles only the endpoints its subject selects",
			change: func(t *testing.T, e *policy.Engine) {
				a := &anpv1alpha1.AdminNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deny-other"}}
				a.Spec.Priority = 5
				a.Spec.Subject.Pods = &anpv1alpha1.NamespacedPod{
					NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: "n1"}},
					PodSelector:       metav1.LabelSelector{MatchLabels: map[string]string{"app": "other"}},
				}
				a.Spec.Ingress = []anpv1alpha1.AdminNetworkPolicyIngressRule{{Action: anpv1alpha1.AdminNetworkPolicyRuleActionDeny,
					From: []anpv1alpha1.AdminNetworkPolicyIngressPeer{{Namespaces: &metav1.LabelSelector{}}}}}
				if err := e.SetAdminNetworkPolicy(a); err != nil {
					t.Fatal(err)
				}
			},
			compiled: 5,
		},
		{
			name: "a Node change recompiles no endpoint",
			change: func(t *testing.T, e *policy.Engine) {
				n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-0", Labels: map[string]string{"role": "infra"}}}
				n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.250.0.1"}}
				e.SetNode(n)
			},
			compiled: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _ := incCluster(t)
			if err := e.SetZone(mkZone("webz", 1, map[string]string{"app": "web"}, map[string]string{})); err != nil {
				t.Fatal(err)
			}
			if err := e.SetZone(mkZone("dbz", 2, map[string]string{"app": "db"}, map[string]string{})); err != nil {
				t.Fatal(err)
			}
			if n := endpointsCompiledBy(e, func() { tt.change(t, e) }); n != tt.compiled {
				t.Errorf("endpoints compiled: %d, want %d", n, tt.compiled)
			}
		})
	}
}

// endpointsCompiledBy compiles every dirty node, runs change, compiles the
// nodes it dirtied, and returns how many endpoints that compiled.
func endpointsCompiledBy(e *policy.Engine, change func()) int {
	for _, n := range e.TakeDirtyNodes() {
		e.NodePolicy(n)
	}
	before := e.Stats()
	change()
	for _, n := range e.TakeDirtyNodes() {
		e.NodePolicy(n)
	}
	return statsDelta(before, e.Stats()).EndpointsCompiled
}

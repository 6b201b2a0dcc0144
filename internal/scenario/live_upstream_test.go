package scenario_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/scenario"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// The vendored upstream CRDs install, and a live load reads
// AdminNetworkPolicies and ClusterNetworkPolicies (newest version).
func TestLoadLiveUpstreamAdminPolicies(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	c := env.Client
	for _, n := range []string{"front", "back"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []struct{ ns, ip string }{{"front", "10.244.1.1"}, {"back", "10.244.2.1"}} {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: "p"},
			Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Image: "i"}}},
		}
		if err := c.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.ip, PodIPs: []corev1.PodIP{{IP: p.ip}}}
		if err := c.Status().Update(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	for _, doc := range []string{`
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: back-no-front}
spec:
  priority: 5
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: back}}}
  ingress:
  - {action: Deny, from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: front}}}], ports: [{portNumber: {protocol: TCP, port: 80}}]}
`, `
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: back-accept-front-81}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: back}}}
  ingress:
  - {action: Accept, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {number: 81}}}]}
  - {action: Deny, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {range: {start: 82, end: 89}}}}]}
`} {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatal(err)
		}
		if err := c.Create(ctx, u); err != nil {
			t.Fatalf("creating %s: %v", u.GetKind(), err)
		}
	}
	s, err := scenario.LoadLiveConfig(ctx, env.Config)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, o := range s.Objects {
		kinds[o.Kind]++
	}
	if kinds["AdminNetworkPolicy"] != 1 || kinds["ClusterNetworkPolicy"] != 1 {
		t.Fatalf("loaded kinds %v, want one AdminNetworkPolicy and one ClusterNetworkPolicy (warnings %v)", kinds, s.Warnings)
	}
	e, err := s.Engine()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		port uint16
		want string
	}{
		{80, "AdminNetworkPolicy/back-no-front/ingress/0"},
		{81, "ClusterNetworkPolicy/back-accept-front-81/ingress/0"},
		{85, "ClusterNetworkPolicy/back-accept-front-81/ingress/1"},
		{90, ""},
	} {
		d := e.Evaluate(policy.Flow{Src: policy.PodPeer("front", "p"), Dst: policy.PodPeer("back", "p"), Protocol: ir.TCP, Port: tt.port})
		if d.Rule != tt.want {
			t.Errorf("front -> back TCP/%d: rule %q (%s), want %q", tt.port, d.Rule, d.Verdict, tt.want)
		}
	}
}

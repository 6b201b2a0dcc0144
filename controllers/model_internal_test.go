package controllers

import (
	"fmt"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/stream"
)

func TestRefOfRuleID(t *testing.T) {
	for _, c := range []struct {
		id   string
		want policy.ObjectRef
		ok   bool
	}{
		{"NetworkPolicy/app/web/ingress/0", policy.ObjectRef{Kind: KindNetworkPolicy, Namespace: "app", Name: "web"}, true},
		{"NetworkPolicy/app/web/isolation", policy.ObjectRef{Kind: KindNetworkPolicy, Namespace: "app", Name: "web"}, true},
		{"NetworkPolicy/app/web", policy.ObjectRef{Kind: KindNetworkPolicy, Namespace: "app", Name: "web"}, true},
		{"NetworkPolicy/app", policy.ObjectRef{}, false},
		{"Quarantine/app/q1/egress/2", policy.ObjectRef{Kind: KindQuarantine, Namespace: "app", Name: "q1"}, true},
		{"ZonePolicy/zp-1/3", policy.ObjectRef{Kind: KindZonePolicy, Name: "zp-1"}, true},
		{"ZonePolicy/zp-1", policy.ObjectRef{Kind: KindZonePolicy, Name: "zp-1"}, true},
		{"ZoneBoundary/tier-0/ingress", policy.ObjectRef{Kind: KindZone, Name: "tier-0"}, true},
		{"ZoneBaseline/tier-2", policy.ObjectRef{Kind: KindZone, Name: "tier-2"}, true},
		{"Default/allow", policy.ObjectRef{}, false},
		{"NetworkPolicy", policy.ObjectRef{}, false},
		{"", policy.ObjectRef{}, false},
	} {
		got, ok := refOfRuleID(c.id)
		if got != c.want || ok != c.ok {
			t.Errorf("refOfRuleID(%q) = %+v, %v; want %+v, %v", c.id, got, ok, c.want, c.ok)
		}
	}
	if n := testing.AllocsPerRun(100, func() { refOfRuleID("NetworkPolicy/app/web/ingress/0") }); n != 0 {
		t.Errorf("refOfRuleID allocates %v times per call, want 0", n)
	}
}

// TestChangedPodsNodeIsPublishedFirst checks that a publish compiles and
// sends the node of a changed pod before the nodes that only see its
// address move between sets.
func TestChangedPodsNodeIsPublishedFirst(t *testing.T) {
	m := NewModel(stream.NewHub(), 0, nil, logr.Discard())
	pod := func(n int, app string) *corev1.Pod {
		ip := fmt.Sprintf("10.244.%d.10", n)
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: fmt.Sprintf("web-%d", n), Labels: map[string]string{"app": app}},
			Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node-%d", n)}, Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}}
	}
	m.Upsert(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app"}})
	for n := 0; n < 5; n++ {
		m.Upsert(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%d", n)}})
		m.Upsert(pod(n, "web"))
	}
	// Every pod admits ingress from app=client pods: every node
	// references that set.
	m.Upsert(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "from-client", Generation: 1},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}}}}}})
	m.Upsert(pod(9, "client"))
	m.Publish()

	// The client pod on node-9 becomes a web pod (node-9 last by name).
	m.Upsert(pod(9, "web"))
	m.mu.Lock()
	dirty := m.takeDirtyLocked()
	m.mu.Unlock()
	if len(dirty) < 6 {
		t.Fatalf("dirty nodes %v, want node-9 and the 5 nodes referencing the client set", dirty)
	}
	if dirty[0] != "node-9" {
		t.Fatalf("dirty nodes in order %v, want node-9 first", dirty)
	}
	for i := 2; i < len(dirty); i++ {
		if dirty[i-1] > dirty[i] {
			t.Fatalf("dirty nodes after node-9 %v, want them sorted", dirty[1:])
		}
	}
}

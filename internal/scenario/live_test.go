package scenario_test

import (
	"context"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/scenario"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

func TestLoadLive(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	c := env.Client
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"team": "a"}}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct{ name, app, ip string }{{"web", "web", "10.244.1.1"}, {"db", "db", "10.244.2.1"}} {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: p.name, Labels: map[string]string{"app": p.app}},
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
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			}}}},
		},
	}
	if err := c.Create(ctx, np); err != nil {
		t.Fatal(err)
	}
	z := &v1alpha1.Zone{ObjectMeta: metav1.ObjectMeta{Name: "shop"}, Spec: v1alpha1.ZoneSpec{Pods: &v1alpha1.ZonePods{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}}}}
	if err := c.Create(ctx, z); err != nil {
		t.Fatal(err)
	}
	s, err := scenario.LoadLiveConfig(ctx, env.Config)
	if err != nil {
		t.Fatal(err)
	}
	e, err := s.Engine()
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Pods(); len(got) != 2 {
		t.Fatalf("pods %v, want shop/db and shop/web", got)
	}
	for _, tt := range []struct {
		from, to string
		want     bool
	}{{"shop/web", "shop/db", true}, {"shop/db", "shop/web", true}} {
		d := e.Evaluate(policy.Flow{Src: policy.Peer{Pod: tt.from}, Dst: policy.Peer{Pod: tt.to}, Protocol: ir.TCP, Port: 5432})
		if d.Allowed != tt.want {
			t.Errorf("%s -> %s: %+v, want allowed=%v", tt.from, tt.to, d, tt.want)
		}
	}
	if zi := e.ZoneStatus("shop"); zi.Members != 2 {
		t.Errorf("zone shop from the cluster: %+v, want 2 members", zi)
	}
	// the zone makes traffic to the world cross a boundary
	d := e.Evaluate(policy.Flow{Src: policy.PodPeer("shop", "web"), Dst: policy.IPPeer(mustAddr("192.0.2.1")), Protocol: ir.TCP, Port: 443})
	if d.Rule != "ZoneBoundary/shop" {
		t.Errorf("flow to the world: %+v, want ZoneBoundary/shop", d)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

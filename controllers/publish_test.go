package controllers_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/bulkhead-dev/bulkhead/controllers"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/stream"
)

// waitGeneration waits up to d for node's generation to pass after and
// returns it, or after when it did not move.
func waitGeneration(h *stream.Hub, node string, after uint64, d time.Duration) uint64 {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if g := h.Generation(node); g > after {
			return g
		}
		time.Sleep(2 * time.Millisecond)
	}
	return h.Generation(node)
}

func TestRunPublishesAQuietChangeAtOnceAndCoalescesABurst(t *testing.T) {
	const debounce = 2 * time.Second
	hub := stream.NewHub()
	m := controllers.NewModel(hub, debounce, nil, testr.New(t))
	m.Upsert(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app"}})
	m.Upsert(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}})
	m.Publish()
	g0 := hub.Generation("node-a")
	pod := func(i int) *corev1.Pod {
		ip := fmt.Sprintf("10.244.1.%d", 10+i)
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: fmt.Sprintf("web-%d", i), Labels: map[string]string{"app": "web"}},
			Spec:   corev1.PodSpec{NodeName: "node-a"},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()

	start := time.Now()
	m.Upsert(pod(1))
	g1 := waitGeneration(hub, "node-a", g0, debounce/2)
	if g1 == g0 {
		t.Fatalf("a change after a quiet interval was not published within %s (debounce %s); want it at once", debounce/2, debounce)
	}
	t.Logf("first change published after %s", time.Since(start))

	// A burst right after a publish waits for the interval and goes out
	// as one generation.
	m.Upsert(pod(2))
	m.Upsert(pod(3))
	if g := waitGeneration(hub, "node-a", g1, debounce/4); g != g1 {
		t.Fatalf("changes within the debounce interval after a publish went out at once (generation %d → %d); want them held", g1, g)
	}
	g2 := waitGeneration(hub, "node-a", g1, 3*debounce)
	if g2 != g1+1 {
		t.Fatalf("after the burst the generation is %d, want %d (one publish for both changes)", g2, g1+1)
	}
	if n := len(m.NodePolicy("node-a").Endpoints); n != 3 {
		t.Fatalf("node-a has %d endpoints after the burst, want 3", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestAckNotifiesOnlyObjectsItCanChange checks that an agent's ack
// notifies the objects waiting for the acknowledged (or failed)
// generation, and not those the node had already enforced.
func TestAckNotifiesOnlyObjectsItCanChange(t *testing.T) {
	hub := stream.NewHub()
	m := controllers.NewModel(hub, 0, nil, testr.New(t))
	var mu sync.Mutex
	got := map[string]int{}
	m.SetNotify(func(r policy.ObjectRef) { mu.Lock(); got[r.Name]++; mu.Unlock() })
	take := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := got
		got = map[string]int{}
		return out
	}
	ip := "10.244.1.10"
	m.Upsert(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app"}})
	m.Upsert(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}})
	m.Upsert(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: "node-a"}, Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}})
	np := func(name string, port int32) *networkingv1.NetworkPolicy {
		p := intstr.FromInt32(port)
		return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: name, Generation: int64(port)},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
				Ingress:     []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: &p}}}}}}
	}
	m.Upsert(np("np-1", 80))
	m.Upsert(np("np-2", 90))
	m.Publish()
	take()
	g1 := hub.Generation("node-a")
	if !hub.Ack("node-a", hub.Epoch(), g1, "") {
		t.Fatal("ack refused")
	}
	if n := take(); n["np-1"] != 1 || n["np-2"] != 1 {
		t.Fatalf("first ack notified %v, want np-1 and np-2 once each", n)
	}
	if !hub.Ack("node-a", hub.Epoch(), g1, "") {
		t.Fatal("repeated ack refused")
	}
	if n := take(); len(n) != 0 {
		t.Fatalf("a repeated ack notified %v, want nothing", n)
	}

	m.Upsert(np("np-1", 81))
	m.Publish()
	take()
	g2 := hub.Generation("node-a")
	if g2 == g1 {
		t.Fatal("changing np-1 did not move node-a's generation")
	}
	if !hub.Ack("node-a", hub.Epoch(), g2, "applying: boom") {
		t.Fatal("error ack refused")
	}
	if n := take(); n["np-1"] != 1 || n["np-2"] != 0 {
		t.Fatalf("failed ack notified %v, want np-1 only", n)
	}
	if r := m.Realization(policy.ObjectRef{Kind: controllers.KindNetworkPolicy, Namespace: "app", Name: "np-1"}); r.Failed["node-a"] == "" {
		t.Fatalf("np-1 realization %+v, want failed on node-a", r)
	}
	if !hub.Ack("node-a", hub.Epoch(), g2, "") {
		t.Fatal("ack refused")
	}
	if n := take(); n["np-1"] != 1 || n["np-2"] != 0 {
		t.Fatalf("ack after the failure notified %v, want np-1 only", n)
	}
	for _, name := range []string{"np-1", "np-2"} {
		if r := m.Realization(policy.ObjectRef{Kind: controllers.KindNetworkPolicy, Namespace: "app", Name: name}); len(r.Enforced) != 1 || len(r.Lagging) != 0 {
			t.Fatalf("%s realization %+v, want enforced on node-a", name, r)
		}
	}
}

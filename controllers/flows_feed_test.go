package controllers

import (
	"context"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/attrib"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

func TestFlowFeederAttributesPodsWithZonesFromTheCache(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := env.Client
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app", Labels: map[string]string{"team": "app"}}}
	zone := &v1alpha1.Zone{ObjectMeta: metav1.ObjectMeta{Name: "learning"}, Spec: v1alpha1.ZoneSpec{Mode: v1alpha1.ZoneModeLearn,
		Pods: &v1alpha1.ZonePods{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "app"}}}}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "app", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, zone); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status.PodIPs = []corev1.PodIP{{IP: "10.244.1.2"}}
	pod.Status.PodIP = "10.244.1.2"
	pod.Status.Phase = corev1.PodRunning
	if err := c.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	ca, err := cache.New(env.Config, cache.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = ca.Start(ctx) }()
	h := attrib.NewHistory()
	edges := &FlowEdges{Client: c, Attributor: &attrib.Attributor{History: h}}
	f := &FlowFeeder{Cache: ca, Edges: edges, History: h}
	go func() { _ = f.Start(ctx) }()
	ip := netip.MustParseAddr("10.244.1.2")
	deadline := time.Now().Add(15 * time.Second)
	for {
		p, ok := h.Lookup(ip, time.Now())
		if ok && p.Name == "web" && p.Zone == "learning" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Lookup(%s) = %+v, %v; want app/web in zone learning", ip, p, ok)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

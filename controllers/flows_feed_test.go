package controllers

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/attrib"
	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
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

// A Service created moments after the last table build must be known to
// the next report: the table is rebuilt on Service and EndpointSlice
// events, not on a timer (the timer alone left ClusterIP traffic
// attributed as an external /32 for up to 5 s).
func TestFlowFeederSeesANewServiceAtTheNextReport(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := env.Client
	mustCreate := func(o client.Object) {
		t.Helper()
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	mustCreate(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app", Labels: map[string]string{"team": "app"}}})
	mustCreate(&v1alpha1.Zone{ObjectMeta: metav1.ObjectMeta{Name: "learning"}, Spec: v1alpha1.ZoneSpec{Mode: v1alpha1.ZoneModeLearn,
		Pods: &v1alpha1.ZonePods{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "app"}}}}})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "app", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
	mustCreate(pod)
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
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if p, ok := h.Lookup(ip, time.Now()); ok && p.Zone == "learning" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("app/web never attributed in zone learning")
		}
	}
	now := time.Now().UnixNano()
	report := func(dst netip.Addr, port uint32) {
		f.OnFlows("node-1", &pb.FlowReport{Edges: []*pb.FlowEdge{{
			Src: netip.MustParseAddr("10.244.9.9").AsSlice(), Dst: dst.AsSlice(), Protocol: 6, Port: port,
			Verdict: dataplane.VerdictForwarded, Connections: 1, Packets: 4, Bytes: 512, FirstSeenUnixNano: now, LastSeenUnixNano: now,
		}}})
	}
	// The first report builds the table, with no Service in it.
	report(ip, 8080)
	if len(edges.Edges()) != 1 {
		t.Fatalf("first report kept %d edges, want 1: %+v", len(edges.Edges()), edges.Edges())
	}
	if e := edges.Edges()[0]; e.Packets != 4 || e.Bytes != 512 {
		t.Errorf("first edge carries %d packets and %d bytes, want the report's 4 and 512", e.Packets, e.Bytes)
	}

	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "app"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	mustCreate(svc)
	cip := netip.MustParseAddr(svc.Spec.ClusterIP)
	ready := true
	mustCreate(&discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "api-1", Namespace: "app", Labels: map[string]string{discoveryv1.LabelServiceName: "api"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.2"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
	})
	// Well inside the old 5 s refresh period.
	deadline := time.Now().Add(3 * time.Second)
	for {
		report(cip, 80)
		var got []string
		for _, e := range edges.Edges() {
			if w := e.Destination.Workload; w != nil && w.Name == "web" && e.Destination.Service == "app/api" && e.Port == 8080 {
				return
			}
			got = append(got, fmt.Sprintf("%+v:%d", e.Destination, e.Port))
		}
		if time.Now().After(deadline) {
			t.Fatalf("no edge to app/web:8080 through Service app/api (ClusterIP %s); edges: %v", cip, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

package attrib

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestHistoryAttributesByTimeSeen(t *testing.T) {
	h := NewHistory()
	a := Pod{Namespace: "shop", Name: "web-1"}
	b := Pod{Namespace: "shop", Name: "db-0"}
	h.Assign(ip("10.244.1.5"), a, t0)
	h.Release(ip("10.244.1.5"), t0.Add(time.Minute))
	h.Assign(ip("10.244.1.5"), b, t0.Add(2*time.Minute))
	h.Assign(ip("10.244.1.6"), a, t0.Add(3*time.Minute))
	h.Assign(ip("10.244.1.6"), b, t0.Add(4*time.Minute)) // reused without a release in between

	tests := []struct {
		name string
		ip   string
		at   time.Time
		want string // "" for no pod
	}{
		{"a flow while the first pod held the address is the first pod's", "10.244.1.5", t0.Add(30 * time.Second), "web-1"},
		{"a flow after the first pod left and before reuse is nobody's", "10.244.1.5", t0.Add(90 * time.Second), ""},
		{"a flow after reuse is the new pod's", "10.244.1.5", t0.Add(3 * time.Minute), "db-0"},
		{"a flow shortly before the pod was first seen is still its", "10.244.1.5", t0.Add(-10 * time.Second), "web-1"},
		{"a flow long before the pod was first seen is nobody's", "10.244.1.5", t0.Add(-time.Hour), ""},
		{"reuse without release ends the first pod's span", "10.244.1.6", t0.Add(3*time.Minute + 30*time.Second), "web-1"},
		{"reuse without release starts the second pod's span", "10.244.1.6", t0.Add(5 * time.Minute), "db-0"},
		{"an IPv4-mapped address finds the IPv4 history", "::ffff:10.244.1.5", t0.Add(30 * time.Second), "web-1"},
		{"an unknown address is nobody's", "10.244.9.9", t0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := h.Lookup(ip(tt.ip), tt.at)
			if got := p.Name; got != tt.want || ok != (tt.want != "") {
				t.Errorf("Lookup(%s, %v) = %q, %v; want %q", tt.ip, tt.at, got, ok, tt.want)
			}
		})
	}

	h.Prune(t0.Add(90 * time.Second))
	if _, ok := h.Lookup(ip("10.244.1.5"), t0.Add(30*time.Second)); ok {
		t.Error("a span that ended before Prune's time is still found")
	}
	if _, ok := h.Lookup(ip("10.244.1.5"), t0.Add(3*time.Minute)); !ok {
		t.Error("Prune removed a span that is still open")
	}
}

func TestWorkloadWalksOwnerChains(t *testing.T) {
	owners := map[string]OwnerRef{
		"ReplicaSet/web-7d9f": {Kind: "Deployment", Name: "web"},
		"Deployment/web":      {},
		"Job/backup-2901":     {Kind: "CronJob", Name: "backup"},
		"CronJob/backup":      {},
		"StatefulSet/db":      {},
		"DaemonSet/agent":     {},
		"ReplicaSet/loop-a":   {Kind: "ReplicaSet", Name: "loop-b"},
		"ReplicaSet/loop-b":   {Kind: "ReplicaSet", Name: "loop-a"},
	}
	lookup := func(ns, kind, name string) (OwnerRef, bool) {
		o, ok := owners[kind+"/"+name]
		return o, ok
	}
	tests := []struct {
		name  string
		owner OwnerRef
		want  string
	}{
		{"a pod of a ReplicaSet belongs to its Deployment", OwnerRef{"ReplicaSet", "web-7d9f"}, "Deployment/web"},
		{"a pod of a Job belongs to its CronJob", OwnerRef{"Job", "backup-2901"}, "CronJob/backup"},
		{"a StatefulSet pod belongs to the StatefulSet", OwnerRef{"StatefulSet", "db"}, "StatefulSet/db"},
		{"a DaemonSet pod belongs to the DaemonSet", OwnerRef{"DaemonSet", "agent"}, "DaemonSet/agent"},
		{"an owner not in the cache is the top", OwnerRef{"ReplicaSet", "gone"}, "ReplicaSet/gone"},
		{"a pod without owner is its own workload", OwnerRef{}, "Pod/p"},
		{"an owner cycle ends after a bounded walk", OwnerRef{"ReplicaSet", "loop-a"}, "ReplicaSet/loop-b"},
	}
	a := &Attributor{Owners: lookup}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := a.Workload(Pod{Namespace: "ns", Name: "p", Owner: tt.owner})
			got := w.Kind + "/" + w.Name
			if got != tt.want || w.Namespace != "ns" {
				t.Errorf("workload = %s/%s, want ns/%s", w.Namespace, got, tt.want)
			}
		})
	}
}

func TestStableLabelsDropsPerRevisionAndPerPodLabels(t *testing.T) {
	in := map[string]string{
		"app":                                "web",
		"tier":                               "front",
		"pod-template-hash":                  "7d9f",
		"controller-revision-hash":           "db-5c",
		"pod-template-generation":            "3",
		"statefulset.kubernetes.io/pod-name": "db-0",
		"apps.kubernetes.io/pod-index":       "0",
		"topology.kubernetes.io/zone":        "eu-1a",
		"topology.kubernetes.io/region":      "eu",
	}
	want := map[string]string{"app": "web", "tier": "front"}
	if diff := cmp.Diff(want, StableLabels(in)); diff != "" {
		t.Errorf("StableLabels (-want +got):\n%s", diff)
	}
	if got := StableLabels(map[string]string{"pod-template-hash": "x"}); got != nil {
		t.Errorf("only unstable labels gave %v, want nil", got)
	}
}

func newWorld() *Attributor {
	h := NewHistory()
	h.Assign(ip("10.244.1.10"), Pod{Namespace: "shop", Name: "web-7d9f-abc", Labels: map[string]string{"app": "web", "pod-template-hash": "7d9f"}, Owner: OwnerRef{"ReplicaSet", "web-7d9f"}, Zone: "front"}, t0)
	h.Assign(ip("10.244.2.20"), Pod{Namespace: "shop", Name: "db-0", Labels: map[string]string{"app": "db"}, Owner: OwnerRef{"StatefulSet", "db"}, Zone: "data"}, t0)
	owners := map[string]OwnerRef{"ReplicaSet/web-7d9f": {Kind: "Deployment", Name: "web"}}
	svcs := &Services{}
	svcs.Set(ip("10.96.0.50"), ServicePort{Namespace: "shop", Name: "db", Protocol: 6, Port: 5432, Backends: []Backend{{IP: ip("10.244.2.20"), Port: 15432}}})
	svcs.Set(ip("10.96.0.10"), ServicePort{Namespace: "kube-system", Name: "kube-dns", Protocol: 17, Port: 53})
	svcs.Set(ip("10.96.0.60"), ServicePort{Namespace: "shop", Name: "ext", Protocol: 6, Port: 80, Backends: []Backend{{IP: ip("192.0.2.7"), Port: 8080}}})
	return &Attributor{
		History:    h,
		Owners:     func(ns, kind, name string) (OwnerRef, bool) { o, ok := owners[kind+"/"+name]; return o, ok },
		Services:   svcs,
		Aggregates: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("198.51.0.0/16")},
	}
}

func TestAttributeMapsAddressesToWorkloads(t *testing.T) {
	web := &v1alpha1.WorkloadRef{Namespace: "shop", Kind: "Deployment", Name: "web", Labels: map[string]string{"app": "web"}, Zone: "front"}
	db := &v1alpha1.WorkloadRef{Namespace: "shop", Kind: "StatefulSet", Name: "db", Labels: map[string]string{"app": "db"}, Zone: "data"}
	tests := []struct {
		name     string
		dst      string
		proto    uint8
		port     uint16
		wantDst  v1alpha1.EdgeEndpoint
		wantPort int32
	}{
		{"a pod address is its top workload", "10.244.2.20", 6, 15432, v1alpha1.EdgeEndpoint{Workload: db}, 15432},
		{"a ClusterIP is the Service's backend workload on the targetPort", "10.96.0.50", 6, 5432, v1alpha1.EdgeEndpoint{Workload: db, Service: "shop/db"}, 15432},
		{"kube-dns without known backends is a known peer", "10.96.0.10", 17, 53, v1alpha1.EdgeEndpoint{Workload: &v1alpha1.WorkloadRef{Namespace: "kube-system", Kind: "Service", Name: "kube-dns"}, Service: "kube-system/kube-dns"}, 53},
		{"a Service whose backends are not pods stays its ClusterIP", "10.96.0.60", 6, 80, v1alpha1.EdgeEndpoint{CIDR: "10.96.0.60/32", Service: "shop/ext"}, 80},
		{"a ClusterIP on a port the Service does not have is an address", "10.96.0.50", 6, 22, v1alpha1.EdgeEndpoint{CIDR: "10.96.0.50/32"}, 22},
		{"an external address is a /32", "203.0.113.9", 6, 443, v1alpha1.EdgeEndpoint{CIDR: "203.0.113.9/32"}, 443},
		{"an external IPv6 address is a /128", "2001:db8::1", 6, 443, v1alpha1.EdgeEndpoint{CIDR: "2001:db8::1/128"}, 443},
		{"an external address in aggregates is the smallest one", "198.51.100.77", 6, 443, v1alpha1.EdgeEndpoint{CIDR: "198.51.100.0/24"}, 443},
		{"an external address in the larger aggregate only is that one", "198.51.7.1", 6, 443, v1alpha1.EdgeEndpoint{CIDR: "198.51.0.0/16"}, 443},
	}
	a := newWorld()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, ok := a.Attribute(AddrEdge{Src: ip("10.244.1.10"), Dst: ip(tt.dst), Protocol: tt.proto, Port: tt.port, Verdict: v1alpha1.VerdictForwarded, Connections: 2, Packets: 9, Bytes: 1300, FirstSeen: t0.Add(time.Second), LastSeen: t0.Add(5 * time.Second)})
			if !ok {
				t.Fatal("Attribute refused the edge")
			}
			want := v1alpha1.FlowEdge{
				Source:         v1alpha1.EdgeEndpoint{Workload: web},
				Destination:    tt.wantDst,
				Protocol:       map[uint8]v1alpha1.Protocol{6: "TCP", 17: "UDP"}[tt.proto],
				Port:           tt.wantPort,
				Verdict:        v1alpha1.VerdictForwarded,
				Connections:    2,
				Packets:        9,
				Bytes:          1300,
				SourcePodCount: 1,
				SourcePods:     []string{"shop/web-7d9f-abc"},
				FirstSeen:      metav1.NewTime(t0.Add(time.Second)),
				LastSeen:       metav1.NewTime(t0.Add(5 * time.Second)),
				Samples:        []string{fmt.Sprintf("10.244.1.10 -> %s %s/%d", tt.dst, map[uint8]string{6: "TCP", 17: "UDP"}[tt.proto], tt.port)},
			}
			if diff := cmp.Diff(want, e); diff != "" {
				t.Errorf("Attribute (-want +got):\n%s", diff)
			}
		})
	}
	if _, ok := a.Attribute(AddrEdge{Src: ip("10.244.1.10"), Dst: ip("10.244.2.20"), Protocol: 1}); ok {
		t.Error("an ICMP edge was attributed; FlowEdge cannot hold its protocol")
	}
}

func TestAttributeUsesTheAddressHolderAtLastSeen(t *testing.T) {
	h := NewHistory()
	h.Assign(ip("10.244.1.10"), Pod{Namespace: "a", Name: "old"}, t0)
	h.Assign(ip("10.244.1.10"), Pod{Namespace: "b", Name: "new"}, t0.Add(time.Hour))
	a := &Attributor{History: h}
	e, _ := a.Attribute(AddrEdge{Src: ip("10.244.1.10"), Dst: ip("203.0.113.1"), Protocol: 6, Port: 80, FirstSeen: t0.Add(time.Minute), LastSeen: t0.Add(2 * time.Minute)})
	if w := e.Source.Workload; w == nil || w.Name != "old" {
		t.Errorf("source = %+v, want the pod that held the address then (a/old)", e.Source)
	}
}

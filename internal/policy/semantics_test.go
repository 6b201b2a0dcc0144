package policy_test

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func TestInvalidObjectsAreRejectedWithTheirField(t *testing.T) {
	port := func(s string) *intstr.IntOrString { v := intstr.Parse(s); return &v }
	i32 := func(v int32) *int32 { return &v }
	np := func(mut func(*networkingv1.NetworkPolicySpec)) *networkingv1.NetworkPolicy {
		n := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}}
		mut(&n.Spec)
		return n
	}
	tests := []struct {
		name  string
		set   func(e *policy.Engine) error
		field string
	}{
		{"an invalid ipBlock CIDR is an error naming the peer", func(e *policy.Engine) error {
			return e.SetNetworkPolicy(np(func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}, {IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0/8"}}}}}
			}))
		}, "spec.ingress[0].from[1].ipBlock.cidr"},
		{"an except outside the CIDR is an error", func(e *policy.Engine) error {
			return e.SetNetworkPolicy(np(func(s *networkingv1.NetworkPolicySpec) {
				s.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"11.0.0.0/8"}}}}}}
			}))
		}, "spec.egress[0].to[0].ipBlock.except[0]"},
		{"an invalid selector operator is an error", func(e *policy.Engine) error {
			return e.SetNetworkPolicy(np(func(s *networkingv1.NetworkPolicySpec) {
				s.PodSelector = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Like"}}}
			}))
		}, "spec.podSelector"},
		{"In without values is an error", func(e *policy.Engine) error {
			return e.SetNetworkPolicy(np(func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "In"}}}}}}}
			}))
		}, "spec.ingress[0].from[0].namespaceSelector"},
		{"endPort below port is an error", func(e *policy.Engine) error {
			return e.SetNetworkPolicy(np(func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: port("80"), EndPort: i32(79)}}}}
			}))
		}, "spec.ingress[0].ports[0].endPort"},
		{"endPort with a named port is an error", func(e *policy.Engine) error {
			return e.SetNetworkPolicy(np(func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: port("http"), EndPort: i32(90)}}}}
			}))
		}, "spec.ingress[0].ports[0].endPort"},
		{"an unknown protocol is an error", func(e *policy.Engine) error {
			return e.SetNetworkPolicy(np(func(s *networkingv1.NetworkPolicySpec) {
				p := corev1.Protocol("ICMP")
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &p}}}}
			}))
		}, "spec.ingress[0].ports[0].protocol"},
		{"ipBlock combined with a selector is an error", func(e *policy.Engine) error {
			return e.SetNetworkPolicy(np(func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}, IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}}}}}
			}))
		}, "spec.ingress[0].from[0]"},
		{"policy-model.md Zones: the names unzoned and world are reserved", func(e *policy.Engine) error {
			return e.SetZone(&v1alpha1.Zone{ObjectMeta: metav1.ObjectMeta{Name: "world"}, Spec: v1alpha1.ZoneSpec{Pods: &v1alpha1.ZonePods{}}})
		}, "metadata.name"},
		{"a zone needs exactly one of pods or networks", func(e *policy.Engine) error {
			return e.SetZone(&v1alpha1.Zone{ObjectMeta: metav1.ObjectMeta{Name: "z"}})
		}, "spec"},
		{"a zone network with a bad CIDR is an error", func(e *policy.Engine) error {
			return e.SetZone(&v1alpha1.Zone{ObjectMeta: metav1.ObjectMeta{Name: "z"}, Spec: v1alpha1.ZoneSpec{Networks: []v1alpha1.ZoneNetwork{{CIDR: "192.0.2.0/24"}, {CIDR: "nope"}}}})
		}, "spec.networks[1].cidr"},
		{"a ZonePolicy with an unknown action is an error", func(e *policy.Engine) error {
			return e.SetZonePolicy(&v1alpha1.ZonePolicy{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1alpha1.ZonePolicySpec{From: []string{"a"}, To: []string{"b"}, Action: "Allow"}})
		}, "spec.action"},
		{"auditOnly needs action Deny", func(e *policy.Engine) error {
			return e.SetZonePolicy(&v1alpha1.ZonePolicy{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1alpha1.ZonePolicySpec{From: []string{"a"}, To: []string{"b"}, Action: "Accept", AuditOnly: true}})
		}, "spec.auditOnly"},
		{"a quarantine entry with two kinds of peer is an error", func(e *policy.Engine) error {
			return e.SetQuarantine(&v1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "q"}, Spec: v1alpha1.QuarantineSpec{PodName: "a", Allow: v1alpha1.ForensicsAllowList{Egress: []v1alpha1.ForensicsPeer{{Zone: "pci", CIDR: "10.0.0.0/8"}}}}})
		}, "spec.allow.egress[0]"},
		{"a quarantine needs podName or podSelector", func(e *policy.Engine) error {
			return e.SetQuarantine(&v1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "q"}})
		}, "spec"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := policy.New()
			err := tt.set(e)
			var fe *policy.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("got %v, want a *FieldError", err)
			}
			if fe.Field != tt.field {
				t.Errorf("field %q, want %q (error: %v)", fe.Field, tt.field, err)
			}
		})
	}
}

func TestInvalidPolicyLeavesTheModel(t *testing.T) {
	e := policy.New()
	e.SetPod(mkPod("default", "a", "web", "n1", "10.244.1.1"))
	e.SetPod(mkPod("default", "b", "web", "n1", "10.244.1.2"))
	good := mkNP("default", "p", map[string]string{"app": "web"}, nil, 5432)
	good.Spec.Ingress = nil // deny all
	if err := e.SetNetworkPolicy(good); err != nil {
		t.Fatal(err)
	}
	f := policy.Flow{Src: policy.PodPeer("default", "a"), Dst: policy.PodPeer("default", "b"), Protocol: ir.TCP, Port: 80}
	if d := e.Evaluate(f); d.Allowed {
		t.Fatalf("deny-all not in effect: %+v", d)
	}
	bad := good.DeepCopy()
	bad.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "x"}}}}}
	if err := e.SetNetworkPolicy(bad); err == nil {
		t.Fatal("bad policy accepted")
	}
	if d := e.Evaluate(f); !d.Allowed {
		t.Errorf("the rejected update left the old policy in the model: %+v", d)
	}
}

func TestEndpoints(t *testing.T) {
	withIP := func(p *corev1.Pod, mut func(*corev1.Pod)) *corev1.Pod { mut(p); return p }
	tests := []struct {
		name string
		pod  *corev1.Pod
		want bool
	}{
		{"a running pod with an IP is an endpoint", mkPod("d", "p", "x", "n1", "10.244.1.1"), true},
		{"a pod without an IP is not an endpoint", withIP(mkPod("d", "p", "x", "n1", ""), func(*corev1.Pod) {}), false},
		{"a hostNetwork pod is not an endpoint", withIP(mkPod("d", "p", "x", "n1", "10.250.0.1"), func(p *corev1.Pod) { p.Spec.HostNetwork = true }), false},
		{"a Succeeded pod is not an endpoint", withIP(mkPod("d", "p", "x", "n1", "10.244.1.1"), func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), false},
		{"a Failed pod is not an endpoint", withIP(mkPod("d", "p", "x", "n1", "10.244.1.1"), func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }), false},
		{"a pod with podIPs only is an endpoint", withIP(mkPod("d", "p", "x", "n1", ""), func(p *corev1.Pod) { p.Status.PodIPs = []corev1.PodIP{{IP: "fd00:10:244:1::1"}} }), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := policy.New()
			e.SetPod(tt.pod)
			got := len(e.Pods()) == 1
			if got != tt.want {
				t.Errorf("endpoint = %v, want %v", got, tt.want)
			}
			if got != (len(e.NodePolicy("n1").Endpoints) == 1) {
				t.Errorf("NodePolicy disagrees with Pods()")
			}
		})
	}
	// a pod that stops being an endpoint leaves the model
	e := policy.New()
	p := mkPod("d", "p", "x", "n1", "10.244.1.1")
	e.SetPod(p)
	p2 := p.DeepCopy()
	p2.Status.Phase = corev1.PodSucceeded
	e.SetPod(p2)
	if len(e.Pods()) != 0 || len(e.NodePolicy("n1").Endpoints) != 0 {
		t.Error("a pod that succeeded is still an endpoint")
	}
}

func TestAnAddressOfAPodCountsAsThePod(t *testing.T) {
	e := policy.New()
	e.SetPod(mkPod("d", "db", "db", "n1", "10.244.1.1"))
	e.SetPod(mkPod("d", "web", "web", "n1", "10.244.1.2"))
	if err := e.SetNetworkPolicy(mkNP("d", "db", map[string]string{"app": "db"}, []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}, 5432)); err != nil {
		t.Fatal(err)
	}
	byIP := e.Evaluate(policy.Flow{Src: policy.IPPeer(netip.MustParseAddr("10.244.1.2")), Dst: policy.IPPeer(netip.MustParseAddr("10.244.1.1")), Protocol: ir.TCP, Port: 5432})
	if !byIP.Allowed || byIP.Rule != "NetworkPolicy/d/db/ingress/0" {
		t.Errorf("by IP: %+v, want allowed by the podSelector rule", byIP)
	}
	other := e.Evaluate(policy.Flow{Src: policy.IPPeer(netip.MustParseAddr("10.244.1.3")), Dst: policy.PodPeer("d", "db"), Protocol: ir.TCP, Port: 5432})
	if other.Allowed {
		t.Errorf("an address of no pod matched a podSelector: %+v", other)
	}
	unknown := e.Evaluate(policy.Flow{Src: policy.PodPeer("d", "nope"), Dst: policy.PodPeer("d", "db"), Protocol: ir.TCP, Port: 5432})
	if unknown.Error == "" || unknown.Allowed {
		t.Errorf("unknown pod: %+v, want an error", unknown)
	}
}

func zoneAt(name string, ts int64, spec v1alpha1.ZoneSpec) *v1alpha1.Zone {
	return &v1alpha1.Zone{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(ts, 0))}, Spec: spec}
}

func TestZoneStatus(t *testing.T) {
	e := policy.New()
	e.SetNamespace(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x"}})
	e.SetPod(mkPod("x", "a", "web", "n1", "10.244.1.1"))
	e.SetPod(mkPod("x", "b", "db", "n1", "10.244.1.2"))
	e.SetPod(mkPod("y", "c", "web", "n2", "10.244.2.1"))
	all := &v1alpha1.ZonePods{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: "x"}}}
	web := &v1alpha1.ZonePods{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}
	for _, z := range []*v1alpha1.Zone{
		zoneAt("old", 100, v1alpha1.ZoneSpec{Pods: all}),
		zoneAt("young", 200, v1alpha1.ZoneSpec{Pods: web}),
		zoneAt("ext", 100, v1alpha1.ZoneSpec{Networks: []v1alpha1.ZoneNetwork{{CIDR: "192.0.2.0/24"}}}),
		zoneAt("ext2", 300, v1alpha1.ZoneSpec{Networks: []v1alpha1.ZoneNetwork{{CIDR: "192.0.2.128/25"}, {CIDR: "198.51.100.0/24"}}}),
	} {
		if err := e.SetZone(z); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		zone string
		want policy.ZoneInfo
	}{
		{"policy-model.md Zones: the older zone keeps a contested pod", "old", policy.ZoneInfo{Exists: true, Members: 2}},
		{"policy-model.md Zones: the younger zone reports the conflict", "young", policy.ZoneInfo{Exists: true, Members: 1, ConflictsWith: []string{"old"}}},
		{"a CIDR zone counts its prefixes", "ext", policy.ZoneInfo{Exists: true, Members: 1}},
		{"policy-model.md Zones: a younger CIDR zone loses overlapping networks", "ext2", policy.ZoneInfo{Exists: true, Members: 1, ConflictsWith: []string{"ext"}}},
		{"an unknown zone does not exist", "nope", policy.ZoneInfo{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, e.ZoneStatus(tt.zone)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	// 192.0.2.200 is in ext (older), not ext2
	d := e.Evaluate(policy.Flow{Src: policy.PodPeer("y", "c"), Dst: policy.IPPeer(netip.MustParseAddr("192.0.2.200")), Protocol: ir.TCP, Port: 80})
	if d.Rule != "ZoneBoundary/ext" {
		t.Errorf("flow into the contested network decided by %q, want ZoneBoundary/ext", d.Rule)
	}
}

func TestQuarantineActivity(t *testing.T) {
	q := func(mut func(*v1alpha1.Quarantine)) *v1alpha1.Quarantine {
		x := &v1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "q"}, Spec: v1alpha1.QuarantineSpec{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, Reason: "r"}}
		mut(x)
		return x
	}
	tests := []struct {
		name string
		q    *v1alpha1.Quarantine
		want []policy.PodRef
	}{
		{"policy-model.md Quarantine: an active quarantine selects by label in its namespace", q(func(*v1alpha1.Quarantine) {}),
			[]policy.PodRef{{Namespace: "x", Name: "a", Node: "n1"}, {Namespace: "x", Name: "c", Node: "n2"}}},
		{"policy-model.md Quarantine: spec.released makes it inactive", q(func(x *v1alpha1.Quarantine) { x.Spec.Released = true }), nil},
		{"policy-model.md Quarantine: phase Expired makes it inactive", q(func(x *v1alpha1.Quarantine) { x.Status.Phase = v1alpha1.QuarantineExpired }), nil},
		{"policy-model.md Quarantine: podName selects one pod", q(func(x *v1alpha1.Quarantine) { x.Spec.PodSelector = nil; x.Spec.PodName = "b" }),
			[]policy.PodRef{{Namespace: "x", Name: "b", Node: "n1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := policy.New()
			e.SetPod(mkPod("x", "a", "web", "n1", "10.244.1.1"))
			e.SetPod(mkPod("x", "b", "db", "n1", "10.244.1.2"))
			e.SetPod(mkPod("x", "c", "web", "n2", "10.244.2.1"))
			e.SetPod(mkPod("y", "d", "web", "n2", "10.244.2.2"))
			if err := e.SetQuarantine(tt.q); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, e.QuarantinedPods("x", "q")); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			for _, n := range e.Nodes() {
				for _, ep := range e.NodePolicy(n).Endpoints {
					in := false
					for _, p := range tt.want {
						in = in || p.Namespace+"/"+p.Name == ep.Name
					}
					if ep.Quarantined != in || ep.CutConnections != in {
						t.Errorf("endpoint %s: quarantined=%v cut=%v, want %v", ep.Name, ep.Quarantined, ep.CutConnections, in)
					}
				}
			}
		})
	}
}

func TestObjectNodes(t *testing.T) {
	e, _ := incCluster(t)
	// db pods of n0 live on nodes 0..3 (db-0..db-4 at i%4); web pods of n0 too
	if diff := cmp.Diff([]string{"node-0", "node-1", "node-2", "node-3"}, e.ObjectNodes(policy.ObjectRef{Kind: "NetworkPolicy", Namespace: "n0", Name: "db-from-web"})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	e.SetPod(mkPod("n2", "solo", "db", "node-9", "10.244.9.1"))
	if err := e.SetNetworkPolicy(mkNP("n2", "solo", map[string]string{"app": "db"}, nil, 1)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"node-9"}, e.ObjectNodes(policy.ObjectRef{Kind: "NetworkPolicy", Namespace: "n2", Name: "solo"})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if got := e.ObjectNodes(policy.ObjectRef{Kind: "NetworkPolicy", Namespace: "n2", Name: "none"}); len(got) != 0 {
		t.Errorf("unknown policy on %v", got)
	}
	// a zone whose only member is on node-9: the unzoned endpoints of
	// nodes 0..3 judge it by the ZoneMode/* sets in their boundary rules
	if err := e.SetZone(mkZone("soloz", 1, nil, map[string]string{corev1.LabelMetadataName: "n2"})); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"node-0", "node-1", "node-2", "node-3", "node-9"}, e.ObjectNodes(policy.ObjectRef{Kind: "Zone", Name: "soloz"})); diff != "" {
		t.Errorf("zone soloz (-want +got):\n%s", diff)
	}
}

func TestInvalidSelectorIsRejectedAfterAValidLookalike(t *testing.T) {
	// the selector cache must not let an invalid selector borrow the
	// conversion of a valid one with similar text
	e := policy.New()
	valid := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "n", Name: "a"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"a": "b", "c": "d"}}}}
	if err := e.SetNetworkPolicy(valid); err != nil {
		t.Fatal(err)
	}
	invalid := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "n", Name: "b"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"a": "b1:c1:d"}}}}
	if err := e.SetNetworkPolicy(invalid); err == nil {
		t.Error("invalid label value accepted")
	}
}

func TestIsBoundaryRuleID(t *testing.T) {
	for id, want := range map[string]bool{
		"ZoneBoundary":       true,
		"ZoneBoundary/pci":   true,
		"ZoneBaseline/pci":   false,
		"ZoneBoundaryX":      false,
		"ZonePolicy/a-to-b":  false,
		"NetworkPolicy/a/b/": false,
	} {
		if got := policy.IsBoundaryRuleID(id); got != want {
			t.Errorf("IsBoundaryRuleID(%q) = %v, want %v", id, got, want)
		}
	}
}

package suggest

import (
	"fmt"
	"math/rand"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// tier describes one workload of the test app.
type tier struct {
	ns, kind, name string
	labels         map[string]string
	ports          []corev1.ContainerPort
	zone           string
}

var (
	frontend = tier{"web", "Deployment", "frontend", map[string]string{"app": "frontend", "team": "shop"}, nil, "app"}
	api      = tier{"shop", "Deployment", "api", map[string]string{"app": "api", "team": "shop", "tier": "backend"},
		[]corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}, "app"}
	batch = tier{"shop", "Deployment", "batch", map[string]string{"app": "batch", "team": "shop", "tier": "backend"}, nil, "app"}
	db    = tier{"data", "StatefulSet", "db", map[string]string{"app": "db", "team": "shop"},
		[]corev1.ContainerPort{{Name: "postgres", ContainerPort: 5432}, {Name: "metrics", ContainerPort: 9187}}, "app"}
	dns = tier{"kube-system", "Deployment", "coredns", map[string]string{"k8s-app": "kube-dns"}, nil, ""}
)

func (w tier) ref() *v1alpha1.WorkloadRef {
	return &v1alpha1.WorkloadRef{Namespace: w.ns, Kind: w.kind, Name: w.name, Labels: w.labels, Zone: w.zone}
}

func (w tier) pod(suffix string, extra map[string]string) Pod {
	l := map[string]string{}
	for k, v := range w.labels {
		l[k] = v
	}
	for k, v := range extra {
		l[k] = v
	}
	return Pod{Namespace: w.ns, Name: w.name + "-" + suffix, Labels: l, WorkloadKind: w.kind, WorkloadName: w.name, Ports: w.ports}
}

func edge(src, dst v1alpha1.EdgeEndpoint, proto v1alpha1.Protocol, port int32, first time.Duration) v1alpha1.FlowEdge {
	return v1alpha1.FlowEdge{Source: src, Destination: dst, Protocol: proto, Port: port, Verdict: v1alpha1.VerdictForwarded,
		Connections: 10, Packets: 40, SourcePodCount: 2, FirstSeen: metav1.NewTime(t0.Add(first)), LastSeen: metav1.NewTime(t0.Add(first + time.Minute)),
		Samples: []string{fmt.Sprintf("sample %s/%d", proto, port)}}
}

func wl(w tier) v1alpha1.EdgeEndpoint { return v1alpha1.EdgeEndpoint{Workload: w.ref()} }

var dnsEP = v1alpha1.EdgeEndpoint{Workload: dns.ref(), Service: "kube-system/kube-dns"}

func appEdges() []v1alpha1.FlowEdge {
	return []v1alpha1.FlowEdge{
		edge(wl(frontend), v1alpha1.EdgeEndpoint{Workload: api.ref(), Service: "shop/api"}, v1alpha1.ProtocolTCP, 8080, 0),
		edge(wl(api), wl(db), v1alpha1.ProtocolTCP, 5432, time.Minute),
		edge(wl(frontend), dnsEP, v1alpha1.ProtocolUDP, 53, 0),
		edge(wl(api), dnsEP, v1alpha1.ProtocolUDP, 53, 0),
		edge(wl(api), v1alpha1.EdgeEndpoint{CIDR: "10.99.0.5/32"}, v1alpha1.ProtocolTCP, 443, 2*time.Minute),
	}
}

func appWorld() World {
	h := map[string]string{"pod-template-hash": "aaa"}
	return World{Pods: []Pod{
		frontend.pod("aaa-1", h), frontend.pod("aaa-2", h),
		api.pod("aaa-1", h), api.pod("aaa-2", h),
		batch.pod("aaa-1", h),
		db.pod("0", map[string]string{"statefulset.kubernetes.io/pod-name": "db-0"}),
		dns.pod("aaa-1", h),
		{Namespace: "kube-system", Name: "rogue-dns", Labels: map[string]string{"app": "rogue-dns"}, WorkloadKind: "Pod", WorkloadName: "rogue-dns"},
	}}
}

func TestThreeTierAppSuggestion(t *testing.T) {
	res := Suggest(appEdges(), appWorld(), Options{Now: t0.Add(time.Hour), StableAfter: 10 * time.Minute})
	if len(res.Suggestions) != 1 || res.Suggestions[0].Name != "zone-app" {
		t.Fatalf("want one suggestion zone-app, got %+v", res.Suggestions)
	}
	sg := res.Suggestions[0]
	if len(sg.Problems) > 0 || len(res.Problems) > 0 {
		t.Fatalf("problems: %v %v", sg.Problems, res.Problems)
	}
	if sg.State != v1alpha1.SuggestionStable {
		t.Errorf("state %s, want Stable an hour after the last new edge", sg.State)
	}
	if want := t0.Add(2 * time.Minute); !sg.LastChange.Equal(want) {
		t.Errorf("lastChange %v, want %v (first seen of the newest edge)", sg.LastChange, want)
	}
	spec, err := sg.Spec()
	if err != nil {
		t.Fatal(err)
	}
	wantNP := `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: bulkhead-statefulset-db
  namespace: data
spec:
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: shop
      podSelector:
        matchLabels:
          app: api
    ports:
    - port: postgres
      protocol: TCP
  podSelector:
    matchLabels:
      app: db
  policyTypes:
  - Ingress
  - Egress
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: bulkhead-deployment-api
  namespace: shop
spec:
  egress:
  - ports:
    - port: 443
      protocol: TCP
    to:
    - ipBlock:
        cidr: 10.99.0.5/32
  - ports:
    - port: postgres
      protocol: TCP
    to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: data
      podSelector:
        matchLabels:
          app: db
  - ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
    to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: web
      podSelector:
        matchLabels:
          app: frontend
    ports:
    - port: http
      protocol: TCP
  podSelector:
    matchLabels:
      app: api
  policyTypes:
  - Ingress
  - Egress
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: bulkhead-deployment-frontend
  namespace: web
spec:
  egress:
  - ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
    to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  - ports:
    - port: http
      protocol: TCP
    to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: shop
      podSelector:
        matchLabels:
          app: api
  podSelector:
    matchLabels:
      app: frontend
  policyTypes:
  - Ingress
  - Egress
`
	if d := cmp.Diff(wantNP, spec.NetworkPolicies); d != "" {
		t.Errorf("network policies (-want +got):\n%s", d)
	}
	wantZP := `apiVersion: segmentation.bulkhead.dev/v1alpha1
kind: ZonePolicy
metadata:
  name: bulkhead-app-to-unzoned
spec:
  action: Pass
  from:
  - app
  ports:
  - port: 53
    protocol: TCP
  - port: 53
    protocol: UDP
  priority: 500
  to:
  - unzoned
---
apiVersion: segmentation.bulkhead.dev/v1alpha1
kind: ZonePolicy
metadata:
  name: bulkhead-app-to-world
spec:
  action: Pass
  from:
  - app
  ports:
  - port: 443
    protocol: TCP
  priority: 500
  to:
  - world
`
	if d := cmp.Diff(wantZP, spec.ZonePolicies); d != "" {
		t.Errorf("zone policies (-want +got):\n%s", d)
	}
	// frontend: egress api, egress dns; api: ingress frontend, egress db,
	// dns, cidr; db: ingress api.
	if sg.MinimumRules != 7 || sg.NetworkPolicyRules != 7 {
		t.Errorf("rules %d, minimum %d; want 7 and 7", sg.NetworkPolicyRules, sg.MinimumRules)
	}
	if sg.Tuples != 5 {
		t.Errorf("tuples %d, want 5", sg.Tuples)
	}
	if len(sg.Rules) != 9 {
		t.Errorf("evidence rules %d, want 9 (7 NetworkPolicy + 2 ZonePolicy)", len(sg.Rules))
	}
	for _, r := range sg.Rules {
		if r.Evidence.Flows == 0 || r.Evidence.FirstSeen.IsZero() || len(r.Evidence.Samples) == 0 || r.Evidence.SourcePods == 0 {
			t.Errorf("rule %q lacks evidence: %+v", r.Description, r.Evidence)
		}
	}
}

func TestOutputIsDeterministic(t *testing.T) {
	base := Suggest(appEdges(), appWorld(), Options{Now: t0})
	want, err := base.Suggestions[0].Spec()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 20; i++ {
		edges, world := appEdges(), appWorld()
		rng.Shuffle(len(edges), func(a, b int) { edges[a], edges[b] = edges[b], edges[a] })
		rng.Shuffle(len(world.Pods), func(a, b int) { world.Pods[a], world.Pods[b] = world.Pods[b], world.Pods[a] })
		r := Suggest(edges, world, Options{Now: t0})
		got, err := r.Suggestions[0].Spec()
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Fatalf("shuffle %d changed the output:\n%s", i, d)
		}
	}
}

func TestSelectors(t *testing.T) {
	mk := func(name string, l map[string]string) Pod {
		return Pod{Namespace: "n", Name: name + "-1", Labels: l, WorkloadKind: "Deployment", WorkloadName: name}
	}
	tests := []struct {
		name    string
		pods    []Pod
		want    map[string]string
		problem string
	}{
		{"one label that only the workload's pods carry is enough",
			[]Pod{mk("w", map[string]string{"app": "w", "team": "t"}), mk("o", map[string]string{"app": "o", "team": "t"})},
			map[string]string{"app": "w"}, ""},
		{"a label shared with another workload is not used alone",
			[]Pod{mk("w", map[string]string{"app": "x", "component": "v1"}), mk("o", map[string]string{"app": "x", "component": "v2"})},
			map[string]string{"component": "v1"}, ""},
		{"falls back to two labels when no single label is exact",
			[]Pod{mk("w", map[string]string{"a": "1", "b": "1"}), mk("o1", map[string]string{"a": "1", "b": "2"}), mk("o2", map[string]string{"a": "2", "b": "1"})},
			map[string]string{"a": "1", "b": "1"}, ""},
		{"unstable labels are never used",
			[]Pod{mk("w", map[string]string{"app": "x", "pod-template-hash": "abc"}), mk("o", map[string]string{"app": "x", "pod-template-hash": "def"})},
			nil, "also select pods of other workloads (n/o-1)"},
		{"pods with no stable label get no policy rather than a namespace-wide one",
			[]Pod{mk("w", map[string]string{"pod-template-hash": "abc"})},
			nil, "share no stable label"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &v1alpha1.WorkloadRef{Namespace: "n", Kind: "Deployment", Name: "w", Labels: tt.pods[0].Labels}
			edges := []v1alpha1.FlowEdge{edge(v1alpha1.EdgeEndpoint{Workload: w}, v1alpha1.EdgeEndpoint{CIDR: "10.99.0.1/32"}, v1alpha1.ProtocolTCP, 80, 0)}
			res := Suggest(edges, World{Pods: tt.pods}, Options{Now: t0})
			sg, ok := res.Find("ns-n")
			if !ok {
				t.Fatalf("no suggestion ns-n: %+v", res)
			}
			if tt.problem != "" {
				if len(sg.NetworkPolicies) != 0 {
					t.Errorf("want no policy, got %+v", sg.NetworkPolicies)
				}
				if len(sg.Problems) != 1 || !strings.Contains(sg.Problems[0], tt.problem) {
					t.Errorf("problems %q, want one containing %q", sg.Problems, tt.problem)
				}
				return
			}
			if len(sg.NetworkPolicies) != 1 {
				t.Fatalf("want one policy, got %d (problems %v)", len(sg.NetworkPolicies), sg.Problems)
			}
			if d := cmp.Diff(tt.want, sg.NetworkPolicies[0].Spec.PodSelector.MatchLabels); d != "" {
				t.Errorf("selector (-want +got):\n%s", d)
			}
		})
	}
}

func TestStateAndFilters(t *testing.T) {
	edges := appEdges()
	tests := []struct {
		name  string
		opts  Options
		state v1alpha1.SuggestionState
		rules int
	}{
		{"Learning while the newest edge is younger than stableAfter", Options{Now: t0.Add(5 * time.Minute), StableAfter: 10 * time.Minute}, v1alpha1.SuggestionLearning, 7},
		{"Stable once no edge was new for stableAfter", Options{Now: t0.Add(12 * time.Minute), StableAfter: 10 * time.Minute}, v1alpha1.SuggestionStable, 7},
		{"Since keeps only edges last seen after it", Options{Now: t0.Add(time.Hour), Since: t0.Add(150 * time.Second)}, v1alpha1.SuggestionStable, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := Suggest(edges, appWorld(), tt.opts)
			sg, ok := res.Find("zone-app")
			if !ok {
				t.Fatal("no zone-app suggestion")
			}
			if sg.State != tt.state || sg.NetworkPolicyRules != tt.rules {
				t.Errorf("state %s rules %d, want %s %d", sg.State, sg.NetworkPolicyRules, tt.state, tt.rules)
			}
		})
	}
	t.Run("dropped edges are not learned", func(t *testing.T) {
		e := appEdges()
		for i := range e {
			e[i].Verdict = v1alpha1.VerdictDropped
		}
		if res := Suggest(e, appWorld(), Options{Now: t0}); len(res.Suggestions) != 0 {
			t.Errorf("want no suggestion from dropped edges, got %d", len(res.Suggestions))
		}
	})
	t.Run("a bad CIDR is reported, not a panic", func(t *testing.T) {
		e := []v1alpha1.FlowEdge{edge(wl(api), v1alpha1.EdgeEndpoint{CIDR: "10.0.0/8"}, v1alpha1.ProtocolTCP, 1, 0)}
		res := Suggest(e, appWorld(), Options{Now: t0})
		if len(res.Problems) != 1 || !strings.Contains(res.Problems[0], `"10.0.0/8"`) {
			t.Errorf("problems %q", res.Problems)
		}
	})
}

func TestParseRoundTrip(t *testing.T) {
	res := Suggest(appEdges(), appWorld(), Options{Now: t0})
	spec, err := res.Suggestions[0].Spec()
	if err != nil {
		t.Fatal(err)
	}
	nps, err := ParseNetworkPolicies(spec.NetworkPolicies)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(res.Suggestions[0].NetworkPolicies, nps); d != "" {
		t.Errorf("network policies round trip (-want +got):\n%s", d)
	}
	zps, err := ParseZonePolicies(spec.ZonePolicies)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(res.Suggestions[0].ZonePolicies, zps); d != "" {
		t.Errorf("zone policies round trip (-want +got):\n%s", d)
	}
	if _, err := ParseZonePolicies("kind: ZonePolicy\nmetadata: {name: x}\nspec: {bogus: 1}\n"); err == nil || !strings.Contains(err.Error(), "document 1") {
		t.Errorf("want an error naming the document, got %v", err)
	}
}

// TestSuggestionHoldsOutAndDenies applies the suggestion in an enforced
// zone with the policy engine and checks new pods (scale-up, new
// pod-template-hash) get the learned traffic and attacks are denied.
func TestSuggestionHoldsOutAndDenies(t *testing.T) {
	res := Suggest(appEdges(), appWorld(), Options{Now: t0})
	spec, err := res.Suggestions[0].Spec()
	if err != nil {
		t.Fatal(err)
	}
	e := policy.New()
	for _, ns := range []string{"web", "shop", "data", "kube-system"} {
		l := map[string]string{NamespaceLabel: ns}
		if ns != "kube-system" {
			l["team"] = "shop"
		}
		e.SetNamespace(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: l}})
	}
	if err := e.SetZone(&v1alpha1.Zone{ObjectMeta: metav1.ObjectMeta{Name: "app", CreationTimestamp: metav1.NewTime(t0)},
		Spec: v1alpha1.ZoneSpec{Mode: v1alpha1.ZoneModeEnforce, Pods: &v1alpha1.ZonePods{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "shop"}}}}}); err != nil {
		t.Fatal(err)
	}
	nps, err := ParseNetworkPolicies(spec.NetworkPolicies)
	if err != nil {
		t.Fatal(err)
	}
	for i := range nps {
		if err := e.SetNetworkPolicy(&nps[i]); err != nil {
			t.Fatal(err)
		}
	}
	zps, err := ParseZonePolicies(spec.ZonePolicies)
	if err != nil {
		t.Fatal(err)
	}
	for i := range zps {
		if err := e.SetZonePolicy(&zps[i]); err != nil {
			t.Fatal(err)
		}
	}
	// Held-out pods: none of them existed while learning.
	n := 10
	addPod := func(p Pod) string {
		n++
		cp := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels},
			Spec:   corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c", Ports: p.Ports}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.244.1.%d", n), PodIPs: []corev1.PodIP{{IP: fmt.Sprintf("10.244.1.%d", n)}}}}
		e.SetPod(cp)
		return p.Namespace + "/" + p.Name
	}
	rollout := map[string]string{"pod-template-hash": "bbb"}
	fe := addPod(frontend.pod("bbb-1", rollout))
	ap := addPod(api.pod("bbb-7", rollout))
	bp := addPod(batch.pod("bbb-1", rollout))
	dbp := addPod(db.pod("3", map[string]string{"statefulset.kubernetes.io/pod-name": "db-3"}))
	dn := addPod(dns.pod("ccc-1", map[string]string{"pod-template-hash": "ccc"}))
	rogue := addPod(Pod{Namespace: "kube-system", Name: "rogue-dns", Labels: map[string]string{"app": "rogue-dns"}})
	pp := func(s string) policy.Peer { return policy.Peer{Pod: s} }
	ipp := func(s string) policy.Peer { return policy.IPPeer(netip.MustParseAddr(s)) }
	type flow struct {
		src, dst policy.Peer
		proto    ir.Protocol
		port     uint16
	}
	allowed := []flow{
		{pp(fe), pp(ap), ir.TCP, 8080},
		{pp(fe), pp(dn), ir.UDP, 53},
		{pp(fe), pp(dn), ir.TCP, 53},
		{pp(ap), pp(dbp), ir.TCP, 5432},
		{pp(ap), pp(dn), ir.UDP, 53},
		{pp(ap), ipp("10.99.0.5"), ir.TCP, 443},
	}
	allowedOK := 0
	for _, f := range allowed {
		d := e.Evaluate(policy.Flow{Src: f.src, Dst: f.dst, Protocol: f.proto, Port: f.port})
		if d.Allowed {
			allowedOK++
		} else {
			t.Errorf("held-out %s -> %s %s/%d denied by %s %s", f.src, f.dst, f.proto, f.port, d.Tier, d.Rule)
		}
	}
	var attacks []flow
	scan := []uint16{5432, 8080, 9187}
	for port := uint16(1); port <= 1024; port++ {
		scan = append(scan, port)
	}
	for _, port := range scan {
		if port != 8080 {
			attacks = append(attacks, flow{pp(fe), pp(ap), ir.TCP, port})
		}
		attacks = append(attacks, flow{pp(fe), pp(dbp), ir.TCP, port}, flow{pp(fe), pp(ap), ir.UDP, port})
	}
	attacks = append(attacks,
		flow{pp(fe), pp(dbp), ir.TCP, 5432},
		flow{pp(ap), pp(dbp), ir.TCP, 9187},
		flow{pp(bp), pp(dbp), ir.TCP, 5432},
		flow{pp(fe), pp(rogue), ir.UDP, 53},
		flow{pp(ap), pp(rogue), ir.UDP, 53},
		flow{pp(ap), ipp("10.99.0.6"), ir.TCP, 443},
		flow{pp(fe), ipp("10.99.0.5"), ir.TCP, 443},
	)
	denied := 0
	for _, f := range attacks {
		if d := e.Evaluate(policy.Flow{Src: f.src, Dst: f.dst, Protocol: f.proto, Port: f.port}); !d.Allowed {
			denied++
		} else {
			t.Errorf("attack %s -> %s %s/%d allowed by %s %s", f.src, f.dst, f.proto, f.port, d.Tier, d.Rule)
		}
	}
	t.Logf("held-out flows allowed: %d of %d; attack flows denied: %d of %d", allowedOK, len(allowed), denied, len(attacks))
	if denied != len(attacks) {
		t.Errorf("denied %d of %d attack flows, want all", denied, len(attacks))
	}
}

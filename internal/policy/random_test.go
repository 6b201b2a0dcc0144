package policy_test

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"net/netip"
	"os"
	"slices"
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

// gen draws choices from fuzz input bytes; when they run out it continues
// with a PRNG seeded from them, so every input gives a full scenario.
type gen struct {
	b   []byte
	i   int
	rnd *rand.Rand
}

func newGen(b []byte) *gen {
	var seed int64 = 1
	for _, c := range b {
		seed = seed*131 + int64(c)
	}
	return &gen{b: b, rnd: rand.New(rand.NewSource(seed))}
}

func (g *gen) n(k int) int {
	if k <= 1 {
		return 0
	}
	if g.i < len(g.b) {
		v := int(g.b[g.i])
		g.i++
		return v % k
	}
	return g.rnd.Intn(k)
}

func (g *gen) pick(xs ...string) string { return xs[g.n(len(xs))] }
func (g *gen) coin() bool               { return g.n(2) == 0 }

type world struct {
	namespaces []*corev1.Namespace
	pods       []*corev1.Pod
	nps        []*networkingv1.NetworkPolicy
	zones      []*v1alpha1.Zone
	zps        []*v1alpha1.ZonePolicy
	quars      []*v1alpha1.Quarantine
	up         upstreamWorld
}

var nsNames = []string{"n0", "n1", "n2", "kube-system"}

func (g *gen) labelSelector() *metav1.LabelSelector {
	switch g.n(6) {
	case 0:
		return &metav1.LabelSelector{}
	case 1, 2:
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": g.pick("web", "db", "api")}}
	case 3:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpNotIn, Values: []string{g.pick("fe", "be")}}}}
	case 4:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOperator(g.pick("Exists", "DoesNotExist"))}}}
	default:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"web", g.pick("db", "api")}}}}
	}
}

func (g *gen) nsSelector() *metav1.LabelSelector {
	switch g.n(4) {
	case 0:
		return &metav1.LabelSelector{}
	case 1:
		return &metav1.LabelSelector{MatchLabels: map[string]string{"team": g.pick("a", "b")}}
	case 2:
		return &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: g.pick(nsNames...)}}
	default:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"a"}}}}
	}
}

var protos = []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP}

func (g *gen) npPorts() []networkingv1.NetworkPolicyPort {
	k := g.n(4)
	if k == 0 {
		return nil
	}
	var out []networkingv1.NetworkPolicyPort
	for i := 0; i < k-1+g.n(2); i++ {
		p := networkingv1.NetworkPolicyPort{}
		if g.coin() {
			pr := protos[g.n(3)]
			p.Protocol = &pr
		}
		switch g.n(5) {
		case 0:
		case 1, 2:
			v := intstr.FromInt32(int32(g.pick("80", "81", "53", "8080")[0]-'0')*0 + int32([]int{80, 81, 53, 8080}[g.n(4)]))
			p.Port = &v
			if g.n(3) == 0 {
				e := p.Port.IntVal + int32(g.n(3))
				p.EndPort = &e
			}
		default:
			v := intstr.FromString(g.pick("http", "alt", "dns", "sctp"))
			p.Port = &v
		}
		out = append(out, p)
	}
	return out
}

func (g *gen) npPeers() []networkingv1.NetworkPolicyPeer {
	k := g.n(4)
	var out []networkingv1.NetworkPolicyPeer
	for i := 0; i < k; i++ {
		switch g.n(4) {
		case 0:
			out = append(out, networkingv1.NetworkPolicyPeer{PodSelector: g.labelSelector()})
		case 1:
			out = append(out, networkingv1.NetworkPolicyPeer{NamespaceSelector: g.nsSelector()})
		case 2:
			out = append(out, networkingv1.NetworkPolicyPeer{PodSelector: g.labelSelector(), NamespaceSelector: g.nsSelector()})
		default:
			b := &networkingv1.IPBlock{CIDR: g.pick("10.244.1.0/24", "10.244.0.0/16", "192.0.2.0/24", "0.0.0.0/0", "fd00:10:244::/48")}
			if g.coin() {
				switch b.CIDR {
				case "10.244.1.0/24":
					b.Except = []string{"10.244.1.0/30"}
				case "10.244.0.0/16":
					b.Except = []string{"10.244.2.0/24"}
				case "192.0.2.0/24":
					b.Except = []string{"192.0.2.128/25"}
				case "0.0.0.0/0":
					b.Except = []string{"10.244.1.4/32"}
				default:
					b.Except = []string{"fd00:10:244:2::/64"}
				}
			}
			out = append(out, networkingv1.NetworkPolicyPeer{IPBlock: b})
		}
	}
	return out
}

func (g *gen) networkPolicy(i int) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("np%d", i), Namespace: g.pick(nsNames[:3]...)}}
	np.Spec.PodSelector = *g.labelSelector()
	switch g.n(4) {
	case 1:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	case 2:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	case 3:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	}
	for j := g.n(3); j > 0; j-- {
		np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: g.npPeers(), Ports: g.npPorts()})
	}
	for j := g.n(3); j > 0; j-- {
		np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: g.npPeers(), Ports: g.npPorts()})
	}
	return np
}

func (g *gen) crdPorts() []v1alpha1.PolicyPort {
	if g.n(3) != 0 {
		return nil
	}
	var out []v1alpha1.PolicyPort
	for _, p := range g.npPorts() {
		cp := v1alpha1.PolicyPort{Port: p.Port, EndPort: p.EndPort}
		if p.Protocol != nil {
			cp.Protocol = v1alpha1.Protocol(*p.Protocol)
		}
		out = append(out, cp)
	}
	return out
}

func (g *gen) world() *world {
	w := &world{}
	for _, n := range nsNames {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{}}}
		if g.coin() {
			ns.Labels["team"] = g.pick("a", "b")
		}
		w.namespaces = append(w.namespaces, ns)
	}
	npods := 3 + g.n(6)
	for i := 0; i < npods; i++ {
		node := 1 + g.n(2)
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Namespace: g.pick(nsNames...), Labels: map[string]string{"app": g.pick("web", "db", "api")}}}
		if g.coin() {
			p.Labels["tier"] = g.pick("fe", "be")
		}
		if p.Namespace == "kube-system" && g.coin() {
			p.Labels["k8s-app"] = "kube-dns"
		}
		p.Spec.NodeName = fmt.Sprintf("node%d", node)
		c := corev1.Container{Name: "c"}
		httpPort := int32(80)
		if g.n(3) == 0 {
			httpPort = 8080
		}
		for _, cp := range []corev1.ContainerPort{
			{Name: "http", ContainerPort: httpPort, Protocol: corev1.ProtocolTCP},
			{Name: "alt", ContainerPort: 81, Protocol: corev1.ProtocolTCP},
			{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
			{Name: "sctp", ContainerPort: 90, Protocol: corev1.ProtocolSCTP},
		} {
			if g.coin() {
				c.Ports = append(c.Ports, cp)
			}
		}
		p.Spec.Containers = []corev1.Container{c}
		p.Status.PodIP = fmt.Sprintf("10.244.%d.%d", node, i+1)
		p.Status.PodIPs = []corev1.PodIP{{IP: p.Status.PodIP}}
		if g.n(3) == 0 {
			p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: fmt.Sprintf("fd00:10:244:%d::%x", node, i+1)})
		}
		w.pods = append(w.pods, p)
	}
	for i := g.n(5); i > 0; i-- {
		w.nps = append(w.nps, g.networkPolicy(i))
	}
	zoneNames := []string{}
	for i := g.n(4); i > 0; i-- {
		z := &v1alpha1.Zone{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("z%d", i), CreationTimestamp: metav1.NewTime(time.Unix(int64(1000+g.n(3)), 0))}}
		if g.n(4) == 0 {
			z.Spec.Networks = []v1alpha1.ZoneNetwork{{CIDR: g.pick("192.0.2.0/24", "198.51.100.0/24", "10.244.1.0/24")}}
			if g.coin() {
				z.Spec.Networks[0].Except = nil
			}
		} else {
			z.Spec.Pods = &v1alpha1.ZonePods{}
			if g.coin() {
				z.Spec.Pods.NamespaceSelector = g.nsSelector()
			}
			if g.coin() {
				z.Spec.Pods.PodSelector = g.labelSelector()
			}
		}
		z.Spec.Mode = v1alpha1.ZoneMode(g.pick("", "Enforce", "Audit", "Learn"))
		if g.coin() {
			z.Spec.IntraZone = v1alpha1.IntraZoneDeny
		}
		w.zones = append(w.zones, z)
		zoneNames = append(zoneNames, z.Name)
	}
	peerNames := append([]string{"unzoned", "world", "ghost"}, zoneNames...)
	for i := g.n(4); i > 0; i-- {
		zp := &v1alpha1.ZonePolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("zp%d", i)}}
		zp.Spec.Priority = int32(g.n(3))
		zp.Spec.From = []string{g.pick(peerNames...)}
		if g.coin() {
			zp.Spec.From = append(zp.Spec.From, g.pick(peerNames...))
		}
		zp.Spec.To = []string{g.pick(peerNames...)}
		zp.Spec.Action = v1alpha1.ZonePolicyAction(g.pick("Accept", "Deny", "Pass"))
		zp.Spec.AuditOnly = zp.Spec.Action == "Deny" && g.coin()
		zp.Spec.Ports = g.crdPorts()
		w.zps = append(w.zps, zp)
	}
	for i := g.n(3); i > 0; i-- {
		w.quars = append(w.quars, g.quarantine(w, i, zoneNames))
	}
	w.up = g.upstream()
	return w
}

func (g *gen) quarantine(w *world, i int, zoneNames []string) *v1alpha1.Quarantine {
	target := w.pods[g.n(len(w.pods))]
	q := &v1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("q%d", i), Namespace: target.Namespace}}
	if g.coin() {
		q.Spec.PodName = target.Name
	} else {
		q.Spec.PodSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": target.Labels["app"]}}
	}
	q.Spec.Reason = "fuzz"
	q.Spec.AllowDNS = g.coin()
	entry := func() v1alpha1.ForensicsPeer {
		var fp v1alpha1.ForensicsPeer
		switch g.n(3) {
		case 0:
			fp.Zone = g.pick(append([]string{"unzoned", "world"}, zoneNames...)...)
		case 1:
			fp.CIDR = g.pick("10.244.1.0/24", "192.0.2.0/25", "10.244.2.1/32")
		default:
			fp.Pods = &v1alpha1.ZonePods{PodSelector: g.labelSelector()}
			if g.coin() {
				fp.Pods.NamespaceSelector = g.nsSelector()
			}
		}
		fp.Ports = g.crdPorts()
		return fp
	}
	for j := g.n(3); j > 0; j-- {
		q.Spec.Allow.Ingress = append(q.Spec.Allow.Ingress, entry())
	}
	for j := g.n(3); j > 0; j-- {
		q.Spec.Allow.Egress = append(q.Spec.Allow.Egress, entry())
	}
	if g.n(5) == 0 {
		q.Spec.Released = true
	}
	return q
}

func (w *world) apply(t testing.TB, e *policy.Engine) {
	t.Helper()
	for _, n := range w.namespaces {
		e.SetNamespace(n)
	}
	for _, p := range w.pods {
		e.SetPod(p)
	}
	for _, n := range w.nps {
		if err := e.SetNetworkPolicy(n); err != nil {
			t.Fatalf("generated policy rejected: %v", err)
		}
	}
	for _, z := range w.zones {
		if err := e.SetZone(z); err != nil {
			t.Fatalf("generated zone rejected: %v", err)
		}
	}
	for _, z := range w.zps {
		if err := e.SetZonePolicy(z); err != nil {
			t.Fatalf("generated zone policy rejected: %v", err)
		}
	}
	for _, q := range w.quars {
		if err := e.SetQuarantine(q); err != nil {
			t.Fatalf("generated quarantine rejected: %v", err)
		}
	}
	for _, n := range w.up.nodes {
		e.SetNode(n)
	}
	for _, c := range w.up.cnps {
		if err := e.SetClusterNetworkPolicy(c); err != nil {
			t.Fatalf("generated ClusterNetworkPolicy rejected: %v", err)
		}
	}
	for _, a := range w.up.anps {
		if err := e.SetAdminNetworkPolicy(a); err != nil {
			t.Fatalf("generated AdminNetworkPolicy rejected: %v", err)
		}
	}
	if w.up.banp != nil {
		if err := e.SetBaselineAdminNetworkPolicy(w.up.banp); err != nil {
			t.Fatalf("generated BaselineAdminNetworkPolicy rejected: %v", err)
		}
	}
}

var fuzzProbes = []policy.Probe{{Protocol: ir.TCP, Port: 80}, {Protocol: ir.TCP, Port: 81}, {Protocol: ir.TCP, Port: 8080}, {Protocol: ir.UDP, Port: 53}, {Protocol: ir.SCTP, Port: 90}}

var externalIPs = []netip.Addr{netip.MustParseAddr("192.0.2.5"), netip.MustParseAddr("192.0.2.200"), netip.MustParseAddr("203.0.113.9"), netip.MustParseAddr("fd00:10:244:9::1"), netip.MustParseAddr("10.250.0.1"), netip.MustParseAddr("10.250.0.2")}

func allowedSet(m []policy.MatrixEntry) map[string]bool {
	out := map[string]bool{}
	for _, c := range m {
		if c.Allowed {
			out[fmt.Sprintf("%s>%s %s/%d", c.Src, c.Dst, c.Protocol, c.Port)] = true
		}
	}
	return out
}

func nodePolicies(e *policy.Engine) map[string]string {
	out := map[string]string{}
	for _, n := range e.Nodes() {
		b, _ := json.Marshal(e.NodePolicy(n))
		out[n] = string(b)
	}
	return out
}

// checkWorld runs every invariant on one random world.
func checkWorld(t *testing.T, data []byte) {
	g := newGen(data)
	w := g.world()
	e := policy.New()
	w.apply(t, e)

	// The compiled IR agrees with Evaluate (docs/policy-model.md "Enforcement").
	checkIRAgreement(t, e, fuzzProbes)
	for _, p := range e.Pods() {
		for _, ip := range externalIPs {
			for _, pr := range fuzzProbes[:2] {
				for _, f := range []policy.Flow{
					{Src: policy.Peer{Pod: p}, Dst: policy.IPPeer(ip), Protocol: pr.Protocol, Port: pr.Port},
					{Src: policy.IPPeer(ip), Dst: policy.Peer{Pod: p}, Protocol: pr.Protocol, Port: pr.Port},
				} {
					checkIRFlow(t, e, f, e.Evaluate(f))
				}
			}
		}
	}
	before := e.Matrix(fuzzProbes)
	allowed := allowedSet(before)

	// Incremental == full: the same objects applied in another order, with
	// compilations in between, give identical node policies; nodes not
	// reported dirty did not change.
	inc := policy.New()
	prev := map[string]string{}
	steps := []func(){}
	for _, p := range w.pods {
		steps = append(steps, func() { inc.SetPod(p) })
	}
	for _, n := range w.nps {
		steps = append(steps, func() { _ = inc.SetNetworkPolicy(n) })
	}
	for _, z := range w.zones {
		steps = append(steps, func() { _ = inc.SetZone(z) })
	}
	for _, z := range w.zps {
		steps = append(steps, func() { _ = inc.SetZonePolicy(z) })
	}
	for _, q := range w.quars {
		steps = append(steps, func() { _ = inc.SetQuarantine(q) })
	}
	for _, n := range w.up.nodes {
		steps = append(steps, func() { inc.SetNode(n) })
	}
	for _, c := range w.up.cnps {
		steps = append(steps, func() { _ = inc.SetClusterNetworkPolicy(c) })
	}
	for _, a := range w.up.anps {
		steps = append(steps, func() { _ = inc.SetAdminNetworkPolicy(a) })
	}
	if b := w.up.banp; b != nil {
		steps = append(steps, func() { _ = inc.SetBaselineAdminNetworkPolicy(b) })
	}
	for _, n := range w.namespaces {
		steps = append(steps, func() { inc.SetNamespace(n) })
	}
	perm := g.rnd.Perm(len(steps))
	for _, i := range perm {
		steps[i]()
		dirty := map[string]bool{}
		for _, n := range inc.TakeDirtyNodes() {
			dirty[n] = true
		}
		cur := nodePolicies(inc)
		for n, js := range cur {
			if !dirty[n] && prev[n] != "" && prev[n] != js {
				t.Fatalf("node %s changed but was not reported dirty", n)
			}
		}
		prev = cur
	}
	if diff := cmp.Diff(nodePolicies(e), nodePolicies(inc)); diff != "" {
		t.Fatalf("incremental build differs from a full build (-full +incremental):\n%s", diff)
	}
	checkChanges(t, g, w, e, inc, prev)

	// Adding an ingress rule to an existing policy never removes an allowed
	// flow.
	if len(w.nps) > 0 {
		np := w.nps[g.n(len(w.nps))].DeepCopy()
		np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: g.npPeers(), Ports: g.npPorts()})
		e2 := policy.New()
		w.apply(t, e2)
		if err := e2.SetNetworkPolicy(np); err != nil {
			t.Fatal(err)
		}
		after := allowedSet(e2.Matrix(fuzzProbes))
		for k := range allowed {
			if !after[k] {
				t.Fatalf("adding an ingress rule to %s/%s removed allowed flow %s", np.Namespace, np.Name, k)
			}
		}
		checkIRAgreement(t, e2, fuzzProbes)
	}

	// A quarantine with an empty allow-list never adds an allowed flow, and
	// isolates its pods completely; quarantines leave flows between other
	// pods alone.
	noQ := *w
	noQ.quars = nil
	e0 := policy.New()
	noQ.apply(t, e0)
	base := allowedSet(e0.Matrix(fuzzProbes))
	quarantined := map[string]bool{}
	for _, qq := range w.quars {
		for _, p := range e.QuarantinedPods(qq.Namespace, qq.Name) {
			quarantined[p.Namespace+"/"+p.Name] = true
		}
	}
	for _, c := range before {
		if quarantined[c.Src] || quarantined[c.Dst] {
			continue
		}
		k := fmt.Sprintf("%s>%s %s/%d", c.Src, c.Dst, c.Protocol, c.Port)
		if c.Allowed != base[k] {
			t.Fatalf("quarantines changed flow %s between pods they do not select", k)
		}
	}
	q := g.quarantine(w, 99, nil)
	q.Spec.Allow = v1alpha1.ForensicsAllowList{}
	q.Spec.AllowDNS = false
	q.Spec.Released = false
	e3 := policy.New()
	noQ.apply(t, e3)
	if err := e3.SetQuarantine(q); err != nil {
		t.Fatal(err)
	}
	isolated := map[string]bool{}
	for _, p := range e3.QuarantinedPods(q.Namespace, q.Name) {
		isolated[p.Namespace+"/"+p.Name] = true
	}
	for _, c := range e3.Matrix(fuzzProbes) {
		k := fmt.Sprintf("%s>%s %s/%d", c.Src, c.Dst, c.Protocol, c.Port)
		if c.Allowed && !base[k] {
			t.Fatalf("quarantine %s added allowed flow %s", q.Name, k)
		}
		if c.Allowed && (isolated[c.Src] || isolated[c.Dst]) {
			t.Fatalf("quarantine %s leaves %s allowed", q.Name, k)
		}
	}
	checkIRAgreement(t, e3, fuzzProbes)
}

func FuzzEngine(f *testing.F) {
	r := rand.New(rand.NewSource(7))
	for i := 0; i < 60; i++ {
		b := make([]byte, 40+r.Intn(200))
		r.Read(b)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		checkWorld(t, data)
	})
}

// TestRandomWorlds runs the FuzzEngine invariants on many PRNG-generated
// worlds (BULKHEAD_RANDOM_WORLDS, default 300).
func TestRandomWorlds(t *testing.T) {
	n := 300
	if v := os.Getenv("BULKHEAD_RANDOM_WORLDS"); v != "" {
		fmt.Sscan(v, &n)
	}
	r := rand.New(rand.NewSource(42))
	for i := 0; i < n; i++ {
		b := make([]byte, 64+r.Intn(256))
		r.Read(b)
		ok := t.Run(fmt.Sprintf("world-%d", i), func(t *testing.T) { checkWorld(t, b) })
		if !ok {
			t.Logf("input: %x", b)
			break
		}
	}
}

// checkChanges deletes and restores each zone, ZonePolicy, node and
// upstream admin policy of the world, and moves each pod zone's members,
// on the incrementally built engine: after every step its node policies
// equal a full build of the same objects, and every node whose policy
// changed was reported dirty.
func checkChanges(t *testing.T, g *gen, w *world, full, inc *policy.Engine, prev map[string]string) {
	t.Helper()
	type step struct {
		name  string
		apply func(*policy.Engine)
		world *world // the objects after the step
	}
	var steps []step
	restore := step{name: "restore", apply: func(e *policy.Engine) { w.apply(t, e) }, world: w}
	for i, z := range w.zones {
		steps = append(steps, step{"delete zone " + z.Name, func(e *policy.Engine) { e.DeleteZone(z.Name) }, w.with(func(c *world) { c.zones = slices.Delete(slices.Clone(c.zones), i, i+1) })}, restore)
		if z.Spec.Pods != nil {
			moved := z.DeepCopy()
			moved.Spec.Pods.PodSelector = g.labelSelector()
			steps = append(steps, step{"move members of zone " + z.Name, func(e *policy.Engine) { _ = e.SetZone(moved) }, w.with(func(c *world) { c.zones = slices.Clone(c.zones); c.zones[i] = moved })}, restore)
		}
		for _, ch := range []struct {
			what string
			fn   func(*v1alpha1.Zone)
		}{
			{"change the mode of", func(z *v1alpha1.Zone) {
				if m := z.Spec.Mode; m == v1alpha1.ZoneModeAudit || m == v1alpha1.ZoneModeLearn {
					z.Spec.Mode = v1alpha1.ZoneMode(g.pick("", "Enforce"))
				} else {
					z.Spec.Mode = v1alpha1.ZoneMode(g.pick("Audit", "Learn"))
				}
			}},
			{"toggle the intra-zone posture of", func(z *v1alpha1.Zone) {
				if z.Spec.IntraZone == v1alpha1.IntraZoneDeny {
					z.Spec.IntraZone = ""
				} else {
					z.Spec.IntraZone = v1alpha1.IntraZoneDeny
				}
			}},
			{"change the age of", func(z *v1alpha1.Zone) {
				z.CreationTimestamp = metav1.NewTime(time.Unix(int64(1000+g.n(3)), 0))
			}},
		} {
			changed := z.DeepCopy()
			ch.fn(changed)
			steps = append(steps, step{ch.what + " zone " + z.Name, func(e *policy.Engine) { _ = e.SetZone(changed) }, w.with(func(c *world) { c.zones = slices.Clone(c.zones); c.zones[i] = changed })}, restore)
		}
	}
	for i, z := range w.zps {
		steps = append(steps, step{"delete zone policy " + z.Name, func(e *policy.Engine) { e.DeleteZonePolicy(z.Name) }, w.with(func(c *world) { c.zps = slices.Delete(slices.Clone(c.zps), i, i+1) })}, restore)
	}
	for i, q := range w.quars {
		steps = append(steps, step{"delete quarantine " + q.Name, func(e *policy.Engine) { e.DeleteQuarantine(q.Namespace, q.Name) }, w.with(func(c *world) { c.quars = slices.Delete(slices.Clone(c.quars), i, i+1) })}, restore)
		toggled := q.DeepCopy()
		toggled.Spec.Released = !q.Spec.Released
		steps = append(steps, step{"release or re-arm quarantine " + q.Name, func(e *policy.Engine) { _ = e.SetQuarantine(toggled) }, w.with(func(c *world) { c.quars = slices.Clone(c.quars); c.quars[i] = toggled })}, restore)
		if len(w.pods) > 0 {
			// a pod joins: the quarantine names another pod of its namespace
			moved := q.DeepCopy()
			moved.Spec.PodSelector = nil
			moved.Spec.PodName = w.pods[g.n(len(w.pods))].Name
			steps = append(steps, step{"quarantine " + q.Name + " moves to pod " + moved.Spec.PodName, func(e *policy.Engine) { _ = e.SetQuarantine(moved) }, w.with(func(c *world) { c.quars = slices.Clone(c.quars); c.quars[i] = moved })}, restore)
		}
	}
	for i, n := range w.up.nodes {
		steps = append(steps, step{"delete node " + n.Name, func(e *policy.Engine) { e.DeleteNode(n.Name) }, w.with(func(c *world) { c.up.nodes = slices.Delete(slices.Clone(c.up.nodes), i, i+1) })}, restore)
	}
	for i, c := range w.up.cnps {
		steps = append(steps, step{"delete ClusterNetworkPolicy " + c.Name, func(e *policy.Engine) { e.DeleteClusterNetworkPolicy(c.Name) }, w.with(func(x *world) { x.up.cnps = slices.Delete(slices.Clone(x.up.cnps), i, i+1) })}, restore)
	}
	for i, a := range w.up.anps {
		steps = append(steps, step{"delete AdminNetworkPolicy " + a.Name, func(e *policy.Engine) { e.DeleteAdminNetworkPolicy(a.Name) }, w.with(func(x *world) { x.up.anps = slices.Delete(slices.Clone(x.up.anps), i, i+1) })}, restore)
	}
	if b := w.up.banp; b != nil {
		steps = append(steps, step{"delete BaselineAdminNetworkPolicy", func(e *policy.Engine) { e.DeleteBaselineAdminNetworkPolicy(b.Name) }, w.with(func(x *world) { x.up.banp = nil })}, restore)
	}
	for _, st := range steps {
		st.apply(inc)
		dirty := map[string]bool{}
		for _, n := range inc.TakeDirtyNodes() {
			dirty[n] = true
		}
		cur := nodePolicies(inc)
		for n, js := range cur {
			if !dirty[n] && prev[n] != "" && prev[n] != js {
				t.Fatalf("after %s: node %s changed but was not reported dirty", st.name, n)
			}
		}
		prev = cur
		want := full
		if st.world != w {
			want = policy.New()
			st.world.apply(t, want)
		}
		if diff := cmp.Diff(nodePolicies(want), cur); diff != "" {
			t.Fatalf("after %s: incremental build differs from a full build (-full +incremental):\n%s", st.name, diff)
		}
	}
}

// with returns a copy of the world changed by fn; fn must copy any slice
// it modifies.
func (w *world) with(fn func(*world)) *world {
	c := *w
	fn(&c)
	return &c
}

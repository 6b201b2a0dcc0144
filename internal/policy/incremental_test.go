package policy_test

import (
	"fmt"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func mkPod(ns, name, app, node, ip string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": app}},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{{Name: "pg", ContainerPort: 5432}}}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
}

func mkNP(ns, name string, sel map[string]string, from []networkingv1.NetworkPolicyPeer, port int32) *networkingv1.NetworkPolicy {
	p := intstr.FromInt32(port)
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: sel},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: from, Ports: []networkingv1.NetworkPolicyPort{{Port: &p}}}},
		},
	}
}

// incCluster: namespaces n0 and n1, each with web-0..4, db-0..4 and
// other-0..4 (label app), pod i of a group on node-(i%4). In both
// namespaces db admits web; in n0 web admits every pod of every namespace.
func incCluster(t *testing.T) (*policy.Engine, map[string]string) {
	t.Helper()
	e := policy.New()
	nodeOf := map[string]string{}
	ipn := 1
	for _, ns := range []string{"n0", "n1"} {
		e.SetNamespace(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		for _, app := range []string{"web", "db", "other"} {
			for i := 0; i < 5; i++ {
				node := fmt.Sprintf("node-%d", i%4)
				name := fmt.Sprintf("%s-%d", app, i)
				e.SetPod(mkPod(ns, name, app, node, fmt.Sprintf("10.244.%d.%d", i%4, ipn)))
				nodeOf[ns+"/"+name] = node
				ipn++
			}
		}
		if err := e.SetNetworkPolicy(mkNP(ns, "db-from-web", map[string]string{"app": "db"}, []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}, 5432)); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.SetNetworkPolicy(mkNP("n0", "web-from-any", map[string]string{"app": "web"}, []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}, 80)); err != nil {
		t.Fatal(err)
	}
	for _, n := range e.Nodes() {
		e.NodePolicy(n)
	}
	e.TakeDirtyNodes()
	return e, nodeOf
}

func statsDelta(a, b policy.Stats) policy.Stats {
	return policy.Stats{
		EndpointsCompiled:   b.EndpointsCompiled - a.EndpointsCompiled,
		SetsRebuilt:         b.SetsRebuilt - a.SetsRebuilt,
		SelectorEvaluations: b.SelectorEvaluations - a.SelectorEvaluations,
		NodesRebuilt:        b.NodesRebuilt - a.NodesRebuilt,
	}
}

func TestIncrementalWork(t *testing.T) {
	tests := []struct {
		name      string
		change    func(e *policy.Engine)
		compiled  int
		sets      int
		maxSelEv  int
		wantDirty func(nodeOf map[string]string) []string
	}{
		{
			// other-0 (node-0) becomes a web pod: it is now selected by
			// web-from-any (recompiled) and joins n0's "app=web" peer set,
			// which the n0 db pods reference (nodes 0-3 by their index).
			name:     "relabelling one pod recompiles only that pod and rebuilds only the sets whose membership changed",
			change:   func(e *policy.Engine) { e.SetPod(mkPod("n0", "other-0", "web", "node-0", "10.244.0.11")) },
			compiled: 1, sets: 1, maxSelEv: 6,
			wantDirty: func(map[string]string) []string { return []string{"node-0", "node-1", "node-2", "node-3"} },
		},
		{
			// n1/other-3 matches no selector that any set uses in n1, but it
			// is a member of the all-namespaces peer set of n0's
			// web-from-any; a relabel keeps it a member and its IPs.
			name:     "relabelling a pod without membership changes touches no set",
			change:   func(e *policy.Engine) { e.SetPod(mkPod("n1", "other-3", "other2", "node-3", "10.244.3.29")) },
			compiled: 1, sets: 0, maxSelEv: 6,
			wantDirty: func(map[string]string) []string { return []string{"node-3"} },
		},
		{
			// changing the port of n1's db policy recompiles n1's five db
			// pods only; its peer set is shared by content and unchanged.
			name: "updating a NetworkPolicy recompiles only the pods it selects",
			change: func(e *policy.Engine) {
				_ = e.SetNetworkPolicy(mkNP("n1", "db-from-web", map[string]string{"app": "db"}, []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}, 5433))
			},
			compiled: 5, sets: 0, maxSelEv: 40,
			wantDirty: func(map[string]string) []string { return []string{"node-0", "node-1", "node-2", "node-3"} },
		},
		{
			// deleting n1/web-4 (node-0) removes it from n1's app=web set
			// and from n0's all-namespaces set; no chain changes.
			name:     "deleting a pod rebuilds the sets that contained it and recompiles nothing",
			change:   func(e *policy.Engine) { e.DeletePod("n1", "web-4") },
			compiled: 0, sets: 2, maxSelEv: 6,
			wantDirty: func(map[string]string) []string { return []string{"node-0", "node-1", "node-2", "node-3"} },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, nodeOf := incCluster(t)
			before := e.Stats()
			tt.change(e)
			dirty := e.TakeDirtyNodes()
			for _, n := range dirty {
				e.NodePolicy(n)
			}
			d := statsDelta(before, e.Stats())
			if d.EndpointsCompiled != tt.compiled {
				t.Errorf("endpoints compiled: %d, want %d", d.EndpointsCompiled, tt.compiled)
			}
			if d.SetsRebuilt != tt.sets {
				t.Errorf("sets rebuilt: %d, want %d", d.SetsRebuilt, tt.sets)
			}
			if d.SelectorEvaluations > tt.maxSelEv {
				t.Errorf("selector evaluations: %d, want at most %d", d.SelectorEvaluations, tt.maxSelEv)
			}
			want := tt.wantDirty(nodeOf)
			sort.Strings(want)
			if diff := cmp.Diff(want, dirty); diff != "" {
				t.Errorf("dirty nodes (-want +got):\n%s", diff)
			}
			if again := e.TakeDirtyNodes(); len(again) != 0 {
				t.Errorf("TakeDirtyNodes twice returned %v", again)
			}
		})
	}
}

func TestNodePolicyIsCachedUntilSomethingChanges(t *testing.T) {
	e, _ := incCluster(t)
	a := e.NodePolicy("node-1")
	before := e.Stats()
	b := e.NodePolicy("node-1")
	if a != b {
		t.Error("NodePolicy rebuilt without a change")
	}
	if d := statsDelta(before, e.Stats()); d != (policy.Stats{}) {
		t.Errorf("work without a change: %+v", d)
	}
	if np := e.NodePolicy("no-such-node"); np == nil || len(np.Endpoints) != 0 {
		t.Errorf("unknown node: %+v, want an empty policy", np)
	}
}

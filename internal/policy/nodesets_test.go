package policy_test

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// TestNodesShareSetLists: nodes whose endpoints name the same sets get
// one shared set list (the policies are read-only), before and after a
// set's contents change; a node naming other sets gets its own.
func TestNodesShareSetLists(t *testing.T) {
	e := policy.New()
	e.SetNamespace(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "n0"}})
	for i, node := range []string{"node-0", "node-1"} {
		e.SetPod(mkPod("n0", fmt.Sprintf("web-%d", i), "web", node, fmt.Sprintf("10.244.0.%d", i+1)))
		e.SetPod(mkPod("n0", fmt.Sprintf("db-%d", i), "db", node, fmt.Sprintf("10.244.1.%d", i+1)))
	}
	e.SetPod(mkPod("n0", "other", "other", "node-2", "10.244.2.1"))
	web := func(app string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
	}
	if err := e.SetNetworkPolicy(mkNP("n0", "web-from-db", map[string]string{"app": "web"}, []networkingv1.NetworkPolicyPeer{{PodSelector: web("db")}}, 80)); err != nil {
		t.Fatal(err)
	}
	if err := e.SetNetworkPolicy(mkNP("n0", "other-from-web", map[string]string{"app": "other"}, []networkingv1.NetworkPolicyPeer{{PodSelector: web("web")}}, 80)); err != nil {
		t.Fatal(err)
	}
	check := func(wantDB []string) {
		t.Helper()
		e.TakeDirtyNodes()
		a, b, c := e.NodePolicy("node-0").Sets, e.NodePolicy("node-1").Sets, e.NodePolicy("node-2").Sets
		if len(a) != 1 || len(b) != 1 || len(c) != 1 {
			t.Fatalf("sets: %d, %d, %d, want one each", len(a), len(b), len(c))
		}
		if &a[0] != &b[0] {
			t.Error("node-0 and node-1 name the same sets but do not share the list")
		}
		if &a[0] == &c[0] {
			t.Error("node-2 names another set but shares node-0's list")
		}
		var got []string
		for _, p := range a[0].Prefixes {
			got = append(got, p.String())
		}
		if diff := cmp.Diff(wantDB, got); diff != "" {
			t.Errorf("db set (-want +got):\n%s", diff)
		}
	}
	check([]string{"10.244.1.1/32", "10.244.1.2/32"})
	e.SetPod(mkPod("n0", "db-0", "web", "node-0", "10.244.1.1")) // db-0 leaves the set
	check([]string{"10.244.1.2/32"})
	e.SetPod(mkPod("n0", "db-9", "db", "node-1", "10.244.1.9"))
	check([]string{"10.244.1.2/32", "10.244.1.9/32"})
}

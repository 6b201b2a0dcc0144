package suggest

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func appServices() []Service {
	return []Service{
		{Namespace: "shop", Name: "api", ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.20")}, Selector: map[string]string{"app": "api"},
			Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("http")}}},
		{Namespace: "data", Name: "db", ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.30")}, Selector: map[string]string{"app": "db"},
			Ports: []corev1.ServicePort{{Port: 5432, TargetPort: intstr.FromInt32(5432)}}},
		{Namespace: "data", Name: "empty", ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.40")}, Selector: map[string]string{"app": "nothing"},
			Ports: []corev1.ServicePort{{Port: 80}}},
		{Namespace: "kube-system", Name: "kube-dns", ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")}, Selector: map[string]string{"k8s-app": "kube-dns"},
			Ports: []corev1.ServicePort{{Port: 53, Protocol: corev1.ProtocolUDP}}},
	}
}

func TestUntranslatedServiceEdges(t *testing.T) {
	clusterIP := func(ip string) v1alpha1.EdgeEndpoint { return v1alpha1.EdgeEndpoint{CIDR: ip + "/32"} }
	world := appWorld()
	world.Services = appServices()
	want := Suggest(appEdges(), world, Options{Now: t0.Add(time.Hour)})
	wantSpec, err := want.Suggestions[0].Spec()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		extra []v1alpha1.FlowEdge
	}{
		{"an edge to a ClusterIP attribution did not know becomes the backend workload on the target port", []v1alpha1.FlowEdge{
			edge(wl(frontend), clusterIP("10.96.0.20"), v1alpha1.ProtocolTCP, 80, 0)}},
		{"an edge naming a Service whose backends were unknown becomes the backend workload", []v1alpha1.FlowEdge{
			edge(wl(api), v1alpha1.EdgeEndpoint{CIDR: "10.96.0.30/32", Service: "data/db"}, v1alpha1.ProtocolTCP, 5432, time.Minute)}},
		{"an edge to the kube-dns ClusterIP becomes DNS", []v1alpha1.FlowEdge{
			edge(wl(frontend), clusterIP("10.96.0.10"), v1alpha1.ProtocolUDP, 53, 0)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Suggest(append(appEdges(), tc.extra...), world, Options{Now: t0.Add(time.Hour)})
			if len(res.Suggestions) != 1 {
				t.Fatalf("want one suggestion, got %d", len(res.Suggestions))
			}
			sg := res.Suggestions[0]
			if len(sg.Problems) > 0 || len(res.Problems) > 0 {
				t.Fatalf("problems: %v %v", sg.Problems, res.Problems)
			}
			spec, err := sg.Spec()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(wantSpec.NetworkPolicies, spec.NetworkPolicies); diff != "" {
				t.Errorf("NetworkPolicies differ from the translated edges' (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(wantSpec.ZonePolicies, spec.ZonePolicies); diff != "" {
				t.Errorf("ZonePolicies differ from the translated edges' (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("an edge to a Service without live backends gets a problem, never an ipBlock", func(t *testing.T) {
		res := Suggest(append(appEdges(), edge(wl(api), clusterIP("10.96.0.40"), v1alpha1.ProtocolTCP, 80, 0)), world, Options{Now: t0.Add(time.Hour)})
		sg := res.Suggestions[0]
		if len(sg.Problems) != 1 || !strings.Contains(sg.Problems[0], "data/empty") {
			t.Errorf("problems %v, want one naming Service data/empty", sg.Problems)
		}
		spec, err := sg.Spec()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(spec.NetworkPolicies, "10.96.0.40") {
			t.Errorf("the ClusterIP became a peer:\n%s", spec.NetworkPolicies)
		}
	})
}

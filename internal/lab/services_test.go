package lab

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func svcPod(ns, name, ip string, ready bool, lbls map[string]string, ports ...corev1.ContainerPort) corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls},
		Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Ports: ports}}},
		Status:     corev1.PodStatus{PodIP: ip, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
}

type sliceSummary struct {
	Name  string
	Ports []string
	Ready map[string]bool
}

func summarize(slices []discoveryv1.EndpointSlice) []sliceSummary {
	var out []sliceSummary
	for _, s := range slices {
		ss := sliceSummary{Name: s.Name, Ready: map[string]bool{}}
		for _, p := range s.Ports {
			ss.Ports = append(ss.Ports, *p.Name+"="+string(*p.Protocol)+"/"+strconv.Itoa(int(*p.Port)))
		}
		for _, e := range s.Endpoints {
			ss.Ready[e.Addresses[0]] = *e.Conditions.Ready
		}
		if s.Labels[discoveryv1.LabelServiceName] == "" {
			ss.Name += " (no service-name label)"
		}
		out = append(out, ss)
	}
	return out
}

func TestEndpointSlicesFor(t *testing.T) {
	app := map[string]string{"app": "api"}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api"},
		Spec: corev1.ServiceSpec{Selector: app, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
			{Name: "metrics", Port: 9090, TargetPort: intstr.FromInt32(9091)},
		}},
	}
	tests := []struct {
		name string
		svc  *corev1.Service
		pods []corev1.Pod
		want []sliceSummary
	}{
		{
			name: "named target ports resolve per pod and split slices",
			svc:  svc,
			pods: []corev1.Pod{
				svcPod("shop", "a", "10.244.1.2", true, app, corev1.ContainerPort{Name: "http", ContainerPort: 8080}),
				svcPod("shop", "b", "10.244.2.2", true, app, corev1.ContainerPort{Name: "http", ContainerPort: 8081}),
				svcPod("shop", "c", "10.244.1.3", false, app, corev1.ContainerPort{Name: "http", ContainerPort: 8080}),
			},
			want: []sliceSummary{
				{Name: "api-0", Ports: []string{"http=TCP/8080", "metrics=TCP/9091"}, Ready: map[string]bool{"10.244.1.2": true, "10.244.1.3": false}},
				{Name: "api-1", Ports: []string{"http=TCP/8081", "metrics=TCP/9091"}, Ready: map[string]bool{"10.244.2.2": true}},
			},
		},
		{
			name: "pods of other namespaces, other labels, without an address or terminating are left out",
			svc:  svc,
			pods: func() []corev1.Pod {
				term := svcPod("shop", "t", "10.244.1.9", true, app)
				term.DeletionTimestamp = &metav1.Time{}
				return []corev1.Pod{
					svcPod("other", "x", "10.244.1.4", true, app),
					svcPod("shop", "y", "10.244.1.5", true, map[string]string{"app": "web"}),
					svcPod("shop", "z", "", true, app),
					term,
					svcPod("shop", "ok", "10.244.1.6", true, app),
				}
			}(),
			want: []sliceSummary{{Name: "api-0", Ports: []string{"metrics=TCP/9091"}, Ready: map[string]bool{"10.244.1.6": true}}},
		},
		{
			name: "a service without selector gets no slices",
			svc:  &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "ext"}},
			pods: []corev1.Pod{svcPod("shop", "a", "10.244.1.2", true, app)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EndpointSlicesFor(tt.svc, tt.pods)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, summarize(got)); d != "" {
				t.Errorf("slices (-want +got):\n%s", d)
			}
		})
	}
}

func TestProxyRules(t *testing.T) {
	app := map[string]string{"app": "api"}
	svc := corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.20", Selector: app, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
			{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
		}},
	}
	headless := corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"},
		Spec: corev1.ServiceSpec{ClusterIP: "None", Selector: app, Ports: []corev1.ServicePort{{Port: 5432}}}}
	pods := []corev1.Pod{
		svcPod("shop", "b", "10.244.2.2", true, app, corev1.ContainerPort{Name: "http", ContainerPort: 8081}),
		svcPod("shop", "a", "10.244.1.2", true, app, corev1.ContainerPort{Name: "http", ContainerPort: 8080}),
		svcPod("shop", "c", "10.244.1.3", false, app, corev1.ContainerPort{Name: "http", ContainerPort: 8080}),
	}
	var slices []discoveryv1.EndpointSlice
	for _, s := range []corev1.Service{svc, headless} {
		ss, err := EndpointSlicesFor(&s, pods)
		if err != nil {
			t.Fatal(err)
		}
		slices = append(slices, ss...)
	}
	got, err := ProxyRules([]corev1.Service{svc, headless}, slices)
	if err != nil {
		t.Fatal(err)
	}
	cip := netip.MustParseAddr("10.96.0.20")
	want := []ProxyRule{
		{Service: "shop/api", ClusterIP: cip, Port: 53, Protocol: corev1.ProtocolUDP, Backends: []netip.AddrPort{
			netip.MustParseAddrPort("10.244.1.2:53"), netip.MustParseAddrPort("10.244.2.2:53")}},
		{Service: "shop/api", ClusterIP: cip, Port: 80, Protocol: corev1.ProtocolTCP, Backends: []netip.AddrPort{
			netip.MustParseAddrPort("10.244.1.2:8080"), netip.MustParseAddrPort("10.244.2.2:8081")}},
	}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); d != "" {
		t.Errorf("rules (-want +got):\n%s", d)
	}

	t.Run("a bad clusterIP is an error naming the service", func(t *testing.T) {
		bad := svc
		bad.Spec.ClusterIP = "10.96.0.300"
		_, err := ProxyRules([]corev1.Service{bad}, nil)
		if err == nil || !strings.Contains(err.Error(), "shop/api") || !strings.Contains(err.Error(), "spec.clusterIP") {
			t.Errorf("error %v, want one naming shop/api and spec.clusterIP", err)
		}
	})
}

func TestProxyRuleset(t *testing.T) {
	rules := []ProxyRule{
		{Service: "kube-system/kube-dns", ClusterIP: KubeDNSIP, Port: 53, Protocol: corev1.ProtocolUDP, Backends: []netip.AddrPort{netip.MustParseAddrPort("10.244.1.2:53")}},
		{Service: "shop/api", ClusterIP: netip.MustParseAddr("10.96.0.20"), Port: 80, Protocol: corev1.ProtocolTCP, Backends: []netip.AddrPort{
			netip.MustParseAddrPort("10.244.1.2:8080"), netip.MustParseAddrPort("10.244.2.2:8081")}},
	}
	want := `table ip bulkhead-lab-svc
delete table ip bulkhead-lab-svc
table ip bulkhead-lab-svc {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 10.96.0.10 udp dport 53 dnat to 10.244.1.2:53 comment "kube-system/kube-dns:53/udp"
		ip daddr 10.96.0.20 tcp dport 80 dnat to numgen random mod 2 map { 0 : 10.244.1.2 . 8080, 1 : 10.244.2.2 . 8081 } comment "shop/api:80/tcp"
	}
}
`
	if d := cmp.Diff(want, ProxyRuleset(rules)); d != "" {
		t.Errorf("ruleset (-want +got):\n%s", d)
	}
	if s := ProxyRuleset(nil); strings.Contains(s, "dnat") || !strings.Contains(s, "delete table ip bulkhead-lab-svc") {
		t.Errorf("empty ruleset still has rules or does not replace the table:\n%s", s)
	}
}

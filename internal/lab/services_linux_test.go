package lab

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// TestServiceProxyAndDNS builds a two-node lab network (no control plane),
// runs the kube-dns stand-in in a pod, loads the service proxy into every
// node and sends real packets: a client resolves "api" through the
// kube-dns ClusterIP and reaches a backend on the other node through the
// api ClusterIP.
func TestServiceProxyAndDNS(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping a privileged lab test")
	}
	testenv.RequireRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		testenv.SkipOrFail(t, "nft is not installed")
	}
	name := uniqueLabName(t)
	plan, err := NewPlan(name, 2, nil, []PodInput{
		podIn("shop", "client"), podIn("shop", "backend"), podIn("kube-system", "dns"), podIn("shop", "backend2"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := TeardownNetwork(name, plan.Netns()); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := BuildNetwork(ctx, plan, func(string) {}); err != nil {
		t.Fatal(err)
	}
	pods := map[string]PodPlan{}
	var objs []corev1.Pod
	for _, p := range plan.Pods {
		pods[p.Name] = p
		o := svcPod(p.Namespace, p.Name, p.IP.String(), true, map[string]string{"app": p.Name})
		if strings.HasPrefix(p.Name, "backend") {
			o.Labels["app"] = "api"
			o.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
		}
		objs = append(objs, o)
	}
	ls, err := Listen([]PodPlan{pods["backend"], pods["backend2"]}, []Probe{{Protocol: "TCP", Port: 8080}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ls.Close() })

	apiIP := netip.MustParseAddr("10.96.0.20")
	svcs := []corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns"}, Spec: corev1.ServiceSpec{
			ClusterIP: KubeDNSIP.String(), Selector: map[string]string{"app": "dns"},
			Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}, {Name: "dns-tcp", Port: 53}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api"}, Spec: corev1.ServiceSpec{
			ClusterIP: apiIP.String(), Selector: map[string]string{"app": "api"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}}},
	}
	var slices []discoveryv1.EndpointSlice
	for i := range svcs {
		s, err := EndpointSlicesFor(&svcs[i], objs)
		if err != nil {
			t.Fatal(err)
		}
		slices = append(slices, s...)
	}
	rules, err := ProxyRules(svcs, slices)
	if err != nil {
		t.Fatal(err)
	}
	script := ProxyRuleset(rules)
	for _, n := range plan.Nodes {
		if err := ApplyProxy(ctx, n.Name, script); err != nil {
			t.Fatal(err)
		}
	}
	dns, err := ServeDNS(pods["dns"].Netns, ":53", &DNSZone{Records: map[string][]netip.Addr{
		ServiceDNSName("shop", "api"): {apiIP},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dns.Close() })
	dnsAddr := netip.AddrPortFrom(KubeDNSIP, 53)

	t.Run("a short service name resolves through the kube-dns ClusterIP", func(t *testing.T) {
		got, err := Resolve(pods["client"].Netns, dnsAddr, "shop", "api", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0] != apiIP {
			t.Errorf("api resolved to %v, want [%s]", got, apiIP)
		}
	})
	t.Run("an unknown name is an error naming it", func(t *testing.T) {
		if _, err := Resolve(pods["client"].Netns, dnsAddr, "shop", "nope", 2*time.Second); err == nil || !strings.Contains(err.Error(), "nope") {
			t.Errorf("error %v, want one naming nope", err)
		}
	})
	t.Run("the api ClusterIP reaches both backends by name, across nodes", func(t *testing.T) {
		seen := map[string]int{}
		for i := 0; i < 40; i++ {
			id, err := ProbeName(pods["client"].Netns, dnsAddr, "shop", "api.shop.svc.cluster.local.", 80, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			seen[id]++
		}
		if len(seen) != 2 || seen["shop/backend"] == 0 || seen["shop/backend2"] == 0 {
			t.Errorf("answering backends %v, want both shop/backend and shop/backend2", seen)
		}
	})
	t.Run("long-lived connections through the ClusterIP stay open", func(t *testing.T) {
		hold, err := ServeHold(pods["backend"].Netns, ":7000")
		if err != nil {
			t.Fatal(err)
		}
		defer hold.Close()
		holdRules := append(rules, ProxyRule{Service: "shop/hold", ClusterIP: netip.MustParseAddr("10.96.0.21"), Port: 7000,
			Protocol: corev1.ProtocolTCP, Backends: []netip.AddrPort{netip.AddrPortFrom(pods["backend"].IP, 7000)}})
		if err := ApplyProxy(ctx, pods["client"].NodeName, ProxyRuleset(holdRules)); err != nil {
			t.Fatal(err)
		}
		closeAll, err := OpenConnections(pods["client"].Netns, netip.MustParseAddrPort("10.96.0.21:7000"), 200, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for hold.Open() < 200 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond)
		if n := hold.Open(); n != 200 {
			t.Errorf("backend holds %d connections, want 200", n)
		}
		if err := closeAll(); err != nil {
			t.Error(err)
		}
	})
	t.Run("replacing the ruleset with no rules removes the DNAT", func(t *testing.T) {
		if err := ApplyProxy(ctx, pods["client"].NodeName, ProxyRuleset(nil)); err != nil {
			t.Fatal(err)
		}
		if _, err := ProbeAddr(pods["client"].Netns, netip.AddrPortFrom(apiIP, 80), 500*time.Millisecond); err == nil {
			t.Error("the ClusterIP still answers after its rule was removed")
		}
		if err := ApplyProxy(ctx, pods["client"].NodeName, ProxyTeardown()); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("ip", "netns", "exec", pods["client"].NodeName, "nft", "list", "tables").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list tables: %v: %s", err, out)
		}
		if strings.Contains(string(out), SvcProxyTable) {
			t.Errorf("table still there after teardown:\n%s", out)
		}
	})
}

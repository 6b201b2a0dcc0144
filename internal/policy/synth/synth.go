// Package synth generates deterministic synthetic clusters (namespaces,
// pods, NetworkPolicies) for benchmarks and load tests of the policy engine
// and its consumers. Policies are diverse: varied pod and namespace
// selectors, matchExpressions, ipBlocks, numbered, ranged and named ports,
// ingress and egress, and no two are alike.
package synth

import (
	"fmt"
	"math/rand"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Params sizes a cluster.
type Params struct {
	Nodes, Namespaces, Pods, Policies int
	Seed                              int64
}

// Cluster is the generated objects.
type Cluster struct {
	Namespaces      []*corev1.Namespace
	Pods            []*corev1.Pod
	NetworkPolicies []*networkingv1.NetworkPolicy
}

const apps = 20

// Generate builds a cluster. Pod i lives in namespace i%Namespaces on node
// i%Nodes with IP 10.(i/65536).(i/256%256).(i%256) inside 10.0.0.0/8
// shifted to 10.244.0.0/14 space, and labels app, tier, version.
func Generate(p Params) *Cluster {
	r := rand.New(rand.NewSource(p.Seed))
	c := &Cluster{}
	for i := 0; i < p.Namespaces; i++ {
		c.Namespaces = append(c.Namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name:   fmt.Sprintf("ns-%d", i),
			Labels: map[string]string{"team": fmt.Sprintf("team-%d", i%10), "env": []string{"prod", "staging", "dev"}[i%3]},
		}})
	}
	for i := 0; i < p.Pods; i++ {
		ip := 244<<16 + i
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name:      fmt.Sprintf("pod-%d", i),
				Namespace: fmt.Sprintf("ns-%d", i%p.Namespaces),
				Labels: map[string]string{
					"app":     fmt.Sprintf("app-%d", r.Intn(apps)),
					"tier":    []string{"fe", "be", "db", "cache"}[r.Intn(4)],
					"version": fmt.Sprintf("v%d", r.Intn(3)),
				},
			},
			Spec: corev1.PodSpec{
				NodeName: fmt.Sprintf("node-%d", i%p.Nodes),
				Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{
					{Name: "http", ContainerPort: int32(8080 + r.Intn(3)), Protocol: corev1.ProtocolTCP},
					{Name: "metrics", ContainerPort: 9090, Protocol: corev1.ProtocolTCP},
					{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
				}}},
			},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.%d.%d.%d", ip>>16&255, ip>>8&255, ip&255)},
		}
		c.Pods = append(c.Pods, pod)
	}
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	for i := 0; i < p.Policies; i++ {
		ns := fmt.Sprintf("ns-%d", i%p.Namespaces)
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("np-%d", i), Namespace: ns}}
		sel := map[string]string{"app": fmt.Sprintf("app-%d", r.Intn(apps))}
		if r.Intn(3) == 0 {
			sel["tier"] = []string{"fe", "be", "db", "cache"}[r.Intn(4)]
		}
		np.Spec.PodSelector = metav1.LabelSelector{MatchLabels: sel}
		port := intstr.FromInt32(int32(1000 + i%50000))
		ports := []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}
		switch r.Intn(5) {
		case 0:
			named := intstr.FromString("http")
			ports = append(ports, networkingv1.NetworkPolicyPort{Port: &named})
		case 1:
			end := port.IntVal + int32(r.Intn(100))
			ports[0].EndPort = &end
		case 2:
			dns := intstr.FromInt32(53)
			ports = append(ports, networkingv1.NetworkPolicyPort{Protocol: &udp, Port: &dns})
		}
		var peers []networkingv1.NetworkPolicyPeer
		switch r.Intn(6) {
		case 0, 1:
			peers = append(peers, networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", r.Intn(apps))}}})
		case 2:
			peers = append(peers, networkingv1.NetworkPolicyPeer{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("team-%d", r.Intn(10))}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", r.Intn(apps))}},
			})
		case 3:
			peers = append(peers, networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"fe", []string{"be", "cache"}[r.Intn(2)]}},
				{Key: "version", Operator: metav1.LabelSelectorOpNotIn, Values: []string{fmt.Sprintf("v%d", r.Intn(3))}},
			}}})
		case 4:
			peers = append(peers, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{
				CIDR:   fmt.Sprintf("172.%d.0.0/16", 16+r.Intn(16)),
				Except: []string{fmt.Sprintf("172.%d.%d.0/24", 16+r.Intn(16), r.Intn(256))},
			}})
			// keep except inside the CIDR
			peers[0].IPBlock.Except[0] = peers[0].IPBlock.CIDR[:len(peers[0].IPBlock.CIDR)-len("0.0/16")] + fmt.Sprintf("%d.0/24", r.Intn(256))
		default:
			peers = append(peers,
				networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": []string{"prod", "staging", "dev"}[r.Intn(3)]}}},
				networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "fe"}}})
		}
		if r.Intn(4) == 0 {
			np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
			np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: peers, Ports: ports}}
			np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "be"}}}}}}
		} else {
			np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: peers, Ports: ports}}
		}
		c.NetworkPolicies = append(c.NetworkPolicies, np)
	}
	return c
}

package policy_test

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	anpv1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"
	cnpv1beta1 "sigs.k8s.io/network-policy-api/apis/v1beta1"
)

// upstreamWorld is the random upstream admin policies and nodes of a world.
type upstreamWorld struct {
	nodes []*corev1.Node
	cnps  []*cnpv1beta1.ClusterNetworkPolicy
	anps  []*anpv1alpha1.AdminNetworkPolicy
	banp  *anpv1alpha1.BaselineAdminNetworkPolicy
}

func (g *gen) upstream() upstreamWorld {
	var u upstreamWorld
	for i := 1; i <= 2; i++ {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node%d", i), Labels: map[string]string{}}}
		if g.coin() {
			n.Labels["role"] = g.pick("infra", "worker")
		}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("10.250.0.%d", i)}}
		u.nodes = append(u.nodes, n)
	}
	subject := func() (*metav1.LabelSelector, *anpv1alpha1.NamespacedPod) {
		if g.coin() {
			return g.nsSelector(), nil
		}
		return nil, &anpv1alpha1.NamespacedPod{NamespaceSelector: *g.nsSelector(), PodSelector: *g.labelSelector()}
	}
	egressPeer := func() anpv1alpha1.AdminNetworkPolicyEgressPeer {
		var p anpv1alpha1.AdminNetworkPolicyEgressPeer
		switch g.n(5) {
		case 0:
			p.Namespaces = g.nsSelector()
		case 1:
			p.Pods = &anpv1alpha1.NamespacedPod{NamespaceSelector: *g.nsSelector(), PodSelector: *g.labelSelector()}
		case 2:
			p.Nodes = &metav1.LabelSelector{MatchLabels: map[string]string{"role": g.pick("infra", "worker")}}
			if g.coin() {
				p.Nodes = &metav1.LabelSelector{}
			}
		default:
			p.Networks = []anpv1alpha1.CIDR{anpv1alpha1.CIDR(g.pick("10.244.1.0/24", "192.0.2.0/25", "10.244.0.0/16", "10.250.0.0/24", "fd00:10:244::/48"))}
		}
		return p
	}
	ingressPeer := func() anpv1alpha1.AdminNetworkPolicyIngressPeer {
		if g.coin() {
			return anpv1alpha1.AdminNetworkPolicyIngressPeer{Namespaces: g.nsSelector()}
		}
		return anpv1alpha1.AdminNetworkPolicyIngressPeer{Pods: &anpv1alpha1.NamespacedPod{NamespaceSelector: *g.nsSelector(), PodSelector: *g.labelSelector()}}
	}
	anpPorts := func() *[]anpv1alpha1.AdminNetworkPolicyPort {
		if g.n(3) == 0 {
			return nil
		}
		var out []anpv1alpha1.AdminNetworkPolicyPort
		for i := 1 + g.n(2); i > 0; i-- {
			proto := protos[g.n(3)]
			switch g.n(3) {
			case 0:
				out = append(out, anpv1alpha1.AdminNetworkPolicyPort{PortNumber: &anpv1alpha1.Port{Protocol: proto, Port: int32([]int{80, 81, 53, 8080, 90}[g.n(5)])}})
			case 1:
				n := g.pick("http", "alt", "dns", "sctp")
				out = append(out, anpv1alpha1.AdminNetworkPolicyPort{NamedPort: &n})
			default:
				s := int32([]int{53, 80, 81}[g.n(3)])
				out = append(out, anpv1alpha1.AdminNetworkPolicyPort{PortRange: &anpv1alpha1.PortRange{Protocol: proto, Start: s, End: s + int32(g.n(3))}})
			}
		}
		return &out
	}
	rules := func(actions ...string) ([]anpv1alpha1.AdminNetworkPolicyIngressRule, []anpv1alpha1.AdminNetworkPolicyEgressRule) {
		var in []anpv1alpha1.AdminNetworkPolicyIngressRule
		var eg []anpv1alpha1.AdminNetworkPolicyEgressRule
		for i := g.n(3); i > 0; i-- {
			r := anpv1alpha1.AdminNetworkPolicyIngressRule{Action: anpv1alpha1.AdminNetworkPolicyRuleAction(g.pick(actions...)), Ports: anpPorts()}
			for j := 1 + g.n(2); j > 0; j-- {
				r.From = append(r.From, ingressPeer())
			}
			in = append(in, r)
		}
		for i := g.n(3); i > 0; i-- {
			r := anpv1alpha1.AdminNetworkPolicyEgressRule{Action: anpv1alpha1.AdminNetworkPolicyRuleAction(g.pick(actions...)), Ports: anpPorts()}
			for j := 1 + g.n(2); j > 0; j-- {
				r.To = append(r.To, egressPeer())
			}
			eg = append(eg, r)
		}
		return in, eg
	}
	for i := g.n(3); i > 0; i-- {
		a := &anpv1alpha1.AdminNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("anp%d", i)}}
		a.Spec.Priority = int32(g.n(3))
		a.Spec.Subject.Namespaces, a.Spec.Subject.Pods = subject()
		a.Spec.Ingress, a.Spec.Egress = rules("Allow", "Deny", "Pass")
		u.anps = append(u.anps, a)
	}
	for i := g.n(3); i > 0; i-- {
		c := &cnpv1beta1.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cnp%d", i)}}
		c.Spec.Tier = cnpv1beta1.Tier(g.pick("Admin", "Baseline"))
		c.Spec.Priority = int32(g.n(3))
		ns, pods := subject()
		c.Spec.Subject.Namespaces = ns
		if pods != nil {
			c.Spec.Subject.Pods = &cnpv1beta1.NamespacedPod{NamespaceSelector: pods.NamespaceSelector, PodSelector: pods.PodSelector}
		}
		in, eg := rules("Accept", "Deny", "Pass")
		cnpProtos := func(p *[]anpv1alpha1.AdminNetworkPolicyPort) []cnpv1beta1.ClusterNetworkPolicyProtocol {
			if p == nil {
				return nil
			}
			var out []cnpv1beta1.ClusterNetworkPolicyProtocol
			for _, x := range *p {
				var dp *cnpv1beta1.Port
				proto := corev1.ProtocolTCP
				switch {
				case x.NamedPort != nil:
					out = append(out, cnpv1beta1.ClusterNetworkPolicyProtocol{DestinationNamedPort: *x.NamedPort})
					continue
				case x.PortNumber != nil:
					dp, proto = &cnpv1beta1.Port{Number: x.PortNumber.Port}, x.PortNumber.Protocol
				default:
					dp, proto = &cnpv1beta1.Port{Range: &cnpv1beta1.PortRange{Start: x.PortRange.Start, End: x.PortRange.End}}, x.PortRange.Protocol
				}
				if g.n(4) == 0 {
					dp = nil // every port of the protocol
				}
				switch proto {
				case corev1.ProtocolUDP:
					out = append(out, cnpv1beta1.ClusterNetworkPolicyProtocol{UDP: &cnpv1beta1.ClusterNetworkPolicyProtocolUDP{DestinationPort: dp}})
				case corev1.ProtocolSCTP:
					out = append(out, cnpv1beta1.ClusterNetworkPolicyProtocol{SCTP: &cnpv1beta1.ClusterNetworkPolicyProtocolSCTP{DestinationPort: dp}})
				default:
					out = append(out, cnpv1beta1.ClusterNetworkPolicyProtocol{TCP: &cnpv1beta1.ClusterNetworkPolicyProtocolTCP{DestinationPort: dp}})
				}
			}
			return out
		}
		conv := func(s *metav1.LabelSelector, p *anpv1alpha1.NamespacedPod) (*metav1.LabelSelector, *cnpv1beta1.NamespacedPod) {
			if p == nil {
				return s, nil
			}
			return nil, &cnpv1beta1.NamespacedPod{NamespaceSelector: p.NamespaceSelector, PodSelector: p.PodSelector}
		}
		for _, r := range in {
			cr := cnpv1beta1.ClusterNetworkPolicyIngressRule{Action: cnpv1beta1.ClusterNetworkPolicyRuleAction(r.Action), Protocols: cnpProtos(r.Ports)}
			for _, f := range r.From {
				var pe cnpv1beta1.ClusterNetworkPolicyIngressPeer
				pe.Namespaces, pe.Pods = conv(f.Namespaces, f.Pods)
				cr.From = append(cr.From, pe)
			}
			c.Spec.Ingress = append(c.Spec.Ingress, cr)
		}
		for _, r := range eg {
			cr := cnpv1beta1.ClusterNetworkPolicyEgressRule{Action: cnpv1beta1.ClusterNetworkPolicyRuleAction(r.Action), Protocols: cnpProtos(r.Ports)}
			for _, t := range r.To {
				var pe cnpv1beta1.ClusterNetworkPolicyEgressPeer
				pe.Namespaces, pe.Pods = conv(t.Namespaces, t.Pods)
				pe.Nodes = t.Nodes
				for _, n := range t.Networks {
					pe.Networks = append(pe.Networks, cnpv1beta1.CIDR(n))
				}
				cr.To = append(cr.To, pe)
			}
			c.Spec.Egress = append(c.Spec.Egress, cr)
		}
		u.cnps = append(u.cnps, c)
	}
	if g.coin() {
		b := &anpv1alpha1.BaselineAdminNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
		ns, pods := subject()
		b.Spec.Subject = anpv1alpha1.AdminNetworkPolicySubject{Namespaces: ns, Pods: pods}
		in, eg := rules("Allow", "Deny")
		for _, r := range in {
			b.Spec.Ingress = append(b.Spec.Ingress, anpv1alpha1.BaselineAdminNetworkPolicyIngressRule{Action: anpv1alpha1.BaselineAdminNetworkPolicyRuleAction(r.Action), From: r.From, Ports: r.Ports})
		}
		for _, r := range eg {
			br := anpv1alpha1.BaselineAdminNetworkPolicyEgressRule{Action: anpv1alpha1.BaselineAdminNetworkPolicyRuleAction(r.Action), Ports: r.Ports}
			for _, t := range r.To {
				br.To = append(br.To, anpv1alpha1.BaselineAdminNetworkPolicyEgressPeer{Namespaces: t.Namespaces, Pods: t.Pods, Nodes: t.Nodes, Networks: t.Networks})
			}
			b.Spec.Egress = append(b.Spec.Egress, br)
		}
		u.banp = b
	}
	return u
}

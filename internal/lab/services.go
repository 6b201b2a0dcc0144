package lab

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// KubeDNSIP is the ClusterIP the lab gives kube-system/kube-dns. The API
// server allocates other ClusterIPs from ServiceCIDR; they exist only as
// DNAT rules inside the lab's node namespaces, no interface carries them.
var KubeDNSIP = netip.MustParseAddr("10.96.0.10")

// EndpointSliceManagedBy is the managed-by label value on the slices the
// lab writes.
const EndpointSliceManagedBy = "lab.bulkhead.dev"

// SvcProxyTable is the nft table (family ip) of the lab's service proxy in
// every node namespace. The agent's "inet bulkhead" table is never touched.
const SvcProxyTable = "bulkhead-lab-svc"

// resolveTargetPort is the port number sp forwards to on pod, or 0 if a
// named targetPort is not declared by any container of the pod.
func resolveTargetPort(sp corev1.ServicePort, pod *corev1.Pod) int32 {
	tp := sp.TargetPort
	switch {
	case tp.Type == intstr.String && tp.StrVal != "":
		for _, c := range pod.Spec.Containers {
			for _, cp := range c.Ports {
				proto := cp.Protocol
				if proto == "" {
					proto = corev1.ProtocolTCP
				}
				if cp.Name == tp.StrVal && proto == protocolOf(sp) {
					return cp.ContainerPort
				}
			}
		}
		return 0
	case tp.Type == intstr.Int && tp.IntVal != 0:
		return tp.IntVal
	default:
		return sp.Port
	}
}

func protocolOf(sp corev1.ServicePort) corev1.Protocol {
	if sp.Protocol == "" {
		return corev1.ProtocolTCP
	}
	return sp.Protocol
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// EndpointSlicesFor computes the IPv4 EndpointSlices of a Service with a
// selector from the pods of its namespace, as the EndpointSlice controller
// does: pods the selector matches that have an IPv4 address and are not
// terminating, grouped by their resolved target ports (a named targetPort
// may resolve differently per pod), one slice per group, named
// "<svc>-<n>" in port-group order. A Service without selector gets none.
func EndpointSlicesFor(svc *corev1.Service, pods []corev1.Pod) ([]discoveryv1.EndpointSlice, error) {
	if len(svc.Spec.Selector) == 0 {
		return nil, nil
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	type group struct {
		ports     []discoveryv1.EndpointPort
		endpoints []discoveryv1.Endpoint
	}
	groups := map[string]*group{}
	for i := range pods {
		pod := &pods[i]
		if pod.Namespace != svc.Namespace || !sel.Matches(labels.Set(pod.Labels)) || pod.DeletionTimestamp != nil {
			continue
		}
		ip, err := netip.ParseAddr(pod.Status.PodIP)
		if err != nil || !ip.Is4() {
			continue
		}
		var ports []discoveryv1.EndpointPort
		var key []string
		for _, sp := range svc.Spec.Ports {
			n := resolveTargetPort(sp, pod)
			if n == 0 {
				continue // the real controller leaves the port out for this pod too
			}
			name, proto, num := sp.Name, protocolOf(sp), n
			ports = append(ports, discoveryv1.EndpointPort{Name: &name, Protocol: &proto, Port: &num})
			key = append(key, sp.Name+"="+string(proto)+"/"+strconv.Itoa(int(n)))
		}
		k := strings.Join(key, ",")
		g := groups[k]
		if g == nil {
			g = &group{ports: ports}
			groups[k] = g
		}
		ready := podReady(pod)
		serving, terminating := ready, false
		node := pod.Spec.NodeName
		g.endpoints = append(g.endpoints, discoveryv1.Endpoint{
			Addresses:  []string{ip.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
			NodeName:   &node,
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
		})
	}
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []discoveryv1.EndpointSlice
	for i, k := range keys {
		g := groups[k]
		sort.Slice(g.endpoints, func(a, b int) bool {
			return netip.MustParseAddr(g.endpoints[a].Addresses[0]).Less(netip.MustParseAddr(g.endpoints[b].Addresses[0]))
		})
		out = append(out, discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: svc.Namespace,
				Name:      svc.Name + "-" + strconv.Itoa(i),
				Labels: map[string]string{
					discoveryv1.LabelServiceName: svc.Name,
					discoveryv1.LabelManagedBy:   EndpointSliceManagedBy,
				},
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID,
					Controller: ptrTo(true), BlockOwnerDeletion: ptrTo(true),
				}},
			},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   g.endpoints,
			Ports:       g.ports,
		})
	}
	return out, nil
}

func ptrTo[T any](v T) *T { return &v }

// ProxyRule is one ClusterIP port and the ready backends it balances over.
type ProxyRule struct {
	Service   string // namespace/name, for the rule comment
	ClusterIP netip.Addr
	Port      int32
	Protocol  corev1.Protocol // TCP, UDP or SCTP
	Backends  []netip.AddrPort
}

// ProxyRules turns Services and their EndpointSlices into proxy rules: one
// per ClusterIP port, with the ready endpoints of every slice of the
// Service that carries a port of the same name and protocol. Services
// without a ClusterIP (headless) are left out, as are ports with no ready
// backend. The result is sorted, so equal inputs give equal rulesets.
func ProxyRules(svcs []corev1.Service, slices []discoveryv1.EndpointSlice) ([]ProxyRule, error) {
	bySvc := map[string][]*discoveryv1.EndpointSlice{}
	for i := range slices {
		s := &slices[i]
		if s.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		bySvc[s.Namespace+"/"+s.Labels[discoveryv1.LabelServiceName]] = append(bySvc[s.Namespace+"/"+s.Labels[discoveryv1.LabelServiceName]], s)
	}
	var out []ProxyRule
	for _, svc := range svcs {
		key := svc.Namespace + "/" + svc.Name
		if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
			continue
		}
		cip, err := netip.ParseAddr(svc.Spec.ClusterIP)
		if err != nil || !cip.Is4() {
			return nil, fmt.Errorf("service %s: spec.clusterIP %q is not an IPv4 address", key, svc.Spec.ClusterIP)
		}
		for _, sp := range svc.Spec.Ports {
			r := ProxyRule{Service: key, ClusterIP: cip, Port: sp.Port, Protocol: protocolOf(sp)}
			for _, s := range bySvc[key] {
				for _, ep := range s.Ports {
					if ep.Port == nil || derefOr(ep.Name, "") != sp.Name || derefOr(ep.Protocol, corev1.ProtocolTCP) != r.Protocol {
						continue
					}
					for _, e := range s.Endpoints {
						if e.Conditions.Ready != nil && !*e.Conditions.Ready {
							continue
						}
						for _, a := range e.Addresses {
							ip, err := netip.ParseAddr(a)
							if err != nil {
								return nil, fmt.Errorf("endpointslice %s/%s: address %q: %w", s.Namespace, s.Name, a, err)
							}
							r.Backends = append(r.Backends, netip.AddrPortFrom(ip, uint16(*ep.Port)))
						}
					}
				}
			}
			if len(r.Backends) == 0 {
				continue
			}
			sort.Slice(r.Backends, func(a, b int) bool { return r.Backends[a].Compare(r.Backends[b]) < 0 })
			out = append(out, r)
		}
	}
	sort.Slice(out, func(a, b int) bool {
		if c := out[a].ClusterIP.Compare(out[b].ClusterIP); c != 0 {
			return c < 0
		}
		if out[a].Port != out[b].Port {
			return out[a].Port < out[b].Port
		}
		return out[a].Protocol < out[b].Protocol
	})
	return out, nil
}

func derefOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// ProxyRuleset renders the nft script that replaces the whole service
// proxy table in one transaction: `nft -f` applies it atomically, so a
// packet sees either the old or the new set of backends. The DNAT runs at
// prerouting priority dstnat (-100) for traffic arriving from local pods,
// before the agent's forward-hook filter, so the agent filters on the
// backend address; conntrack keeps the original ClusterIP tuple and
// reverses the translation on replies. Backends are chosen with
// numgen random.
func ProxyRuleset(rules []ProxyRule) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s\n", SvcProxyTable)
	fmt.Fprintf(&b, "delete table ip %s\n", SvcProxyTable)
	fmt.Fprintf(&b, "table ip %s {\n", SvcProxyTable)
	b.WriteString("\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n")
	for _, r := range rules {
		proto := strings.ToLower(string(r.Protocol))
		fmt.Fprintf(&b, "\t\tip daddr %s %s dport %d ", r.ClusterIP, proto, r.Port)
		if len(r.Backends) == 1 {
			fmt.Fprintf(&b, "dnat to %s", r.Backends[0])
		} else {
			fmt.Fprintf(&b, "dnat to numgen random mod %d map { ", len(r.Backends))
			for i, be := range r.Backends {
				if i > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(&b, "%d : %s . %d", i, be.Addr(), be.Port())
			}
			b.WriteString(" }")
		}
		fmt.Fprintf(&b, " comment %q\n", r.Service+":"+strconv.Itoa(int(r.Port))+"/"+proto)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// ProxyTeardown is the nft script that removes the proxy table, whether or
// not it exists.
func ProxyTeardown() string {
	return fmt.Sprintf("table ip %s\ndelete table ip %s\n", SvcProxyTable, SvcProxyTable)
}

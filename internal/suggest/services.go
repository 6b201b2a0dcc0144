package suggest

import (
	"fmt"
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/attrib"
)

// Service is what the suggester needs of a live Service. Edges whose
// destination is one of its ClusterIPs, or that name it without a
// backend workload, are mapped to its live backends here: attribution
// sees Services through a table refreshed every few seconds, and an edge
// it could not translate must not become an external (ipBlock) peer.
type Service struct {
	Namespace, Name string
	ClusterIPs      []netip.Addr
	// Selector selects the backends; a Service without one is never
	// translated.
	Selector map[string]string
	Ports    []corev1.ServicePort
}

func (s Service) key() string { return s.Namespace + "/" + s.Name }

// serviceEdges rewrites e when its destination is a live Service that
// attribution did not resolve to a workload: into one edge per backend
// workload on the target port, or, for kube-dns, into a DNS edge. It
// returns e unchanged when nothing applies and nil (with a problem
// recorded) when the Service has no live backend to attribute to.
func (s *state) serviceEdges(e *v1alpha1.FlowEdge) []*v1alpha1.FlowEdge {
	if e.Destination.Workload != nil && e.Destination.Workload.Kind != "Service" {
		return []*v1alpha1.FlowEdge{e}
	}
	var svc *Service
	var sp *corev1.ServicePort
	match := func(c *Service) {
		for i := range c.Ports {
			p := &c.Ports[i]
			proto := p.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			if string(proto) == string(e.Protocol) && p.Port == e.Port {
				svc, sp = c, p
			}
		}
	}
	if e.Destination.Service != "" {
		for i := range s.world.Services {
			if s.world.Services[i].key() == e.Destination.Service {
				svc = &s.world.Services[i]
			}
		}
		if svc != nil && e.Destination.Workload == nil && e.Destination.CIDR != "" {
			c := svc
			svc = nil
			match(c)
		}
	} else if a, ok := singleAddr(e.Destination.CIDR); ok {
		for i := range s.world.Services {
			for _, ip := range s.world.Services[i].ClusterIPs {
				if ip == a {
					match(&s.world.Services[i])
				}
			}
		}
	}
	if svc == nil {
		return []*v1alpha1.FlowEdge{e}
	}
	if svc.Namespace == DNSNamespace && svc.Name == DNSService {
		c := *e
		c.Destination = v1alpha1.EdgeEndpoint{Service: svc.key(), Workload: &v1alpha1.WorkloadRef{Namespace: DNSNamespace, Kind: "Service", Name: DNSService}}
		return []*v1alpha1.FlowEdge{&c}
	}
	if e.Destination.Workload != nil && sp == nil {
		return []*v1alpha1.FlowEdge{e} // a Service-kind peer that does not need a port: left as it is
	}
	src := "an edge"
	if w := e.Source.Workload; w != nil {
		src = wkey(w.Namespace, w.Kind, w.Name)
	}
	report := func(msg string) []*v1alpha1.FlowEdge {
		sug := ""
		if w := e.Source.Workload; w != nil {
			sug = suggestionOf(w)
		}
		text := fmt.Sprintf("%s -> Service %s %s/%d: %s; no rule suggested for it", src, svc.key(), e.Protocol, e.Port, msg)
		if sug == "" {
			s.global = append(s.global, text)
		} else {
			s.problem(sug, text)
		}
		return nil
	}
	if len(svc.Selector) == 0 {
		return report("the Service has no selector")
	}
	sel := labels.SelectorFromSet(svc.Selector)
	byWorkload := map[string][]*Pod{}
	for _, p := range s.pods[svc.Namespace] {
		if sel.Matches(labels.Set(p.Labels)) {
			k := wkey(p.Namespace, p.WorkloadKind, p.WorkloadName)
			byWorkload[k] = append(byWorkload[k], p)
		}
	}
	if len(byWorkload) == 0 {
		return report("it has no live backend pods")
	}
	keys := make([]string, 0, len(byWorkload))
	for k := range byWorkload {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []*v1alpha1.FlowEdge
	for _, k := range keys {
		pods := byWorkload[k]
		zone, ok := s.zones[k]
		if !ok {
			return report("its backend workload " + k + " appears in no other edge, so its zone is unknown")
		}
		port := targetPort(*sp, pods)
		if port == 0 {
			return report(fmt.Sprintf("target port %s is not a container port of %s", sp.TargetPort.String(), k))
		}
		c := *e
		c.Port = port
		c.Destination = v1alpha1.EdgeEndpoint{Service: svc.key(), Workload: &v1alpha1.WorkloadRef{
			Namespace: pods[0].Namespace, Kind: pods[0].WorkloadKind, Name: pods[0].WorkloadName,
			Labels: attrib.StableLabels(pods[0].Labels), Zone: zone}}
		out = append(out, &c)
	}
	return out
}

// targetPort resolves a Service port's targetPort on its backend pods (a
// name must be a container port of the first pod that declares it).
func targetPort(sp corev1.ServicePort, pods []*Pod) int32 {
	switch {
	case sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal != "":
		for _, p := range pods {
			for _, cp := range p.Ports {
				if cp.Name == sp.TargetPort.StrVal {
					return cp.ContainerPort
				}
			}
		}
		return 0
	case sp.TargetPort.IntVal != 0:
		return sp.TargetPort.IntVal
	}
	return sp.Port
}

func singleAddr(cidr string) (netip.Addr, bool) {
	if p, err := netip.ParsePrefix(cidr); err == nil {
		return p.Addr(), p.IsSingleIP()
	}
	a, err := netip.ParseAddr(cidr)
	return a, err == nil
}

// indexZones records the zone of every workload that appears in an edge.
func (s *state) indexZones(edges []v1alpha1.FlowEdge) {
	s.zones = map[string]string{}
	for i := range edges {
		for _, ep := range []v1alpha1.EdgeEndpoint{edges[i].Source, edges[i].Destination} {
			if w := ep.Workload; w != nil && w.Kind != "Service" {
				s.zones[wkey(w.Namespace, w.Kind, w.Name)] = w.Zone
			}
		}
	}
	// Live pods of a workload that is in no edge: unknown, left out.
}

package attrib

import (
	"fmt"
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// AddrEdge is an address-level edge summary as an agent reports it: every
// connection between two addresses on one server port with one verdict in
// an interval.
type AddrEdge struct {
	Src, Dst    netip.Addr
	Protocol    uint8 // IANA number: 6 TCP, 17 UDP, 132 SCTP
	Port        uint16
	Verdict     v1alpha1.FlowVerdict
	Connections int64
	Packets     int64
	Bytes       int64
	FirstSeen   time.Time
	LastSeen    time.Time
}

// OwnerLookup returns the controller owner of the object kind/name in
// namespace, and whether the object is known. An object that is known but
// has no owner returns a zero OwnerRef and true.
type OwnerLookup func(namespace string, kind, name string) (OwnerRef, bool)

// ServicePort is one port of a Service and where its backends listen.
type ServicePort struct {
	Namespace, Name string
	Protocol        uint8
	Port            uint16
	// Backends are the ready endpoint addresses with their target port.
	Backends []Backend
}

// Backend is one endpoint of a Service port.
type Backend struct {
	IP   netip.Addr
	Port uint16
}

type svcKey struct {
	ip    netip.Addr
	proto uint8
	port  uint16
}

// Services maps ClusterIP:port to Service ports. The zero value is empty
// and usable.
type Services struct {
	m map[svcKey]ServicePort
}

// Set records that clusterIP serves sp. It replaces an earlier entry for
// the same address, protocol and port.
func (s *Services) Set(clusterIP netip.Addr, sp ServicePort) {
	if s.m == nil {
		s.m = map[svcKey]ServicePort{}
	}
	s.m[svcKey{clusterIP.Unmap(), sp.Protocol, sp.Port}] = sp
}

// Delete removes every port of the Service namespace/name.
func (s *Services) Delete(namespace, name string) {
	for k, sp := range s.m {
		if sp.Namespace == namespace && sp.Name == name {
			delete(s.m, k)
		}
	}
}

// Lookup returns the Service port behind ip:port.
func (s *Services) Lookup(ip netip.Addr, proto uint8, port uint16) (ServicePort, bool) {
	sp, ok := s.m[svcKey{ip.Unmap(), proto, port}]
	return sp, ok
}

// Attributor turns AddrEdges into FlowEdges.
type Attributor struct {
	History  *History
	Owners   OwnerLookup // nil: owners are never walked beyond the pod's own reference
	Services *Services   // nil: no Service translation
	// Aggregates are CIDRs that external addresses are reported as; the
	// smallest containing one wins. Others are /32 or /128.
	Aggregates []netip.Prefix
}

// maxOwnerDepth bounds owner walks against reference cycles.
const maxOwnerDepth = 8

// Workload returns the top workload of pod.
func (a *Attributor) Workload(pod Pod) v1alpha1.WorkloadRef {
	w := v1alpha1.WorkloadRef{Namespace: pod.Namespace, Kind: "Pod", Name: pod.Name, Labels: StableLabels(pod.Labels), Zone: pod.Zone}
	ref := pod.Owner
	for i := 0; ref.Kind != "" && i < maxOwnerDepth; i++ {
		w.Kind, w.Name = ref.Kind, ref.Name
		if a.Owners == nil {
			break
		}
		next, ok := a.Owners(pod.Namespace, ref.Kind, ref.Name)
		if !ok {
			break
		}
		ref = next
	}
	return w
}

// endpoint attributes one address at time at. pod is set when the address
// belonged to a pod.
func (a *Attributor) endpoint(ip netip.Addr, at time.Time) (v1alpha1.EdgeEndpoint, *Pod) {
	if a.History != nil {
		if p, ok := a.History.Lookup(ip, at); ok {
			w := a.Workload(p)
			return v1alpha1.EdgeEndpoint{Workload: &w}, &p
		}
	}
	return v1alpha1.EdgeEndpoint{CIDR: a.cidr(ip).String()}, nil
}

func (a *Attributor) cidr(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	best := netip.PrefixFrom(ip, ip.BitLen())
	found := false
	for _, p := range a.Aggregates {
		if p.Contains(ip) && (!found || p.Bits() > best.Bits()) {
			best, found = p.Masked(), true
		}
	}
	return best
}

// DNS is the Service that cluster DNS lookups go to.
const (
	DNSNamespace = "kube-system"
	DNSService   = "kube-dns"
)

// Attribute turns e into a workload-level edge with one source pod. It
// returns false for protocols a FlowEdge cannot hold (other than TCP, UDP
// and SCTP).
func (a *Attributor) Attribute(e AddrEdge) (v1alpha1.FlowEdge, bool) {
	proto, ok := protoName(e.Protocol)
	if !ok {
		return v1alpha1.FlowEdge{}, false
	}
	at := e.LastSeen
	if at.IsZero() {
		at = e.FirstSeen
	}
	out := v1alpha1.FlowEdge{
		Protocol:    proto,
		Port:        int32(e.Port),
		Verdict:     e.Verdict,
		Connections: e.Connections,
		Packets:     e.Packets,
		Bytes:       e.Bytes,
		FirstSeen:   metaTime(e.FirstSeen),
		LastSeen:    metaTime(e.LastSeen),
		Samples:     []string{fmt.Sprintf("%s -> %s %s/%d", e.Src, e.Dst, proto, e.Port)},
	}
	var srcPod *Pod
	out.Source, srcPod = a.endpoint(e.Src, at)
	if srcPod != nil {
		out.SourcePods = []string{srcPod.Namespace + "/" + srcPod.Name}
		out.SourcePodCount = 1
	}
	dst := e.Dst
	if a.Services != nil {
		if sp, ok := a.Services.Lookup(e.Dst, e.Protocol, e.Port); ok {
			svc := sp.Namespace + "/" + sp.Name
			if b, ok := a.pickBackend(sp, at); ok {
				dst = b.IP
				if b.Port != 0 {
					out.Port = int32(b.Port)
				}
				out.Destination, _ = a.endpoint(dst, at)
			} else if sp.Namespace == DNSNamespace && sp.Name == DNSService {
				out.Destination = v1alpha1.EdgeEndpoint{Workload: &v1alpha1.WorkloadRef{Namespace: DNSNamespace, Kind: "Service", Name: DNSService}}
			} else {
				out.Destination, _ = a.endpoint(dst, at)
			}
			out.Destination.Service = svc
			return out, true
		}
	}
	out.Destination, _ = a.endpoint(dst, at)
	return out, true
}

// pickBackend returns a backend of sp whose address is a known pod; all
// backends of a Service normally belong to one workload. Without one it
// returns the first backend, if any, so the target port is still right.
func (a *Attributor) pickBackend(sp ServicePort, at time.Time) (Backend, bool) {
	for _, b := range sp.Backends {
		if a.History != nil {
			if _, ok := a.History.Lookup(b.IP, at); ok {
				return b, true
			}
		}
	}
	return Backend{}, false
}

func protoName(p uint8) (v1alpha1.Protocol, bool) {
	switch p {
	case 6:
		return v1alpha1.ProtocolTCP, true
	case 17:
		return v1alpha1.ProtocolUDP, true
	case 132:
		return v1alpha1.ProtocolSCTP, true
	}
	return "", false
}

func metaTime(t time.Time) metav1.Time { return metav1.NewTime(t.UTC().Truncate(time.Second)) }

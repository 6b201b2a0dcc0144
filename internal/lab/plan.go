package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MaxPodsPerNode is how many pods fit one node's /24 (host numbers 2..254).
const MaxPodsPerNode = 253

// MaxNodes is how many nodes fit the 10.250.0.0/24 node network (1..254);
// node n also owns 10.244.n.0/24, so 254 is the real limit.
const MaxNodes = 254

var labNameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,11}$`)

// ValidateName checks a lab name: 1–12 lower-case letters and digits,
// starting with a letter. Names have no '-', so the namespace prefix
// "bh-<lab>-" of one lab never matches another lab's.
func ValidateName(name string) error {
	if !labNameRE.MatchString(name) {
		return fmt.Errorf("lab name %q: must be 1-12 lower-case letters or digits, starting with a letter", name)
	}
	return nil
}

// NetnsPrefix is the prefix of every network namespace of the named lab.
func NetnsPrefix(lab string) string { return "bh-" + lab + "-" }

// Plan is a lab's topology and addressing, computed before anything is
// created. It is deterministic: the same inputs give the same plan.
type Plan struct {
	Name       string          `json:"name"`
	Fabric     string          `json:"fabric"` // netns holding the node bridge
	Nodes      []NodePlan      `json:"nodes"`
	Namespaces []NamespacePlan `json:"namespaces"`
	Pods       []PodPlan       `json:"pods"`
}

// NodePlan is one node: a network namespace and its Node object.
type NodePlan struct {
	Index     int          `json:"index"` // 1-based
	Name      string       `json:"name"`  // Node object name and netns name
	IP        netip.Addr   `json:"ip"`    // 10.250.0.<index> on eth0
	IP6LL     netip.Addr   `json:"ip6ll"` // fe80::250:<index> on eth0, IPv6 next hop
	PodCIDR   netip.Prefix `json:"podCIDR"`
	PodCIDR6  netip.Prefix `json:"podCIDR6"`
	FabricDev string       `json:"fabricDev"` // the bridge port in the fabric netns
}

// NamespacePlan is one Kubernetes namespace with its labels.
type NamespacePlan struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
}

// PodPlan is one pod: its object, its node and its addresses.
type PodPlan struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels,omitempty"`
	Node      int               `json:"node"` // NodePlan.Index
	NodeName  string            `json:"nodeName"`
	IP        netip.Addr        `json:"ip"`
	IP6       netip.Addr        `json:"ip6"`
	Netns     string            `json:"netns"`
	HostVeth  string            `json:"hostVeth"` // node-side veth name, in the node netns
	// Spec is the pod spec as the kubelet creates it (nodeName set).
	Spec corev1.PodSpec `json:"spec"`
	// Owners are the ownerReferences of a workload's pod (added after up).
	Owners []metav1.OwnerReference `json:"owners,omitempty"`
}

// Key is "namespace/name", the matrix's endpoint name.
func (p PodPlan) Key() string { return p.Namespace + "/" + p.Name }

// NodeName returns the Node object (and netns) name of node index i.
func NodeName(lab string, i int) string { return NetnsPrefix(lab) + "node" + strconv.Itoa(i) }

// NodeIP is node i's address on the node network.
func NodeIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 250, 0, byte(i)}) }

// NodeIP6LL is node i's fixed link-local address on the node network.
func NodeIP6LL(i int) netip.Addr {
	return netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 12: 0x02, 13: 0x50, 14: byte(i >> 8), 15: byte(i)})
}

// PodCIDR is node i's IPv4 pod range 10.244.i.0/24.
func PodCIDR(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24)
}

// PodCIDR6 is node i's IPv6 pod range fd00:10:244:i::/64.
func PodCIDR6(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x10, 0x02, 0x44, byte(i >> 8), byte(i)}), 64)
}

// PodIP is the k-th pod (0-based) on node i: 10.244.i.(k+2).
func PodIP(i, k int) netip.Addr { return netip.AddrFrom4([4]byte{10, 244, byte(i), byte(k + 2)}) }

// PodIP6 is the k-th pod (0-based) on node i: fd00:10:244:i::(k+2).
func PodIP6(i, k int) netip.Addr {
	b := PodCIDR6(i).Addr().As16()
	b[15] = byte(k + 2)
	return netip.AddrFrom16(b)
}

// GatewayIP is the pods' default gateway: the node answers for it by proxy
// ARP, as Calico does.
var GatewayIP = netip.MustParseAddr("169.254.1.1")

// GatewayIP6 is the pods' IPv6 gateway: a link-local address on every
// node-side pod veth.
var GatewayIP6 = netip.MustParseAddr("fe80::1")

// PodInput is a pod to place: what the scenario or the default set says.
type PodInput struct {
	Namespace string
	Name      string
	Labels    map[string]string
	Spec      corev1.PodSpec
}

// NewPlan places pods round-robin over nodes in input order (pod j goes to
// node j%nodes+1) and assigns addresses from the addressing plan. Any
// address or node name in the input is ignored. Every pod's namespace must
// be among namespaces; a namespace that is referenced but not declared is
// added with no labels, and one declared more than once merges its labels.
func NewPlan(lab string, nodes int, namespaces []NamespacePlan, pods []PodInput) (*Plan, error) {
	var errs []error
	if err := ValidateName(lab); err != nil {
		errs = append(errs, err)
	}
	if nodes < 1 || nodes > MaxNodes {
		errs = append(errs, fmt.Errorf("nodes: %d is out of range 1..%d", nodes, MaxNodes))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if max := nodes * MaxPodsPerNode; len(pods) > max {
		return nil, fmt.Errorf("%d pods do not fit %d nodes (at most %d per node)", len(pods), nodes, MaxPodsPerNode)
	}
	p := &Plan{Name: lab, Fabric: NetnsPrefix(lab) + "fabric"}
	for i := 1; i <= nodes; i++ {
		p.Nodes = append(p.Nodes, NodePlan{
			Index: i, Name: NodeName(lab, i), IP: NodeIP(i), IP6LL: NodeIP6LL(i),
			PodCIDR: PodCIDR(i), PodCIDR6: PodCIDR6(i), FabricDev: "node" + strconv.Itoa(i),
		})
	}
	seenNS := map[string]bool{}
	for _, ns := range namespaces {
		if ns.Name == "" {
			errs = append(errs, errors.New("a namespace has no name"))
			continue
		}
		if seenNS[ns.Name] {
			// Declared again (e.g. in a base file and a scenario): the
			// labels merge, later declarations win.
			for i := range p.Namespaces {
				if p.Namespaces[i].Name == ns.Name {
					if p.Namespaces[i].Labels == nil && len(ns.Labels) > 0 {
						p.Namespaces[i].Labels = map[string]string{}
					}
					for k, v := range ns.Labels {
						p.Namespaces[i].Labels[k] = v
					}
				}
			}
			continue
		}
		seenNS[ns.Name] = true
		p.Namespaces = append(p.Namespaces, NamespacePlan{Name: ns.Name, Labels: copyLabels(ns.Labels)})
	}
	seenPod := map[string]bool{}
	perNode := make([]int, nodes+1)
	for j, in := range pods {
		key := in.Namespace + "/" + in.Name
		if in.Namespace == "" || in.Name == "" {
			errs = append(errs, fmt.Errorf("pod %d: namespace and name are required", j))
			continue
		}
		if seenPod[key] {
			errs = append(errs, fmt.Errorf("pod %s is declared twice", key))
			continue
		}
		seenPod[key] = true
		if !seenNS[in.Namespace] {
			seenNS[in.Namespace] = true
			p.Namespaces = append(p.Namespaces, NamespacePlan{Name: in.Namespace})
		}
		n := len(p.Pods)%nodes + 1
		k := perNode[n]
		perNode[n]++
		spec := *in.Spec.DeepCopy()
		spec.NodeName = NodeName(lab, n)
		p.Pods = append(p.Pods, PodPlan{
			Namespace: in.Namespace, Name: in.Name, Labels: copyLabels(in.Labels),
			Node: n, NodeName: NodeName(lab, n),
			IP: PodIP(n, k), IP6: PodIP6(n, k),
			Netns:    podNetns(lab, in.Namespace, in.Name, len(p.Pods)),
			HostVeth: "bhpod" + strconv.Itoa(k),
			Spec:     spec,
		})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// podNetns names a pod's namespace "bh-<lab>-pod-<ns>-<name>", falling back
// to an index when that would be too long for a file name.
func podNetns(lab, ns, name string, idx int) string {
	n := NetnsPrefix(lab) + "pod-" + ns + "-" + name
	if len(n) > 200 {
		n = NetnsPrefix(lab) + "pod" + strconv.Itoa(idx)
	}
	return n
}

// Netns lists every network namespace of the plan: fabric, nodes, pods.
func (p *Plan) Netns() []string {
	out := []string{p.Fabric}
	for _, n := range p.Nodes {
		out = append(out, n.Name)
	}
	for _, pod := range p.Pods {
		out = append(out, pod.Netns)
	}
	return out
}

// Pod returns the pod with key "ns/name".
func (p *Plan) Pod(key string) (PodPlan, bool) {
	for _, pod := range p.Pods {
		if pod.Key() == key {
			return pod, true
		}
	}
	return PodPlan{}, false
}

// DeclaredProbes is the union of all container ports the pods declare,
// sorted, as analyze's default probe set.
func (p *Plan) DeclaredProbes() []Probe {
	set := map[Probe]bool{}
	for _, pod := range p.Pods {
		for _, c := range pod.Spec.Containers {
			for _, cp := range c.Ports {
				proto := string(cp.Protocol)
				if proto == "" {
					proto = "TCP"
				}
				set[Probe{Protocol: proto, Port: int(cp.ContainerPort)}] = true
			}
		}
	}
	out := make([]Probe, 0, len(set))
	for pr := range set {
		out = append(out, pr)
	}
	SortProbes(out)
	return out
}

// Probe is one protocol and destination port.
type Probe struct {
	Protocol string `json:"protocol"` // TCP, UDP or SCTP
	Port     int    `json:"port"`
}

func (p Probe) String() string { return p.Protocol + "/" + strconv.Itoa(p.Port) }

// SortProbes orders probes by protocol, then port.
func SortProbes(ps []Probe) {
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].Protocol != ps[j].Protocol {
			return ps[i].Protocol < ps[j].Protocol
		}
		return ps[i].Port < ps[j].Port
	})
}

// ParseProbes parses "TCP/80,UDP/53,SCTP/9000". The protocol is
// case-insensitive; duplicates collapse.
func ParseProbes(s string) ([]Probe, error) {
	set := map[Probe]bool{}
	var errs []error
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		proto, port, ok := strings.Cut(f, "/")
		proto = strings.ToUpper(proto)
		if !ok || (proto != "TCP" && proto != "UDP" && proto != "SCTP") {
			errs = append(errs, fmt.Errorf("probe %q: want PROTOCOL/PORT with protocol TCP, UDP or SCTP", f))
			continue
		}
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			errs = append(errs, fmt.Errorf("probe %q: port must be a number 1..65535", f))
			continue
		}
		set[Probe{Protocol: proto, Port: n}] = true
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	out := make([]Probe, 0, len(set))
	for pr := range set {
		out = append(out, pr)
	}
	SortProbes(out)
	return out, nil
}

func copyLabels(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// DefaultSet is the workload a lab gets without a scenario: namespaces web,
// api and db (db labelled tier=pci), and podsPerNode*nodes pods cycling
// through frontend (web, TCP/80), api (api, TCP/8080 and UDP/53) and
// postgres (db, TCP/5432).
func DefaultSet(nodes, podsPerNode int) ([]NamespacePlan, []PodInput) {
	nss := []NamespacePlan{
		{Name: "web", Labels: map[string]string{"tier": "web"}},
		{Name: "api", Labels: map[string]string{"tier": "api"}},
		{Name: "db", Labels: map[string]string{"tier": "pci"}},
	}
	type tmpl struct {
		ns, app string
		ports   []corev1.ContainerPort
	}
	tmpls := []tmpl{
		{"web", "frontend", []corev1.ContainerPort{{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP}}},
		{"api", "api", []corev1.ContainerPort{
			{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
			{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
		}},
		{"db", "postgres", []corev1.ContainerPort{{Name: "postgres", ContainerPort: 5432, Protocol: corev1.ProtocolTCP}}},
	}
	var pods []PodInput
	for j := 0; j < nodes*podsPerNode; j++ {
		t := tmpls[j%len(tmpls)]
		pods = append(pods, PodInput{
			Namespace: t.ns,
			Name:      t.app + "-" + strconv.Itoa(j/len(tmpls)),
			Labels:    map[string]string{"app": t.app},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: t.app, Image: ProbeImage, Ports: t.ports,
			}}},
		})
	}
	return nss, pods
}

// ProbeImage is the image name the lab puts on containers that have none;
// no image is ever pulled.
const ProbeImage = "bulkhead.dev/lab-probe:latest"

package lab

import (
	"encoding/hex"
	"hash/crc32"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
)

func podIn(ns, name string, ports ...corev1.ContainerPort) PodInput {
	return PodInput{Namespace: ns, Name: name, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Ports: ports}}}}
}

func TestNewPlanPlacement(t *testing.T) {
	pods := []PodInput{podIn("a", "p0"), podIn("b", "p1"), podIn("a", "p2"), podIn("b", "p3"), podIn("c", "p4")}
	pods[0].Spec.NodeName = "somewhere-else" // ignored
	p, err := NewPlan("demo", 2, []NamespacePlan{{Name: "a", Labels: map[string]string{"tier": "pci"}}}, pods)
	if err != nil {
		t.Fatal(err)
	}
	type placed struct {
		Key, Node, IP, IP6, Netns, Veth string
	}
	var got []placed
	for _, pp := range p.Pods {
		got = append(got, placed{pp.Key(), pp.NodeName, pp.IP.String(), pp.IP6.String(), pp.Netns, pp.HostVeth})
		if pp.Spec.NodeName != pp.NodeName {
			t.Errorf("pod %s: spec.nodeName %q, want %q", pp.Key(), pp.Spec.NodeName, pp.NodeName)
		}
	}
	want := []placed{
		{"a/p0", "bh-demo-node1", "10.244.1.2", "fd00:10:244:1::2", "bh-demo-pod-a-p0", "bhpod0"},
		{"b/p1", "bh-demo-node2", "10.244.2.2", "fd00:10:244:2::2", "bh-demo-pod-b-p1", "bhpod0"},
		{"a/p2", "bh-demo-node1", "10.244.1.3", "fd00:10:244:1::3", "bh-demo-pod-a-p2", "bhpod1"},
		{"b/p3", "bh-demo-node2", "10.244.2.3", "fd00:10:244:2::3", "bh-demo-pod-b-p3", "bhpod1"},
		{"c/p4", "bh-demo-node1", "10.244.1.4", "fd00:10:244:1::4", "bh-demo-pod-c-p4", "bhpod2"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("round-robin placement in file order (-want +got):\n%s", d)
	}
	wantNS := []NamespacePlan{{Name: "a", Labels: map[string]string{"tier": "pci"}}, {Name: "b"}, {Name: "c"}}
	if d := cmp.Diff(wantNS, p.Namespaces); d != "" {
		t.Errorf("declared namespaces keep labels, used ones are added (-want +got):\n%s", d)
	}
	wantNet := []string{"bh-demo-fabric", "bh-demo-node1", "bh-demo-node2", "bh-demo-pod-a-p0", "bh-demo-pod-b-p1", "bh-demo-pod-a-p2", "bh-demo-pod-b-p3", "bh-demo-pod-c-p4"}
	if d := cmp.Diff(wantNet, p.Netns()); d != "" {
		t.Errorf("every netns carries the lab prefix (-want +got):\n%s", d)
	}
}

func TestNewPlanMergesANamespaceDeclaredTwice(t *testing.T) {
	p, err := NewPlan("x", 1, []NamespacePlan{
		{Name: "a", Labels: map[string]string{"tier": "web", "team": "x"}},
		{Name: "a", Labels: map[string]string{"tier": "pci"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []NamespacePlan{{Name: "a", Labels: map[string]string{"tier": "pci", "team": "x"}}}
	if d := cmp.Diff(want, p.Namespaces); d != "" {
		t.Errorf("later labels win (-want +got):\n%s", d)
	}
}

func TestAddressingPlan(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"node IP is 10.250.0.n", NodeIP(3).String(), "10.250.0.3"},
		{"node link-local is fe80::250:n", NodeIP6LL(3).String(), "fe80::250:3"},
		{"pod CIDR of node n is 10.244.n.0/24", PodCIDR(7).String(), "10.244.7.0/24"},
		{"IPv6 pod CIDR of node n is fd00:10:244:n::/64", PodCIDR6(7).String(), "fd00:10:244:7::/64"},
		{"first pod on a node is .2", PodIP(1, 0).String(), "10.244.1.2"},
		{"last pod fitting a /24 is .254", PodIP(1, MaxPodsPerNode-1).String(), "10.244.1.254"},
		{"IPv6 pod address mirrors the IPv4 host number", PodIP6(2, 5).String(), "fd00:10:244:2::7"},
		{"node names carry the lab prefix", NodeName("x1", 2), "bh-x1-node2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %s, want %s", tt.got, tt.want)
			}
		})
	}
	for i := 1; i <= 3; i++ {
		if !PodCIDR(i).Contains(PodIP(i, 0)) || !PodCIDR6(i).Contains(PodIP6(i, 0)) {
			t.Errorf("node %d's pods lie outside its pod CIDRs", i)
		}
	}
	if !netip.MustParsePrefix("10.244.0.0/16").Contains(PodIP(254, 252)) {
		t.Error("pod addresses leave 10.244.0.0/16")
	}
}

func TestNewPlanRejects(t *testing.T) {
	tests := []struct {
		name    string
		lab     string
		nodes   int
		pods    []PodInput
		wantErr string
	}{
		{"a lab name with a dash is refused, so prefixes never overlap", "a-b", 1, nil, "lab name"},
		{"an empty lab name is refused", "", 1, nil, "lab name"},
		{"zero nodes are refused", "x", 0, nil, "nodes: 0"},
		{"more nodes than the node network holds are refused", "x", MaxNodes + 1, nil, "out of range"},
		{"a pod declared twice is refused", "x", 1, []PodInput{podIn("a", "p"), podIn("a", "p")}, "declared twice"},
		{"too many pods for the nodes are refused", "x", 1, make([]PodInput, MaxPodsPerNode+1), "do not fit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewPlan(tt.lab, tt.nodes, nil, tt.pods)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestDefaultSet(t *testing.T) {
	nss, pods := DefaultSet(3, 2)
	if len(pods) != 6 {
		t.Fatalf("3 nodes x 2 pods per node gave %d pods", len(pods))
	}
	p, err := NewPlan("lab", 3, nss, pods)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, pp := range p.Pods {
		keys = append(keys, pp.Key()+"@"+pp.NodeName)
	}
	want := []string{
		"web/frontend-0@bh-lab-node1", "api/api-0@bh-lab-node2", "db/postgres-0@bh-lab-node3",
		"web/frontend-1@bh-lab-node1", "api/api-1@bh-lab-node2", "db/postgres-1@bh-lab-node3",
	}
	if d := cmp.Diff(want, keys); d != "" {
		t.Errorf("default set (-want +got):\n%s", d)
	}
	wantProbes := []Probe{{"TCP", 80}, {"TCP", 5432}, {"TCP", 8080}, {"UDP", 53}}
	if d := cmp.Diff(wantProbes, p.DeclaredProbes()); d != "" {
		t.Errorf("default probes are the union of declared ports (-want +got):\n%s", d)
	}
}

func TestDeclaredProbesDefaultToTCP(t *testing.T) {
	p, err := NewPlan("x", 1, nil, []PodInput{
		podIn("a", "p", corev1.ContainerPort{ContainerPort: 80}, corev1.ContainerPort{ContainerPort: 9000, Protocol: corev1.ProtocolSCTP}),
		podIn("a", "q", corev1.ContainerPort{ContainerPort: 80, Protocol: corev1.ProtocolTCP}),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []Probe{{"SCTP", 9000}, {"TCP", 80}}
	if d := cmp.Diff(want, p.DeclaredProbes()); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestParseProbes(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Probe
		wantErr string
	}{
		{"a list is parsed and sorted", "UDP/53, tcp/80,SCTP/9000", []Probe{{"SCTP", 9000}, {"TCP", 80}, {"UDP", 53}}, ""},
		{"duplicates collapse", "TCP/80,TCP/80", []Probe{{"TCP", 80}}, ""},
		{"an unknown protocol is an error", "ICMP/1", nil, `probe "ICMP/1"`},
		{"port 0 is an error", "TCP/0", nil, "1..65535"},
		{"a missing port is an error", "TCP", nil, "PROTOCOL/PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseProbes(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestCRC32cMatchesRFC3720Vectors(t *testing.T) {
	ascending := make([]byte, 32)
	for i := range ascending {
		ascending[i] = byte(i)
	}
	ones := []byte(strings.Repeat("\xff", 32))
	tests := []struct {
		name string
		in   []byte
		want uint32
	}{
		{"32 zero bytes", make([]byte, 32), 0x8a9136aa},
		{"32 0xff bytes", ones, 0x62a8ab43},
		{"32 ascending bytes", ascending, 0x46dd794e},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := crc32.Checksum(tt.in, castagnoli); got != tt.want {
				t.Errorf("got %#x, want %#x", got, tt.want)
			}
		})
	}
}

func TestSCTPInitEncoding(t *testing.T) {
	// Expected bytes computed independently with a bitwise CRC32c, the
	// checksum stored least significant byte first (RFC 9260 appendix A).
	want := "9c402328" + "00000000" + "4da1b1d6" + // ports 40000 -> 9000, vtag 0, checksum
		"01000014" + "12345678" + "0000ffff" + "00010001" + "12345679" // INIT, tag, a_rwnd, streams, TSN
	got := hex.EncodeToString(SCTPInit(40000, 9000, 0x12345678))
	if got != want {
		t.Fatalf("SCTPInit:\n got %s\nwant %s", got, want)
	}
	info, err := ParseSCTPInit(SCTPInit(40000, 9000, 0x12345678))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(SCTPInitInfo{SrcPort: 40000, DstPort: 9000, Tag: 0x12345678}, info); d != "" {
		t.Errorf("round trip (-want +got):\n%s", d)
	}
	bad := SCTPInit(40000, 9000, 0x12345678)
	bad[20] ^= 1
	if _, err := ParseSCTPInit(bad); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("a corrupted packet passed: %v", err)
	}
	if _, err := ParseSCTPInit(bad[:10]); err == nil {
		t.Error("a truncated packet passed")
	}
}

func TestStripIPv4Header(t *testing.T) {
	pkt := append([]byte{0x46, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, 0xaa)
	got, err := stripIPv4Header(pkt)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]byte{0xaa}, got); d != "" {
		t.Errorf("IHL 6 skips 24 bytes of header (-want +got):\n%s", d)
	}
	if _, err := stripIPv4Header([]byte{0x60, 0}); err == nil {
		t.Error("an IPv6 packet passed")
	}
}

package stream

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
)

var cmpIR = cmp.Options{cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), cmpopts.EquateEmpty()}

func samplePolicy() *ir.NodePolicy {
	return &ir.NodePolicy{
		Node: "node-a",
		Endpoints: []ir.Endpoint{
			{
				Name:           "pci/db-0",
				IPs:            []netip.Addr{netip.MustParseAddr("10.244.1.5"), netip.MustParseAddr("fd00:10:244:1::5")},
				Quarantined:    true,
				CutConnections: true,
				Ingress: ir.Chain{Tiers: []ir.Tier{
					{Kind: ir.TierQuarantine, Rules: []ir.Rule{{ID: "Quarantine/pci/q1/ingress/0", Peer: ir.PeerMatch{Set: "q-forensics"}, Ports: []ir.PortRange{{Protocol: ir.TCP, From: 22, To: 22}}, Action: ir.Accept, Log: true}}},
					{Kind: ir.TierAdmin, Rules: []ir.Rule{
						{ID: "ZonePolicy/web-db", Peer: ir.PeerMatch{Set: "zone-web"}, Ports: []ir.PortRange{{Protocol: ir.TCP, From: 5432, To: 5440}, {Protocol: ir.SCTP}}, Action: ir.Pass},
						{ID: "Zone/pci/boundary", Peer: ir.PeerMatch{Set: "zone-pci", Negate: true}, Action: ir.Audit},
					}},
					{Kind: ir.TierNetworkPolicy, Rules: []ir.Rule{{ID: "NetworkPolicy/pci/np/ingress/0", Peer: ir.PeerMatch{}, Ports: []ir.PortRange{{Protocol: ir.UDP, From: 53}}, Action: ir.Accept}}},
					{Kind: ir.TierBaseline, Rules: []ir.Rule{{ID: "Zone/pci/intra", Action: ir.Deny}}},
				}},
			},
			{Name: "web/w-1", IPs: []netip.Addr{netip.MustParseAddr("10.244.1.6")}},
		},
		Sets: []ir.AddressSet{
			{Name: "q-forensics", Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")}},
			{Name: "zone-pci", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.244.1.5/32"), netip.MustParsePrefix("fd00:10:244:1::5/128")}},
			{Name: "zone-web", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24"), netip.MustParsePrefix("fd00:10:244::/64")}},
		},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		np   *ir.NodePolicy
	}{
		{"a policy with every tier, action, protocol and address family survives the wire", samplePolicy()},
		{"an empty policy survives the wire", &ir.NodePolicy{Node: "empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := proto.Marshal(ToProto(tc.np))
			if err != nil {
				t.Fatal(err)
			}
			var m pb.NodePolicy
			if err := proto.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			got, err := FromProto(&m)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.np, got, cmpIR); d != "" {
				t.Fatalf("round trip (-want +got):\n%s", d)
			}
		})
	}
}

func TestFromProtoRejects(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mutate  func(*pb.NodePolicy)
		wantErr string
	}{
		{"a 5-byte address names the endpoint", func(m *pb.NodePolicy) { m.Endpoints[1].Ips[0] = []byte{1, 2, 3, 4, 5} }, "endpoint web/w-1: ips[0]"},
		{"an unspecified tier kind is refused", func(m *pb.NodePolicy) { m.Endpoints[0].Ingress.Tiers[1].Kind = pb.TierKind_TIER_KIND_UNSPECIFIED }, "ingress: tiers[1]: unknown tier kind"},
		{"an unknown action names the rule", func(m *pb.NodePolicy) { m.Endpoints[0].Ingress.Tiers[1].Rules[0].Action = 9 }, "ZonePolicy/web-db"},
		{"a port above 65535 is refused", func(m *pb.NodePolicy) { m.Endpoints[0].Ingress.Tiers[0].Rules[0].Ports[0].To = 70000 }, "out of range"},
		{"a prefix longer than its address names the set", func(m *pb.NodePolicy) { m.Sets[0].Prefixes[0].Bits = 33 }, "address set q-forensics: prefixes[0]: /33"},
		{"a set without a name is refused", func(m *pb.NodePolicy) { m.Sets[1].Name = "" }, "address set without a name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := ToProto(samplePolicy())
			tc.mutate(m)
			_, err := FromProto(m)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("FromProto error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

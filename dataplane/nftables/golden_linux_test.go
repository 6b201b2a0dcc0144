//go:build linux

package nftables

import (
	"context"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

var update = flag.Bool("update", false, "rewrite golden files")

// referencePolicy exercises every rule kind: selector sets, a CIDR with an
// except, port ranges, a named port resolved to a number, TCP, UDP and
// SCTP, every action, a negated peer, IPv4 and IPv6, quarantine, and
// every kind of tier map: interval maps, exact twins and address maps.
func referencePolicy() *ir.NodePolicy {
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	tcp := func(f, t uint16) ir.PortRange { return ir.PortRange{Protocol: ir.TCP, From: f, To: t} }
	return &ir.NodePolicy{
		Node: "node-1",
		Sets: []ir.AddressSet{
			dptest.Set("ns/db:app=db", p("10.244.1.7/32"), p("fd00:10:244:1::7/128")),
			dptest.Set("ns/web:app=web", p("10.244.0.5/32"), p("10.244.2.9/32"), p("fd00:10:244::5/128")),
			dptest.Set("world", dptest.Except(p("0.0.0.0/0"), p("10.0.0.0/8"))...),
		},
		Endpoints: []ir.Endpoint{
			{
				Name: "ns/db-0",
				IPs:  []netip.Addr{a("10.244.0.7"), a("fd00:10:244::7")},
				Ingress: ir.Chain{Tiers: []ir.Tier{
					dptest.Tier(ir.TierAdmin,
						dptest.Rule("ZonePolicy/web-to-db", "ns/web:app=web", false, ir.Pass),
						dptest.Rule("Zone/pci/boundary", "ns/web:app=web", true, ir.Deny)),
					dptest.Tier(ir.TierNetworkPolicy,
						dptest.Rule("NetworkPolicy/ns/db/ingress/0", "ns/web:app=web", false, ir.Accept, tcp(5432, 5432), tcp(8000, 8100)),
						dptest.Rule("NetworkPolicy/ns/db/ingress/1", "", false, ir.Accept, ir.PortRange{Protocol: ir.SCTP, From: 3868, To: 3868}, ir.PortRange{Protocol: ir.UDP, From: 53, To: 53})),
					dptest.Tier(ir.TierBaseline, dptest.Rule("Zone/pci/baseline", "", false, ir.Deny)),
				}},
				Egress: ir.Chain{Tiers: []ir.Tier{
					dptest.Tier(ir.TierAdmin, dptest.Rule("ZonePolicy/audit-world", "world", false, ir.Audit, ir.PortRange{Protocol: ir.TCP})),
				}},
			},
			{
				Name:        "ns/suspect",
				IPs:         []netip.Addr{a("10.244.0.9")},
				Quarantined: true,
				Ingress: ir.Chain{Tiers: []ir.Tier{dptest.Tier(ir.TierQuarantine,
					dptest.Rule("Quarantine/ns/incident-1/forensics", "ns/db:app=db", false, ir.Accept, tcp(22, 22)),
					dptest.Rule("Quarantine/ns/incident-1", "", false, ir.Deny))}},
				Egress: ir.Chain{Tiers: []ir.Tier{dptest.Tier(ir.TierQuarantine,
					dptest.Rule("Quarantine/ns/incident-1", "", false, ir.Deny))}},
			},
			{
				// pod peers on one port, and on every port: single
				// keys in hash maps (the exact twin, the address map)
				Name: "ns/web-0",
				IPs:  []netip.Addr{a("10.244.0.11"), a("fd00:10:244::11")},
				Ingress: ir.Chain{Tiers: []ir.Tier{
					dptest.Tier(ir.TierNetworkPolicy,
						dptest.Rule("NetworkPolicy/ns/web/ingress/0", "ns/web:app=web", false, ir.Accept, tcp(8080, 8080)),
						dptest.Rule("NetworkPolicy/ns/web/ingress/1", "ns/db:app=db", false, ir.Accept)),
					dptest.Tier(ir.TierBaseline, dptest.Rule("Zone/web/baseline", "", false, ir.Deny)),
				}},
			},
		},
	}
}

func TestRulesetMatchesGolden(t *testing.T) {
	ns := nsOnly(t)
	b := newBackend(t, ns, Options{NFLogGroup: 7})
	if err := b.Sync(context.Background(), referencePolicy()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	got := nft(t, ns, "list", "table", "inet", "bulkhead")
	path := filepath.Join("testdata", "reference.nft")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("nft list table inet bulkhead differs from %s (-want +got):\n%s", path, diff)
	}
}

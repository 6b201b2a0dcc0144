//go:build linux

package dptest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// NewFunc builds the backend under test for the node namespace at
// netnsPath. It registers its own cleanup (Uninstall, Close).
type NewFunc func(t *testing.T, netnsPath string) dataplane.Dataplane

// Case is one reference policy and the probes that check it.
type Case struct {
	Name   string
	Policy func(t *Topology) *ir.NodePolicy
	// Want lists hand-written expectations: probes that must succeed
	// (true) or fail (false). Every other probe of the matrix is checked
	// against ir.NodePolicy.Evaluate only.
	Want func(t *Topology) map[string]bool
}

func host(p *Pod) []netip.Prefix { return p.Prefixes() }

// Cases are the reference policies of the table. Pods a, b and c.
func Cases() []Case {
	tcp := func(from, to uint16) ir.PortRange { return ir.PortRange{Protocol: ir.TCP, From: from, To: to} }
	udp := func(from, to uint16) ir.PortRange { return ir.PortRange{Protocol: ir.UDP, From: from, To: to} }
	key := func(from, to *Pod, v6 bool, proto ir.Protocol, port uint16) string {
		return Probe{From: from, To: to, V6: v6, Proto: proto, Port: port}.String()
	}
	both := func(m map[string]bool, from, to *Pod, proto ir.Protocol, port uint16, ok bool) {
		m[key(from, to, false, proto, port)] = ok
		m[key(from, to, true, proto, port)] = ok
	}
	return []Case{
		{
			Name:   "no rules allows every flow",
			Policy: func(t *Topology) *ir.NodePolicy { return t.Policy() },
			Want: func(t *Topology) map[string]bool {
				m := map[string]bool{}
				both(m, t.Pods[0], t.Pods[1], ir.TCP, 80, true)
				both(m, t.Pods[1], t.Pods[2], ir.UDP, 53, true)
				return m
			},
		},
		{
			Name: "admin deny from a selector set drops only that peer",
			Policy: func(t *Topology) *ir.NodePolicy {
				return t.DenyAToB()
			},
			Want: func(t *Topology) map[string]bool {
				m := map[string]bool{}
				both(m, t.Pods[0], t.Pods[1], ir.TCP, 80, false)
				both(m, t.Pods[0], t.Pods[1], ir.UDP, 53, false)
				both(m, t.Pods[2], t.Pods[1], ir.TCP, 80, true)
				both(m, t.Pods[1], t.Pods[0], ir.TCP, 80, true) // b's egress is free
				return m
			},
		},
		{
			Name: "ipBlock with except carves out one pod",
			Policy: func(t *Topology) *ir.NodePolicy {
				a := t.Pods[0]
				ps := append(Except(netip.MustParsePrefix("10.244.0.0/24"), netip.PrefixFrom(a.IP4, 32)),
					Except(netip.MustParsePrefix("fd00:10:244::/64"), netip.PrefixFrom(a.IP6, 128))...)
				np := t.Policy(Set("cidr", ps...))
				np.Endpoints[1].Ingress.Tiers = []ir.Tier{
					Tier(ir.TierNetworkPolicy, Rule("NetworkPolicy/default/cidr/ingress/0", "cidr", false, ir.Accept)),
					Tier(ir.TierBaseline, Rule("Zone/web/baseline", "", false, ir.Deny)),
				}
				return np
			},
			Want: func(t *Topology) map[string]bool {
				m := map[string]bool{}
				both(m, t.Pods[0], t.Pods[1], ir.TCP, 80, false)
				both(m, t.Pods[2], t.Pods[1], ir.TCP, 80, true)
				return m
			},
		},
		{
			Name: "port ranges, single ports and protocols",
			Policy: func(t *Topology) *ir.NodePolicy {
				np := t.Policy()
				np.Endpoints[1].Ingress.Tiers = []ir.Tier{
					Tier(ir.TierNetworkPolicy,
						Rule("NetworkPolicy/default/range/ingress/0", "", false, ir.Accept, tcp(8000, 8100), udp(53, 53)),
						// a named port "https" resolved to 443
						Rule("NetworkPolicy/default/named/ingress/0", "", false, ir.Accept, tcp(443, 443)),
						Rule("NetworkPolicy/default/sctp/ingress/0", "", false, ir.Accept, ir.PortRange{Protocol: ir.SCTP, From: 9000, To: 9000})),
					Tier(ir.TierBaseline, Rule("Zone/web/baseline", "", false, ir.Deny)),
				}
				return np
			},
			Want: func(t *Topology) map[string]bool {
				m := map[string]bool{}
				a, b := t.Pods[0], t.Pods[1]
				both(m, a, b, ir.TCP, 8080, true)
				both(m, a, b, ir.TCP, 443, true)
				both(m, a, b, ir.TCP, 9000, false)
				both(m, a, b, ir.TCP, 80, false)
				both(m, a, b, ir.UDP, 53, true)
				both(m, a, b, ir.UDP, 5353, false)
				return m
			},
		},
		{
			Name: "pass skips the rest of the admin tier",
			Policy: func(t *Topology) *ir.NodePolicy {
				np := t.Policy(Set("sel-a", host(t.Pods[0])...))
				np.Endpoints[1].Ingress.Tiers = []ir.Tier{
					Tier(ir.TierAdmin,
						Rule("ZonePolicy/pass-a", "sel-a", false, ir.Pass),
						Rule("ZonePolicy/deny-all", "", false, ir.Deny)),
					Tier(ir.TierNetworkPolicy, Rule("NetworkPolicy/default/web/ingress/0", "sel-a", false, ir.Accept, tcp(80, 80))),
					Tier(ir.TierBaseline, Rule("Zone/web/baseline", "", false, ir.Deny)),
				}
				return np
			},
			Want: func(t *Topology) map[string]bool {
				m := map[string]bool{}
				a, b, c := t.Pods[0], t.Pods[1], t.Pods[2]
				both(m, a, b, ir.TCP, 80, true)
				both(m, a, b, ir.TCP, 443, false)
				both(m, c, b, ir.TCP, 80, false)
				return m
			},
		},
		{
			Name: "audit reports and goes on as if passed",
			Policy: func(t *Topology) *ir.NodePolicy {
				np := t.Policy(Set("sel-a", host(t.Pods[0])...))
				np.Endpoints[1].Ingress.Tiers = []ir.Tier{
					Tier(ir.TierAdmin,
						Rule("ZonePolicy/audit-a", "sel-a", false, ir.Audit),
						Rule("ZonePolicy/deny-all", "", false, ir.Deny)),
				}
				return np
			},
			Want: func(t *Topology) map[string]bool {
				m := map[string]bool{}
				a, b, c := t.Pods[0], t.Pods[1], t.Pods[2]
				both(m, a, b, ir.TCP, 80, true)
				both(m, c, b, ir.TCP, 80, false)
				return m
			},
		},
		{
			Name: "negated peer denies everyone outside the set",
			Policy: func(t *Topology) *ir.NodePolicy {
				np := t.Policy(Set("sel-a", host(t.Pods[0])...))
				np.Endpoints[1].Ingress.Tiers = []ir.Tier{Tier(ir.TierAdmin, Rule("ZonePolicy/only-a", "sel-a", true, ir.Deny))}
				return np
			},
			Want: func(t *Topology) map[string]bool {
				m := map[string]bool{}
				a, b, c := t.Pods[0], t.Pods[1], t.Pods[2]
				both(m, a, b, ir.TCP, 80, true)
				both(m, c, b, ir.TCP, 80, false)
				both(m, c, b, ir.UDP, 53, false)
				return m
			},
		},
		{
			Name: "egress deny is judged for the sending pod",
			Policy: func(t *Topology) *ir.NodePolicy {
				np := t.Policy(Set("sel-c", host(t.Pods[2])...))
				np.Endpoints[0].Egress.Tiers = []ir.Tier{Tier(ir.TierAdmin, Rule("ZonePolicy/a-not-c", "sel-c", false, ir.Deny, tcp(0, 0)))}
				return np
			},
			Want: func(t *Topology) map[string]bool {
				m := map[string]bool{}
				a, b, c := t.Pods[0], t.Pods[1], t.Pods[2]
				both(m, a, c, ir.TCP, 80, false)
				both(m, a, c, ir.UDP, 53, true) // the rule names TCP only
				both(m, a, b, ir.TCP, 80, true)
				both(m, c, a, ir.TCP, 80, true)
				return m
			},
		},
		{
			Name: "quarantine allows only the forensics list",
			Policy: func(t *Topology) *ir.NodePolicy {
				np := t.Policy(Set("forensics", host(t.Pods[2])...))
				ep := &np.Endpoints[0]
				ep.Quarantined = true
				ep.Ingress.Tiers = []ir.Tier{Tier(ir.TierQuarantine,
					Rule("Quarantine/incident/forensics", "forensics", false, ir.Accept, tcp(9000, 9000)),
					Rule("Quarantine/incident", "", false, ir.Deny))}
				ep.Egress.Tiers = []ir.Tier{Tier(ir.TierQuarantine, Rule("Quarantine/incident", "", false, ir.Deny))}
				return np
			},
			Want: func(t *Topology) map[string]bool {
				m := map[string]bool{}
				a, b, c := t.Pods[0], t.Pods[1], t.Pods[2]
				both(m, c, a, ir.TCP, 9000, true)
				both(m, c, a, ir.TCP, 80, false)
				both(m, b, a, ir.TCP, 9000, false)
				both(m, a, b, ir.TCP, 80, false)
				both(m, a, c, ir.UDP, 53, false)
				return m
			},
		},
		{
			Name: "a deny on either side wins over an accept on the other",
			Policy: func(t *Topology) *ir.NodePolicy {
				np := t.Policy(Set("sel-a", host(t.Pods[0])...), Set("sel-b", host(t.Pods[1])...))
				np.Endpoints[0].Egress.Tiers = []ir.Tier{Tier(ir.TierAdmin, Rule("ZonePolicy/a-to-b", "sel-b", false, ir.Accept))}
				np.Endpoints[1].Ingress.Tiers = []ir.Tier{Tier(ir.TierAdmin, Rule("ZonePolicy/b-not-a", "sel-a", false, ir.Deny, tcp(80, 80)))}
				return np
			},
			Want: func(t *Topology) map[string]bool {
				m := map[string]bool{}
				a, b := t.Pods[0], t.Pods[1]
				both(m, a, b, ir.TCP, 80, false)
				both(m, a, b, ir.TCP, 443, true)
				return m
			},
		},
	}
}

// Matrix returns every probe between distinct pods over both families,
// every TCP and UDP port.
func Matrix(t *Topology) []Probe {
	var ps []Probe
	for _, a := range t.Pods {
		for _, b := range t.Pods {
			if a == b {
				continue
			}
			for _, v6 := range []bool{false, true} {
				for _, port := range TCPPorts {
					ps = append(ps, Probe{From: a, To: b, V6: v6, Proto: ir.TCP, Port: port})
				}
				for _, port := range UDPPorts {
					ps = append(ps, Probe{From: a, To: b, V6: v6, Proto: ir.UDP, Port: port})
				}
			}
		}
	}
	return ps
}

// Check syncs np and compares the probe matrix with the oracle and with
// want.
func Check(t *testing.T, dp dataplane.Dataplane, topo *Topology, np *ir.NodePolicy, want map[string]bool) {
	t.Helper()
	if err := dp.Sync(context.Background(), np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	ps := Matrix(topo)
	got := RunAll(ps)
	allowed := 0
	for _, ok := range got {
		if ok {
			allowed++
		}
	}
	t.Logf("%d of %d probes allowed", allowed, len(ps))
	seen := map[string]bool{}
	for i, p := range ps {
		s := p.String()
		seen[s] = true
		if exp := Expected(np, p); got[i] != exp {
			t.Errorf("%s: datapath allowed=%v, Evaluate says %v", s, got[i], exp)
		}
		if w, ok := want[s]; ok && got[i] != w {
			t.Errorf("%s: datapath allowed=%v, want %v", s, got[i], w)
		}
	}
	for s := range want {
		if !seen[s] {
			t.Errorf("expectation %s names no probe of the matrix", s)
		}
	}
}

// Run runs the whole table against the backend built by newDP: the
// reference cases, a random cross-check against Evaluate, and revocation
// of established connections.
func Run(t *testing.T, newDP NewFunc) {
	topo := NewTopology(t, 3)
	dp := newDP(t, topo.NodePath)
	for _, c := range Cases() {
		t.Run(c.Name, func(t *testing.T) {
			Check(t, dp, topo, c.Policy(topo), c.Want(topo))
		})
	}
	t.Run("random policies agree with Evaluate", func(t *testing.T) {
		r := rand.New(rand.NewPCG(6, 7))
		for i := 0; i < 3; i++ {
			np := RandomPolicy(r, topo)
			t.Logf("round %d", i)
			Check(t, dp, topo, np, nil)
		}
	})
	t.Run("revocation cuts an established connection", func(t *testing.T) {
		Revocation(t, dp, topo, ir.TCP, true)
	})
	t.Run("without CutConnections an established connection survives", func(t *testing.T) {
		Revocation(t, dp, topo, ir.TCP, false)
	})
	// A UDP flow is its 5-tuple: later datagrams of a tracked tuple are
	// the same flow, whatever the policy says now, until it is cut.
	t.Run("revocation cuts a tracked UDP flow", func(t *testing.T) {
		Revocation(t, dp, topo, ir.UDP, true)
	})
	t.Run("without CutConnections a tracked UDP flow survives", func(t *testing.T) {
		Revocation(t, dp, topo, ir.UDP, false)
	})
}

// Revocation opens an allowed connection a -> b (TCP to 8080, or a
// connected UDP socket to 53), then syncs a policy that denies it. With
// cut, the connection must stop carrying data within 5 s; without, it must
// keep working.
func Revocation(t *testing.T, dp dataplane.Dataplane, topo *Topology, proto ir.Protocol, cut bool) {
	t.Helper()
	a, b := topo.Pods[0], topo.Pods[1]
	open := topo.Policy()
	if err := dp.Sync(context.Background(), open); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	for _, v6 := range []bool{false, true} {
		dst := b.IP4
		if v6 {
			dst = b.IP6
		}
		dialer, port := DialTCP, uint16(8080)
		if proto == ir.UDP {
			dialer, port = DialUDP, 53
		}
		c, err := dialer(a, dst, port)
		if err != nil {
			t.Fatalf("dialing %v: %v", dst, err)
		}
		defer c.Close()
		if err := Exchange(c, ProbeTimeout); err != nil {
			t.Fatalf("exchange before revocation (%v): %v", dst, err)
		}
		// A connection the new policy still allows must survive.
		var keep net.Conn
		if len(topo.Pods) > 2 {
			keep, err = dialer(topo.Pods[2], dst, port)
			if err != nil {
				t.Fatalf("dialing %v from %s: %v", dst, topo.Pods[2].Name, err)
			}
			defer keep.Close()
			if err := Exchange(keep, ProbeTimeout); err != nil {
				t.Fatalf("exchange before revocation (%v): %v", dst, err)
			}
		}
		deny := topo.DenyAToB()
		deny.Endpoint(topo.Pods[1].Name).CutConnections = cut
		start := time.Now()
		if err := dp.Sync(context.Background(), deny); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		err = Exchange(c, 5*time.Second)
		took := time.Since(start)
		switch {
		case cut && err == nil:
			t.Errorf("%v: established connection still works after revocation", dst)
		case !cut && err != nil:
			t.Errorf("%v: established connection broke without CutConnections: %v", dst, err)
		}
		if keep != nil {
			if err := Exchange(keep, ProbeTimeout); err != nil {
				t.Errorf("%v: a connection the new policy allows broke: %v", dst, err)
			}
		}
		if cut {
			t.Logf("%v: no reply on the revoked connection (gave up %v after the revoking Sync began)", dst, took.Round(time.Millisecond))
		}
		// New connections are denied either way.
		if (Probe{From: a, To: b, V6: v6, Proto: proto, Port: port}).Run() {
			t.Errorf("%v: new connection allowed after revocation", dst)
		}
		if err := dp.Sync(context.Background(), open); err != nil {
			t.Fatalf("Sync: %v", err)
		}
	}
}

// RandomPolicy builds a policy with random tiers and rules over the pods'
// host sets, a CIDR set and port ranges, deterministic for r.
func RandomPolicy(r *rand.Rand, topo *Topology) *ir.NodePolicy {
	var sets []ir.AddressSet
	var names []string
	for i, p := range topo.Pods {
		n := fmt.Sprintf("pod-%d", i)
		sets = append(sets, Set(n, p.Prefixes()...))
		names = append(names, n)
	}
	pair := append(append([]netip.Prefix(nil), topo.Pods[0].Prefixes()...), topo.Pods[2].Prefixes()...)
	sets = append(sets, Set("pair", pair...))
	names = append(names, "pair", "")
	np := topo.Policy(sets...)
	ports := []ir.PortRange{
		{Protocol: ir.TCP}, {Protocol: ir.UDP}, {Protocol: ir.TCP, From: 80, To: 443},
		{Protocol: ir.TCP, From: 8080, To: 8080}, {Protocol: ir.UDP, From: 53, To: 53},
		{Protocol: ir.TCP, From: 1000, To: 9000}, {Protocol: ir.SCTP, From: 80, To: 80},
	}
	actions := []ir.Action{ir.Accept, ir.Deny, ir.Pass, ir.Audit, ir.Deny}
	for i := range np.Endpoints {
		for _, c := range []*ir.Chain{&np.Endpoints[i].Ingress, &np.Endpoints[i].Egress} {
			for _, k := range []ir.TierKind{ir.TierAdmin, ir.TierNetworkPolicy, ir.TierBaseline} {
				n := r.IntN(3)
				if n == 0 {
					continue
				}
				tier := ir.Tier{Kind: k}
				for j := 0; j < n; j++ {
					rule := ir.Rule{
						ID:     fmt.Sprintf("rand/%s/%d/%d", k, i, j),
						Peer:   ir.PeerMatch{Set: names[r.IntN(len(names))], Negate: r.IntN(4) == 0},
						Action: actions[r.IntN(len(actions))],
					}
					for q := r.IntN(3); q > 0; q-- {
						rule.Ports = append(rule.Ports, ports[r.IntN(len(ports))])
					}
					tier.Rules = append(tier.Rules, rule)
				}
				c.Tiers = append(c.Tiers, tier)
			}
		}
	}
	return np
}

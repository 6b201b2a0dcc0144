//go:build linux

package ebpf

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// outsideHost adds a namespace behind an uplink of topo's node whose
// address (the far end of the link, 10.250.0.2) is no endpoint of the
// node, with a TCP line-echo server on port; it returns the address.
func outsideHost(t *testing.T, topo *dptest.Topology, port uint16) netip.Addr {
	t.Helper()
	sfx := randSuffix()
	ns, up := "bh-"+sfx+"-out", "o"+sfx
	if err := netns.Create(ns); err != nil {
		t.Fatalf("creating netns: %v", err)
	}
	t.Cleanup(func() {
		if err := netns.Delete(ns); err != nil {
			t.Errorf("deleting netns %s: %v", ns, err)
		}
	})
	addr := netip.MustParseAddr("10.250.0.2")
	for _, args := range [][]string{
		{"-n", topo.NodeNS, "link", "add", up, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"-n", topo.NodeNS, "addr", "add", "10.250.0.1/30", "dev", up},
		{"-n", topo.NodeNS, "link", "set", up, "up"},
		{"-n", ns, "addr", "add", addr.String() + "/30", "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "route", "add", "10.244.0.0/24", "via", "10.250.0.1"},
	} {
		run(t, "", "ip", args...)
	}
	var ln net.Listener
	if err := netns.Do(netns.Path(ns), func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, port).String())
		return err
	}); err != nil {
		t.Fatalf("listening in %s: %v", ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	go dptest.ServeTCP(ln)
	return addr
}

// TestNewFlowEventsOfUDPAndOutsidePeers: a new UDP flow between two local
// pods and a new TCP connection from a pod to an address that is no
// endpoint (behind an uplink) each produce exactly one new-flow event per
// chain that judged them, with the flow's 5-tuple and verdict, over TCX
// and over clsact, with the default allow and with a Learn-style policy
// (an admin-tier Audit rule for peers outside the pod's zone, then a
// NetworkPolicy rule that accepts them). An AUDIT record names the Audit
// rule and its tier, not the rule that finally accepted the flow, as the
// nftables backend's AUDIT record does.
func TestNewFlowEventsOfUDPAndOutsidePeers(t *testing.T) {
	for _, mode := range []AttachMode{AttachTCX, AttachClsact} {
		for _, learn := range []bool{false, true} {
			name := fmt.Sprintf("%s/default allow", mode)
			if learn {
				name = fmt.Sprintf("%s/audit outside the zone", mode)
			}
			t.Run(name, func(t *testing.T) { testNewFlowEvents(t, mode, learn) })
		}
	}
}

func testNewFlowEvents(t *testing.T, mode AttachMode, learn bool) {
	topo := dptest.NewTopology(t, 2)
	a, b := topo.Pods[0], topo.Pods[1]
	out := outsideHost(t, topo, 443)
	be := newBackend(t, topo.NodePath, Options{Attach: mode})
	// zone: both pods. With learn, each pod's egress and ingress audit
	// every peer outside the zone, as a Learn zone's boundary does.
	np := topo.Policy(dptest.Set("zone", append(a.Prefixes(), b.Prefixes()...)...))
	verdict, tier := VerdictForwarded, "baseline"
	if learn {
		for i := range np.Endpoints {
			for _, c := range []*ir.Chain{&np.Endpoints[i].Egress, &np.Endpoints[i].Ingress} {
				c.Tiers = []ir.Tier{
					dptest.Tier(ir.TierAdmin, dptest.Rule("Zone/boundary", "zone", true, ir.Audit)),
					dptest.Tier(ir.TierNetworkPolicy, dptest.Rule("NetworkPolicy/app/allow-out", "", false, ir.Accept)),
				}
			}
		}
		// Inside the zone the NetworkPolicy rule decides.
		tier = "networkpolicy"
	}
	if err := be.Sync(context.Background(), np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	fr, err := be.NewFlowReader()
	if err != nil {
		t.Fatalf("NewFlowReader: %v", err)
	}
	defer fr.Close()
	var mu sync.Mutex
	var recs []FlowRecord
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- fr.Run(ctx, func(r FlowRecord) {
			mu.Lock()
			recs = append(recs, r)
			mu.Unlock()
		})
	}()

	udp, err := dptest.DialUDP(a, b.IP4, 53)
	if err != nil {
		t.Fatalf("dialing a -> b udp/53: %v", err)
	}
	defer udp.Close()
	for i := 0; i < 3; i++ { // three packets (and replies) of one flow
		if err := dptest.Exchange(udp, dptest.ProbeTimeout); err != nil {
			t.Fatalf("a -> b udp/53, exchange %d: %v", i, err)
		}
	}
	tcp, err := dptest.DialTCP(a, out, 443)
	if err != nil {
		t.Fatalf("dialing a -> %s tcp/443: %v", out, err)
	}
	defer tcp.Close()
	for i := 0; i < 3; i++ {
		if err := dptest.Exchange(tcp, dptest.ProbeTimeout); err != nil {
			t.Fatalf("a -> %s tcp/443, exchange %d: %v", out, i, err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}

	type key struct {
		Verdict, Direction, Endpoint, Tier, Rule string
		Src, Dst                                 netip.AddrPort
		Proto                                    uint8
	}
	udpSrc := netip.MustParseAddrPort(udp.LocalAddr().String())
	tcpSrc := netip.MustParseAddrPort(tcp.LocalAddr().String())
	rule, outVerdict, outTier, outRule := "", verdict, tier, ""
	if learn {
		// The Audit rule marked the flow to the outside host.
		rule, outVerdict, outTier, outRule = "NetworkPolicy/app/allow-out", VerdictAudit, "admin", "Zone/boundary"
	}
	want := map[key]int{
		{verdict, "EGRESS", a.Name, tier, rule, udpSrc, netip.AddrPortFrom(b.IP4, 53), 17}:        1,
		{verdict, "INGRESS", b.Name, tier, rule, udpSrc, netip.AddrPortFrom(b.IP4, 53), 17}:       1,
		{outVerdict, "EGRESS", a.Name, outTier, outRule, tcpSrc, netip.AddrPortFrom(out, 443), 6}: 1,
	}
	got := map[key]int{}
	mu.Lock()
	defer mu.Unlock()
	for _, r := range recs {
		src, dst := netip.AddrPortFrom(r.Src, r.SrcPort), netip.AddrPortFrom(r.Dst, r.DstPort)
		if src != udpSrc && src != tcpSrc {
			continue // neighbour warm-up and the like
		}
		got[key{r.Verdict, r.Direction, r.Endpoint, r.Tier, r.RuleID, src, dst, r.Protocol}]++
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("flow events (-want +got):\n%s", d)
		for _, r := range recs {
			t.Logf("record: %+v", r)
		}
	}
}

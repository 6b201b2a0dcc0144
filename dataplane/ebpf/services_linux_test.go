//go:build linux

package ebpf

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

func run(t *testing.T, stdin string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// TestServiceEgressIsJudgedAfterDNAT builds a node with pods a, b and c
// and a remote namespace behind an uplink, and a test-owned nft table
// that DNATs two "ClusterIPs" the way kube-proxy does: 10.96.0.10 to b
// (a local backend) and 10.96.0.11 to 10.244.1.10 (a remote one). Egress
// rules name the backends, never the ClusterIPs: allowed → the
// connection through the ClusterIP works, denied → refused.
func TestServiceEgressIsJudgedAfterDNAT(t *testing.T) {
	topo := dptest.NewTopology(t, 3)
	a, b := topo.Pods[0], topo.Pods[1]
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not found")
	}
	// The remote node: a namespace behind the uplink, with a backend.
	sfx := randSuffix()
	remoteNS, up := "bh-"+sfx+"-remote", "u"+sfx
	if err := netns.Create(remoteNS); err != nil {
		t.Fatalf("creating netns: %v", err)
	}
	t.Cleanup(func() {
		if err := netns.Delete(remoteNS); err != nil {
			t.Errorf("deleting netns %s: %v", remoteNS, err)
		}
	})
	remote := netip.MustParseAddr("10.244.1.10")
	for _, args := range [][]string{
		{"-n", topo.NodeNS, "link", "add", up, "type", "veth", "peer", "name", "eth0", "netns", remoteNS},
		{"-n", topo.NodeNS, "addr", "add", "10.250.0.1/30", "dev", up},
		{"-n", topo.NodeNS, "link", "set", up, "up"},
		{"-n", topo.NodeNS, "route", "add", remote.String() + "/32", "via", "10.250.0.2"},
		{"-n", remoteNS, "addr", "add", "10.250.0.2/30", "dev", "eth0"},
		{"-n", remoteNS, "addr", "add", remote.String() + "/32", "dev", "lo"},
		{"-n", remoteNS, "link", "set", "eth0", "up"},
		{"-n", remoteNS, "link", "set", "lo", "up"},
		{"-n", remoteNS, "route", "add", "10.244.0.0/24", "via", "10.250.0.1"},
	} {
		run(t, "", "ip", args...)
	}
	var ln net.Listener
	if err := netns.Do(netns.Path(remoteNS), func() error {
		var err error
		ln, err = net.Listen("tcp", remote.String()+":80")
		return err
	}); err != nil {
		t.Fatalf("listening in %s: %v", remoteNS, err)
	}
	t.Cleanup(func() { ln.Close() })
	go dptest.ServeTCP(ln)
	// The service proxy: DNAT before routing, as kube-proxy does.
	table := "bh_svc_test_" + sfx
	run(t, fmt.Sprintf(`table ip %[1]s {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 10.96.0.10 tcp dport 80 dnat to %[2]s:8080
		ip daddr 10.96.0.10 udp dport 53 dnat to %[2]s:53
		ip daddr 10.96.0.11 tcp dport 80 dnat to %[3]s:80
	}
}
`, table, b.IP4, remote), "ip", "netns", "exec", topo.NodeNS, "nft", "-f", "-")
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "exec", topo.NodeNS, "nft", "delete", "table", "ip", table).Run()
	})

	be := newBackend(t, topo.NodePath, Options{
		ServiceCIDRs:   []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")},
		ServiceUplinks: []string{up},
	})
	svcLocal, svcRemote := netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("10.96.0.11")
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
	// policy: a's egress accepts the named backends only, or denies them
	// and accepts the rest.
	policy := func(allowBackends bool) *ir.NodePolicy {
		np := topo.Policy(dptest.Set("backends", netip.PrefixFrom(b.IP4, 32), netip.PrefixFrom(remote, 32)))
		if allowBackends {
			np.Endpoints[0].Egress.Tiers = []ir.Tier{dptest.Tier(ir.TierAdmin,
				dptest.Rule("ZonePolicy/to-backends", "backends", false, ir.Accept),
				dptest.Rule("ZonePolicy/deny-rest", "", false, ir.Deny))}
		} else {
			np.Endpoints[0].Egress.Tiers = []ir.Tier{dptest.Tier(ir.TierAdmin,
				dptest.Rule("ZonePolicy/not-backends", "backends", false, ir.Deny))}
		}
		np.Endpoints[0].CutConnections = true
		return np
	}
	for _, allow := range []bool{true, false} {
		if err := be.Sync(context.Background(), policy(allow)); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		for _, p := range []struct {
			what string
			err  error
		}{
			{"a -> local backend via ClusterIP tcp/80", dptest.ProbeTCP(a, svcLocal, 80)},
			{"a -> local backend via ClusterIP udp/53", dptest.ProbeUDP(a, svcLocal, 53)},
			{"a -> remote backend via ClusterIP tcp/80", dptest.ProbeTCP(a, svcRemote, 80)},
		} {
			if ok := p.err == nil; ok != allow {
				t.Errorf("egress to the backends allowed=%v: %s: got err %v", allow, p.what, p.err)
			}
		}
		// Direct connections are judged as before.
		if ok := dptest.ProbeTCP(a, b.IP4, 8080) == nil; ok != allow {
			t.Errorf("egress to the backends allowed=%v: a -> b direct: allowed=%v", allow, ok)
		}
	}

	// The flow events of a's Service connections name the backends.
	time.Sleep(300 * time.Millisecond)
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	type key struct {
		Verdict string
		Dst     netip.AddrPort
		Proto   uint8
	}
	got := map[key]bool{}
	for _, r := range recs {
		if r.Endpoint == a.Name && r.Direction == "EGRESS" {
			got[key{r.Verdict, netip.AddrPortFrom(r.Dst, r.DstPort), r.Protocol}] = true
		}
	}
	for _, w := range []key{
		{VerdictForwarded, netip.AddrPortFrom(b.IP4, 8080), 6},
		{VerdictForwarded, netip.AddrPortFrom(b.IP4, 53), 17},
		{VerdictForwarded, netip.AddrPortFrom(remote, 80), 6},
		{VerdictDropped, netip.AddrPortFrom(b.IP4, 8080), 6},
		{VerdictDropped, netip.AddrPortFrom(remote, 80), 6},
	} {
		if !got[w] {
			t.Errorf("no egress flow record of %s %+v", a.Name, w)
		}
	}
	for k := range got {
		if k.Dst.Addr() == svcLocal || k.Dst.Addr() == svcRemote {
			t.Errorf("egress flow record names a ClusterIP: %+v", k)
		}
	}

	// An established Service connection is cut when a change revokes its
	// backend, and the snapshot names the backend.
	if err := be.Sync(context.Background(), policy(true)); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	c, err := dptest.DialTCP(a, svcLocal, 80)
	if err != nil {
		t.Fatalf("dialing the ClusterIP: %v", err)
	}
	defer c.Close()
	if err := dptest.Exchange(c, dptest.ProbeTimeout); err != nil {
		t.Fatalf("exchange via the ClusterIP: %v", err)
	}
	snap, err := be.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	found := false
	for _, r := range snap {
		if r.Endpoint == a.Name && r.Direction == "EGRESS" && r.Dst == b.IP4 && r.DstPort == 8080 {
			found = true
		}
	}
	if !found {
		t.Errorf("snapshot has no egress record of a to the backend %v:8080: %+v", b.IP4, snap)
	}
	if err := be.Sync(context.Background(), policy(false)); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if err := dptest.Exchange(c, 3*dptest.ProbeTimeout); err == nil {
		t.Error("the Service connection still works after its backend was revoked")
	}
}

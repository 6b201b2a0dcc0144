//go:build linux

package ebpf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

func TestRestartKeepsEnforcementWithoutGap(t *testing.T) {
	topo := dptest.NewTopology(t, 3)
	a, b, c := topo.Pods[0], topo.Pods[1], topo.Pods[2]
	pinDir := filepath.Join(DefaultPinRoot, filepath.Base(topo.NodePath)+"-restart")
	t.Cleanup(func() { _ = os.RemoveAll(pinDir) }) // only matters if the test fails early
	first, err := New(Options{NetNSPath: topo.NodePath, PinDir: pinDir})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	np := topo.DenyAToB()
	if err := first.Sync(context.Background(), np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if err := dptest.ProbeTCP(a, b.IP4, 80); err == nil {
		t.Fatal("a -> b allowed before the restart")
	}

	// Load: allowed connections c -> b in a loop, and denied a -> b.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var allowedOK, allowedFail, deniedLeak atomic.Int64
	for _, v6 := range []bool{false, true} {
		dst := b.IP4
		if v6 {
			dst = b.IP6
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := dptest.ProbeTCP(c, dst, 8080); err != nil {
					allowedFail.Add(1)
					t.Logf("allowed connection refused during restart: %v", err)
				} else {
					allowedOK.Add(1)
				}
			}
		}()
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if dptest.ProbeTCP(a, dst, 80) == nil {
					deniedLeak.Add(1)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	for i := 0; i < 3; i++ {
		if err := first.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // no agent at all for a while
		var next *Backend
		if i == 2 {
			next = newBackend(t, topo.NodePath, Options{PinDir: pinDir})
		} else if next, err = New(Options{NetNSPath: topo.NodePath, PinDir: pinDir}); err != nil {
			t.Fatalf("New after restart %d: %v", i, err)
		}
		if err := next.Sync(context.Background(), np); err != nil {
			t.Fatalf("Sync after restart %d: %v", i, err)
		}
		if st := next.Stats(); st.NoOps != 1 {
			t.Errorf("restart %d: first Sync of the same policy wrote %d entries, want none", i, st.LastWrites)
		}
		first = next
		time.Sleep(200 * time.Millisecond)
	}
	stop()
	wg.Wait()
	t.Logf("during 3 restarts: %d allowed connections completed, %d refused; %d denied connections got through", allowedOK.Load(), allowedFail.Load(), deniedLeak.Load())
	if allowedFail.Load() != 0 {
		t.Errorf("%d allowed connections were refused across restarts", allowedFail.Load())
	}
	if allowedOK.Load() == 0 {
		t.Error("no allowed connection completed: the load did not run")
	}
	if deniedLeak.Load() != 0 {
		t.Errorf("%d denied connections got through across restarts", deniedLeak.Load())
	}
	if n := dptest.TCXPrograms(t, topo.NodePath, b.HostIf); n != 2 {
		t.Errorf("%d programs attached to %s, want 2 (ingress and egress)", n, b.HostIf)
	}
}

func TestUninstallRemovesLinksAndPins(t *testing.T) {
	topo := dptest.NewTopology(t, 2)
	a, b := topo.Pods[0], topo.Pods[1]
	be := newBackend(t, topo.NodePath, Options{})
	np := topo.DenyAToB()
	if err := be.Sync(context.Background(), np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	for _, p := range topo.Pods {
		if n := dptest.TCXPrograms(t, topo.NodePath, p.HostIf); n != 2 {
			t.Fatalf("%d programs attached to %s, want 2", n, p.HostIf)
		}
	}
	if err := dptest.ProbeTCP(a, b.IP4, 80); err == nil {
		t.Fatal("a -> b allowed while denied")
	}
	pins, _ := filepath.Glob(filepath.Join(be.PinDir(), "*", "*"))
	if len(pins) == 0 {
		t.Fatal("no pins under the pin directory")
	}
	if err := be.Uninstall(context.Background()); err != nil {
		t.Fatalf("Uninstall: %v", err)
	}
	for _, p := range topo.Pods {
		if n := dptest.TCXPrograms(t, topo.NodePath, p.HostIf); n != 0 {
			t.Errorf("%d programs still attached to %s after Uninstall", n, p.HostIf)
		}
	}
	if _, err := os.Stat(be.PinDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory still there after Uninstall: %v", err)
	}
	if err := dptest.ProbeTCP(a, b.IP4, 80); err != nil {
		t.Errorf("a -> b still denied after Uninstall: %v", err)
	}
	if err := be.Sync(context.Background(), np); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync after Uninstall: got %v, want ErrClosed", err)
	}
}

func TestEndpointRemovedFromPolicyIsDetached(t *testing.T) {
	topo := dptest.NewTopology(t, 2)
	be := newBackend(t, topo.NodePath, Options{})
	np := topo.Policy()
	if err := be.Sync(context.Background(), np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	np.Endpoints = np.Endpoints[:1]
	if err := be.Sync(context.Background(), np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if n := dptest.TCXPrograms(t, topo.NodePath, topo.Pods[0].HostIf); n != 2 {
		t.Errorf("%d programs on the kept endpoint's interface, want 2", n)
	}
	if n := dptest.TCXPrograms(t, topo.NodePath, topo.Pods[1].HostIf); n != 0 {
		t.Errorf("%d programs on the removed endpoint's interface, want 0", n)
	}
}

func TestUnknownEndpointIsReportedAndOthersEnforced(t *testing.T) {
	topo := dptest.NewTopology(t, 2)
	a, b := topo.Pods[0], topo.Pods[1]
	be := newBackend(t, topo.NodePath, Options{})
	np := topo.DenyAToB()
	np.Endpoints = append(np.Endpoints, ir.Endpoint{Name: "default/pod-z"})
	np.Endpoints = append(np.Endpoints, ir.Endpoint{Name: "default/pod-zz", IPs: []netip.Addr{netip.MustParseAddr("10.244.9.9")}})
	err := be.Sync(context.Background(), np)
	if !errors.Is(err, ErrEndpointNotFound) {
		t.Fatalf("Sync: got %v, want ErrEndpointNotFound", err)
	}
	for _, want := range []string{`"default/pod-z" has no IPs`, `"default/pod-zz": no route to 10.244.9.9`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if err := dptest.ProbeTCP(a, b.IP4, 80); err == nil {
		t.Error("a -> b allowed although the resolvable endpoint's policy denies it")
	}
}

func TestBadPolicyIsRefusedNamingTheRule(t *testing.T) {
	topo := dptest.NewTopology(t, 1)
	be := newBackend(t, topo.NodePath, Options{})
	np := topo.Policy()
	np.Endpoints[0].Ingress.Tiers = []ir.Tier{dptest.Tier(ir.TierAdmin,
		dptest.Rule("ZonePolicy/icmp", "", false, ir.Accept, ir.PortRange{Protocol: 1}),
		dptest.Rule("ZonePolicy/reversed", "", false, ir.Accept, ir.PortRange{Protocol: ir.TCP, From: 90, To: 80}))}
	err := be.Sync(context.Background(), np)
	if err == nil {
		t.Fatal("Sync accepted a policy the backend cannot enforce")
	}
	for _, want := range []string{`rule "ZonePolicy/icmp": protocol proto(1)`, `rule "ZonePolicy/reversed": port range 90-80 is reversed`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestFlowEvents(t *testing.T) {
	topo := dptest.NewTopology(t, 3)
	a, b, c := topo.Pods[0], topo.Pods[1], topo.Pods[2]
	be := newBackend(t, topo.NodePath, Options{})
	np := topo.Policy(dptest.Set("sel-a", a.Prefixes()...), dptest.Set("sel-c", c.Prefixes()...))
	np.Endpoints[1].Ingress.Tiers = []ir.Tier{dptest.Tier(ir.TierAdmin,
		dptest.Rule("ZonePolicy/deny-a", "sel-a", false, ir.Deny),
		dptest.Rule("ZonePolicy/audit-c", "sel-c", false, ir.Audit))}
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
	if err := dptest.ProbeTCP(a, b.IP4, 80); err == nil {
		t.Error("a -> b allowed while denied")
	}
	if err := dptest.ProbeTCP(c, b.IP4, 443); err != nil {
		t.Errorf("c -> b (audited) refused: %v", err)
	}
	if err := dptest.ProbeUDP(b, a.IP6, 53); err != nil {
		t.Errorf("b -> a refused: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	type key struct {
		Verdict, Direction, Endpoint, RuleID, Tier string
		Src, Dst                                   string
		Proto                                      uint8
		DstPort                                    uint16
	}
	got := map[key]int{}
	for _, r := range recs {
		got[key{r.Verdict, r.Direction, r.Endpoint, r.RuleID, r.Tier, r.Src.String(), r.Dst.String(), r.Protocol, r.DstPort}]++
	}
	wants := []key{
		{VerdictDropped, "INGRESS", b.Name, "ZonePolicy/deny-a", "admin", a.IP4.String(), b.IP4.String(), 6, 80},
		{VerdictForwarded, "EGRESS", c.Name, "", "baseline", c.IP4.String(), b.IP4.String(), 6, 443},
		// An AUDIT record names the Audit rule, as the nftables backend's does.
		{VerdictAudit, "INGRESS", b.Name, "ZonePolicy/audit-c", "admin", c.IP4.String(), b.IP4.String(), 6, 443},
		{VerdictForwarded, "EGRESS", b.Name, "", "baseline", b.IP6.String(), a.IP6.String(), 17, 53},
		{VerdictForwarded, "INGRESS", a.Name, "", "baseline", b.IP6.String(), a.IP6.String(), 17, 53},
	}
	for _, w := range wants {
		if got[w] == 0 {
			t.Errorf("no flow record %+v", w)
		}
	}
	// New flows are reported once, not per packet; drops at most once a
	// second per tuple.
	for k, n := range got {
		if n > 1 && k.Verdict != VerdictDropped {
			t.Errorf("flow record %+v reported %d times", k, n)
		}
	}
	if t.Failed() {
		for _, r := range recs {
			t.Logf("record: %s", fmt.Sprintf("%+v", r))
		}
	}
}

func TestSnapshotReportsOpenConnections(t *testing.T) {
	topo := dptest.NewTopology(t, 3)
	a, b, c := topo.Pods[0], topo.Pods[1], topo.Pods[2]
	be := newBackend(t, topo.NodePath, Options{})
	np := topo.Policy(dptest.Set("sel-a", a.Prefixes()...), dptest.Set("sel-c", c.Prefixes()...))
	np.Endpoints[1].Ingress.Tiers = []ir.Tier{dptest.Tier(ir.TierAdmin,
		dptest.Rule("ZonePolicy/deny-a", "sel-a", false, ir.Deny),
		dptest.Rule("ZonePolicy/audit-c", "sel-c", false, ir.Audit))}
	if err := be.Sync(context.Background(), np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	open, err := dptest.DialTCP(c, b.IP4, 443)
	if err != nil {
		t.Fatalf("dialing c -> b: %v", err)
	}
	defer open.Close()
	if err := dptest.Exchange(open, dptest.ProbeTimeout); err != nil {
		t.Fatalf("c -> b: %v", err)
	}
	udp, err := dptest.DialUDP(b, a.IP6, 53)
	if err != nil {
		t.Fatalf("dialing b -> a: %v", err)
	}
	defer udp.Close()
	if err := dptest.Exchange(udp, dptest.ProbeTimeout); err != nil {
		t.Fatalf("b -> a: %v", err)
	}
	// Closed and denied connections are not in the snapshot.
	if err := dptest.ProbeTCP(c, b.IP4, 80); err != nil {
		t.Fatalf("c -> b:80: %v", err)
	}
	if err := dptest.ProbeTCP(a, b.IP4, 80); err == nil {
		t.Fatal("a -> b allowed while denied")
	}
	time.Sleep(200 * time.Millisecond)
	recs, err := be.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	type key struct {
		Verdict, Direction, Endpoint, Tier, RuleID string
		Src, Dst                                   netip.AddrPort
		Proto                                      uint8
	}
	got := map[key]int{}
	for _, r := range recs {
		if !r.Existing {
			t.Errorf("record %+v: Existing not set", r)
		}
		if r.Packets == 0 || r.Bytes == 0 {
			t.Errorf("record %+v: no packet or byte counts", r)
		}
		got[key{r.Verdict, r.Direction, r.Endpoint, r.Tier, r.RuleID, netip.AddrPortFrom(r.Src, r.SrcPort), netip.AddrPortFrom(r.Dst, r.DstPort), r.Protocol}]++
	}
	tcpSrc := netip.MustParseAddrPort(open.LocalAddr().String())
	udpSrc := netip.MustParseAddrPort(udp.LocalAddr().String())
	want := map[key]int{
		{VerdictForwarded, "EGRESS", c.Name, "baseline", "", tcpSrc, netip.AddrPortFrom(b.IP4, 443), 6}:             1,
		{VerdictAudit, "INGRESS", b.Name, "admin", "ZonePolicy/audit-c", tcpSrc, netip.AddrPortFrom(b.IP4, 443), 6}: 1,
		{VerdictForwarded, "EGRESS", b.Name, "baseline", "", udpSrc, netip.AddrPortFrom(a.IP6, 53), 17}:             1,
		{VerdictForwarded, "INGRESS", a.Name, "baseline", "", udpSrc, netip.AddrPortFrom(a.IP6, 53), 17}:            1,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("snapshot (-want +got):\n%s", d)
	}
}

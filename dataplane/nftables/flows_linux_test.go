//go:build linux

package nftables

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/mdlayher/netlink"
	ct "github.com/ti-mo/conntrack"

	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

func TestFlowReaderReportsDropsAndAudits(t *testing.T) {
	topo := dptest.NewTopology(t, 3)
	a, b, c := topo.Pods[0], topo.Pods[1], topo.Pods[2]
	be := newBackend(t, topo.NodePath, Options{NFLogGroup: 21})
	np := topo.Policy(dptest.Set("sel-a", a.Prefixes()...), dptest.Set("sel-c", c.Prefixes()...))
	np.Endpoints[1].Ingress.Tiers = []ir.Tier{dptest.Tier(ir.TierAdmin,
		dptest.Rule("ZonePolicy/deny-a-80", "sel-a", false, ir.Deny, ir.PortRange{Protocol: ir.TCP, From: 80, To: 80}),
		dptest.Rule("ZonePolicy/audit-c", "sel-c", false, ir.Audit))}
	np.Endpoints[0].Egress.Tiers = []ir.Tier{dptest.Tier(ir.TierAdmin,
		ir.Rule{ID: "ZonePolicy/log-a-to-c", Peer: ir.PeerMatch{Set: "sel-c"}, Action: ir.Accept, Log: true})}
	ctx := context.Background()
	if err := be.Sync(ctx, np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	r, err := NewFlowReader(topo.NodePath, 21, be.RuleID)
	if err != nil {
		t.Fatalf("NewFlowReader: %v", err)
	}
	defer r.Close()
	var mu sync.Mutex
	var recs []FlowRecord
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- r.Run(rctx, func(f FlowRecord) { mu.Lock(); recs = append(recs, f); mu.Unlock() })
	}()

	if err := dptest.ProbeTCP(a, b.IP4, 80); err == nil {
		t.Error("a -> b:80 was allowed")
	}
	if err := dptest.ProbeUDP(c, b.IP6, 53); err != nil {
		t.Errorf("c -> b udp/53 (audited) failed: %v", err)
	}
	if err := dptest.ProbeTCP(a, c.IP4, 443); err != nil {
		t.Errorf("a -> c:443 (logged accept) failed: %v", err)
	}
	want := []FlowRecord{
		{Verdict: VerdictDropped, Direction: "INGRESS", Src: a.IP4, Dst: b.IP4, Protocol: 6, DstPort: 80, RuleID: "ZonePolicy/deny-a-80"},
		{Verdict: VerdictAudit, Direction: "INGRESS", Src: c.IP6, Dst: b.IP6, Protocol: 17, DstPort: 53, RuleID: "ZonePolicy/audit-c"},
		{Verdict: VerdictForwarded, Direction: "EGRESS", Src: a.IP4, Dst: c.IP4, Protocol: 6, DstPort: 443, RuleID: "ZonePolicy/log-a-to-c"},
	}
	ignore := cmpopts.IgnoreFields(FlowRecord{}, "Time", "SrcPort", "RuleNumber")
	deadline := time.Now().Add(5 * time.Second)
	var got []FlowRecord
	for {
		mu.Lock()
		got = dedupe(recs)
		mu.Unlock()
		if len(got) >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if diff := cmp.Diff(want, got, ignore, cmp.Comparer(func(x, y interface{ String() string }) bool { return x.String() == y.String() })); diff != "" {
		t.Errorf("flow records (-want +got):\n%s", diff)
	}
	for _, g := range got {
		if g.Time.IsZero() || time.Since(g.Time) > time.Minute {
			t.Errorf("record time %v is not recent", g.Time)
		}
	}

	// The audited connection carries the audit mark in conntrack. Only
	// the probed tuples are checked: the topology's warm-up connections ran
	// before the table existed, and a late packet of one of them can be
	// tracked mid-stream while the first commit registers the conntrack
	// hooks, before any chain of the table judges it.
	marked := 0
	h, err := netns.Open(topo.NodePath)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	cc, err := ct.Dial(&netlink.Config{NetNS: int(h)})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	flows, err := cc.Dump(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range flows {
		o := f.TupleOrig
		if o.IP.SourceAddress == c.IP6 && o.IP.DestinationAddress == b.IP6 && o.Proto.Protocol == 17 && o.Proto.DestinationPort == 53 {
			if f.Mark&AuditMark != AuditMark {
				t.Errorf("audited connection has mark %#x, want bit %#x", f.Mark, AuditMark)
			}
			marked++
		}
		if o.IP.SourceAddress == a.IP4 && o.IP.DestinationAddress == c.IP4 && o.Proto.Protocol == 6 && o.Proto.DestinationPort == 443 && f.Mark&AuditMark != 0 {
			t.Errorf("unaudited connection has the audit mark")
		}
	}
	if marked == 0 {
		t.Error("no conntrack entry for the audited connection")
	}
}

// dedupe keeps the first record of each connection (retransmitted SYNs
// log again), in arrival order.
func dedupe(rs []FlowRecord) []FlowRecord {
	seen := map[string]bool{}
	var out []FlowRecord
	for _, r := range rs {
		k := r.Src.String() + r.Dst.String() + r.Verdict + string(rune(r.DstPort))
		if !seen[k] {
			seen[k] = true
			out = append(out, r)
		}
	}
	return out
}

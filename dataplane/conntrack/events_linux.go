//go:build linux

package conntrack

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/mdlayher/netlink"
	ct "github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// Watch reports accepted connections of the namespace at nsPath (current
// when empty) as FORWARDED flow records: first, when snapshot is set,
// every entry that exists already (Existing set; these are the
// long-lived connections opened before observation started), then one
// record per conntrack NEW event until ctx ends. The kernel emits NEW only
// for connections that passed every hook, so dropped packets never show
// up here. Direction is EGRESS when local reports the original source as
// a local address, INGRESS otherwise; entries where neither end is local
// are skipped (local nil: all are reported as EGRESS). Packets and Bytes
// are set from snapshot entries when the namespace has
// net.netfilter.nf_conntrack_acct on.
func Watch(ctx context.Context, nsPath string, snapshot bool, local func(netip.Addr) bool, fn func(dataplane.FlowRecord)) error {
	cfg := &netlink.Config{}
	if nsPath != "" {
		h, err := netns.Open(nsPath)
		if err != nil {
			return fmt.Errorf("watching conntrack: %w", err)
		}
		defer h.Close()
		cfg.NetNS = int(h)
	}
	lc, err := ct.Dial(cfg)
	if err != nil {
		return fmt.Errorf("opening conntrack netlink for events: %w", err)
	}
	defer lc.Close()
	_ = lc.SetReadBuffer(4 << 20)
	events := make(chan ct.Event, 1024)
	errs, err := lc.Listen(events, 1, []netfilter.NetlinkGroup{netfilter.GroupCTNew})
	if err != nil {
		return fmt.Errorf("joining conntrack NEW events: %w", err)
	}
	if snapshot {
		dc, err := ct.Dial(cfg)
		if err != nil {
			return fmt.Errorf("opening conntrack netlink for the snapshot: %w", err)
		}
		flows, err := dc.Dump(nil)
		dc.Close()
		if err != nil {
			return fmt.Errorf("dumping conntrack: %w", err)
		}
		now := time.Now()
		for i := range flows {
			if r, ok := record(&flows[i], local, now); ok {
				r.Existing = true
				r.Packets = flows[i].CountersOrig.Packets + flows[i].CountersReply.Packets
				r.Bytes = flows[i].CountersOrig.Bytes + flows[i].CountersReply.Bytes
				fn(r)
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			if err != nil {
				return fmt.Errorf("reading conntrack events: %w", err)
			}
		case ev := <-events:
			if ev.Type != ct.EventNew || ev.Flow == nil {
				continue
			}
			if r, ok := record(ev.Flow, local, time.Now()); ok {
				fn(r)
			}
		}
	}
}

func record(f *ct.Flow, local func(netip.Addr) bool, now time.Time) (dataplane.FlowRecord, bool) {
	t := f.TupleOrig
	src, dst := t.IP.SourceAddress.Unmap(), t.IP.DestinationAddress.Unmap()
	if !src.IsValid() || !dst.IsValid() {
		return dataplane.FlowRecord{}, false
	}
	r := dataplane.FlowRecord{
		Time: now, Verdict: dataplane.VerdictForwarded, Direction: dataplane.DirectionEgress,
		Src: src, Dst: dst, Protocol: t.Proto.Protocol,
	}
	switch r.Protocol {
	case 6, 17, 132, 136:
		r.SrcPort, r.DstPort = t.Proto.SourcePort, t.Proto.DestinationPort
	}
	if local != nil {
		switch {
		case local(src):
		case local(dst):
			r.Direction = dataplane.DirectionIngress
		default:
			return r, false
		}
	}
	return r, true
}

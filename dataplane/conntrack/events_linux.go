//go:build linux

package conntrack

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/mdlayher/netlink"
	ct "github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// Watch reports accepted connections of the namespace at nsPath (current
// when empty) as FORWARDED flow records: first, when snapshot is set,
// every entry that exists already (Existing set; these are the
// long-lived connections opened before observation started), then one
// record per conntrack NEW event and one per DESTROY event (Closed set)
// until ctx ends. The kernel emits NEW only for connections that passed
// every hook, so dropped packets never show up here; DESTROY of a
// connection that was never confirmed is not emitted either. Direction is
// EGRESS when local reports the original source as a local address,
// INGRESS otherwise; entries where neither end is local are skipped (local
// nil: all are reported as EGRESS). Packets and Bytes (both directions;
// ReplyPackets and ReplyBytes the reply direction) are set on snapshot
// entries, with the counters so far, and on Closed records, with the
// final counters, when the namespace has net.netfilter.nf_conntrack_acct
// on (EnableAccounting); NEW records carry none.
//
// When the kernel drops events because the reader fell behind (ENOBUFS on
// the event socket), Watch does not end: it joins the events again and
// dumps the table, reporting every connection still open that it has not
// reported yet (as Existing). Connections that opened and closed inside
// the gap are lost, and so are the DESTROY records (final counters) of
// connections that closed inside it.
func Watch(ctx context.Context, nsPath string, snapshot bool, local func(netip.Addr) bool, fn func(dataplane.FlowRecord)) error {
	return watch(ctx, nsPath, snapshot, local, fn, watchOptions{readBuffer: 4 << 20, queue: 1024})
}

type watchOptions struct {
	readBuffer int
	queue      int // events decoded ahead of fn
	// overflowed, when set, is called after each recovered overflow.
	overflowed func()
}

// maxSeen bounds the conntrack IDs remembered to skip connections already
// reported when the table is dumped after an overflow.
const maxSeen = 1 << 18

func watch(ctx context.Context, nsPath string, snapshot bool, local func(netip.Addr) bool, fn func(dataplane.FlowRecord), o watchOptions) error {
	cfg := &netlink.Config{}
	if nsPath != "" {
		h, err := netns.Open(nsPath)
		if err != nil {
			return fmt.Errorf("watching conntrack: %w", err)
		}
		defer h.Close()
		cfg.NetNS = int(h)
	}
	seen := map[uint32]struct{}{}
	report := func(f *ct.Flow, kind recordKind, now time.Time) {
		if kind == kindExisting {
			if _, ok := seen[f.ID]; ok {
				return
			}
		}
		r, ok := record(f, local, now)
		if !ok {
			return
		}
		switch kind {
		case kindClosed:
			delete(seen, f.ID)
			r.Closed = true
			setCounters(&r, f)
		case kindExisting:
			r.Existing = true
			setCounters(&r, f)
			fallthrough
		default:
			if len(seen) >= maxSeen {
				clear(seen)
			}
			seen[f.ID] = struct{}{}
		}
		fn(r)
	}
	dump := snapshot
	for {
		err := watchOnce(ctx, cfg, dump, o, report)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, unix.ENOBUFS) {
			return err
		}
		if o.overflowed != nil {
			o.overflowed()
		}
		dump = true // recover what is still open
	}
}

type recordKind uint8

const (
	kindNew recordKind = iota
	kindExisting
	kindClosed
)

func setCounters(r *dataplane.FlowRecord, f *ct.Flow) {
	r.Packets = f.CountersOrig.Packets + f.CountersReply.Packets
	r.Bytes = f.CountersOrig.Bytes + f.CountersReply.Bytes
	r.ReplyPackets = f.CountersReply.Packets
	r.ReplyBytes = f.CountersReply.Bytes
}

// watchOnce joins the NEW and DESTROY events, dumps the table when dump is set, and
// reports events until ctx ends (nil) or the event socket fails.
func watchOnce(ctx context.Context, cfg *netlink.Config, dump bool, o watchOptions, report func(*ct.Flow, recordKind, time.Time)) error {
	lc, err := ct.Dial(cfg)
	if err != nil {
		return fmt.Errorf("opening conntrack netlink for events: %w", err)
	}
	_ = lc.SetReadBuffer(o.readBuffer)
	events := make(chan ct.Event, o.queue)
	errs, err := lc.Listen(events, 1, []netfilter.NetlinkGroup{netfilter.GroupCTNew, netfilter.GroupCTDestroy})
	if err != nil {
		lc.Close()
		return fmt.Errorf("joining conntrack NEW and DESTROY events: %w", err)
	}
	defer func() {
		// Close waits for the event worker, which may be blocked handing
		// over an event or an error: keep draining until it is gone.
		stop := make(chan struct{})
		go func() {
			for {
				select {
				case <-events:
				case <-errs:
				case <-stop:
					return
				}
			}
		}()
		lc.Close()
		close(stop)
	}()
	if dump {
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
			report(&flows[i], kindExisting, now)
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
			if ev.Flow == nil {
				continue
			}
			switch ev.Type {
			case ct.EventNew:
				report(ev.Flow, kindNew, time.Now())
			case ct.EventDestroy:
				report(ev.Flow, kindClosed, time.Now())
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

//go:build linux

package ebpf

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/bpf"
	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// Verdicts of flow records, as dataplane defines them.
const (
	VerdictDropped   = dataplane.VerdictDropped
	VerdictAudit     = dataplane.VerdictAudit
	VerdictForwarded = dataplane.VerdictForwarded
)

// event kinds and flags, as EV_* and EVF_* in bpf/policy.c.
const (
	evNew     = 1
	evDrop    = 2
	evAudited = 1
	evV6      = 2
)

// FlowRecord is the shared flow record. The ring buffer yields one per
// datapath event: a new connection (FORWARDED, or AUDIT when an Audit rule
// marked it) or a dropped packet (at most one per 5-tuple and second),
// with Endpoint, Tier and Identity set.
type FlowRecord = dataplane.FlowRecord

// FlowReader reads the backend's flow-event ring buffer. Only one reader
// should run per pin directory: each event is delivered once.
type FlowReader struct {
	b  *Backend
	rd *ringbuf.Reader
}

// NewFlowReader opens the ring buffer of b's maps.
func (b *Backend) NewFlowReader() (*FlowReader, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	rd, err := ringbuf.NewReader(b.objs.Events)
	if err != nil {
		return nil, fmt.Errorf("opening flow ring buffer: %w", err)
	}
	return &FlowReader{b: b, rd: rd}, nil
}

// Close closes the reader.
func (r *FlowReader) Close() error { return r.rd.Close() }

// Run decodes events and calls fn for each until ctx ends or the reader
// is closed.
func (r *FlowReader) Run(ctx context.Context, fn func(FlowRecord)) error {
	var rec ringbuf.Record
	for {
		if ctx.Err() != nil {
			return nil
		}
		r.rd.SetDeadline(time.Now().Add(200 * time.Millisecond))
		if err := r.rd.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			return fmt.Errorf("reading flow ring buffer: %w", err)
		}
		fr, err := r.b.decode(rec.RawSample)
		if err != nil {
			continue
		}
		fn(fr)
	}
}

func (b *Backend) decode(raw []byte) (FlowRecord, error) {
	var ev bpf.PolicyEvent
	if len(raw) < int(unsafe.Sizeof(ev)) {
		return FlowRecord{}, fmt.Errorf("short event (%d bytes)", len(raw))
	}
	if _, err := binary.Decode(raw, binary.NativeEndian, &ev); err != nil {
		return FlowRecord{}, fmt.Errorf("decoding event: %w", err)
	}
	fr := FlowRecord{
		Time:       monoToTime(ev.Ts),
		Protocol:   ev.Proto,
		SrcPort:    ntohs(ev.Sport),
		DstPort:    ntohs(ev.Dport),
		RuleNumber: ev.Rule,
		Tier:       ir.TierKind(ev.Tier).String(),
		Identity:   ev.Identity,
		Src:        netip.AddrFrom16(ev.Src),
		Dst:        netip.AddrFrom16(ev.Dst),
	}
	if ev.Flags&evV6 == 0 {
		fr.Src, fr.Dst = fr.Src.Unmap(), fr.Dst.Unmap()
	}
	switch {
	case ev.Kind == evDrop:
		fr.Verdict = VerdictDropped
	case ev.Flags&evAudited != 0:
		fr.Verdict = VerdictAudit
	default:
		fr.Verdict = VerdictForwarded
	}
	fr.Direction = "INGRESS"
	if ir.Direction(ev.Dir) == ir.Egress {
		fr.Direction = "EGRESS"
	}
	b.mu.Lock()
	if ev.Rule != 0 {
		fr.RuleID = b.alloc.ruleIDs[ev.Rule]
	}
	fr.Endpoint = b.endpoints[ev.Ifindex]
	b.mu.Unlock()
	return fr, nil
}

// monoToTime converts a bpf_ktime_get_ns timestamp to wall-clock time.
func monoToTime(ns uint64) time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return time.Now()
	}
	return time.Now().Add(-time.Duration(uint64(ts.Nano()) - ns))
}

// ct_val.flags, as CT_* in bpf/policy.c.
const (
	ctAudited = 1
	ctClosing = 2
	ctReplied = 4
)

// Connection-tracking idle timeouts, as CT_TIMEOUT_* in bpf/policy.c.
const (
	ctTimeoutTCP   = 6 * time.Hour
	ctTimeoutOther = 120 * time.Second
)

// Snapshot reports the connections the datapath tracks now, one record
// per tracked entry, with Existing set: the long-lived connections that
// were open before a flow reader started (the ring buffer reported them
// when they began, perhaps to nobody). Closing and idle-expired entries,
// and TCP entries that never saw a reply, are left out. A connection between two local endpoints has an entry on
// each endpoint's interface, as it has an event on each. Time is the
// connection's first packet; Packets and Bytes count the packets that
// passed on the entry, both directions. A Service connection's egress
// record names the backend (after DNAT) as its destination.
func (b *Backend) Snapshot() ([]FlowRecord, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return nil, fmt.Errorf("reading the monotonic clock: %w", err)
	}
	now := uint64(ts.Nano())
	var out []FlowRecord
	var k bpf.PolicyCtKey
	var v bpf.PolicyCtVal
	it := b.objs.Ct.Iterate()
	for it.Next(&k, &v) {
		timeout := ctTimeoutOther
		if k.Proto == 6 {
			timeout = ctTimeoutTCP
		}
		if v.Flags&ctClosing != 0 || now-v.Seen >= uint64(timeout) {
			continue
		}
		if k.Proto == 6 && v.Flags&ctReplied == 0 {
			continue // a SYN that nobody answered (or a drop further on)
		}
		local, remote := netip.AddrFrom16(k.Local), netip.AddrFrom16(k.Remote)
		if local.Is4In6() && remote.Is4In6() {
			local, remote = local.Unmap(), remote.Unmap()
		}
		fr := FlowRecord{
			Time:       monoToTime(v.Created),
			Verdict:    VerdictForwarded,
			Direction:  "EGRESS",
			Src:        local,
			Dst:        remote,
			Protocol:   k.Proto,
			SrcPort:    ntohs(k.Lport),
			DstPort:    ntohs(k.Rport),
			RuleNumber: v.Rule,
			Packets:    v.Packets,
			Bytes:      v.Bytes,
			Existing:   true,
			Endpoint:   b.endpoints[k.Ifindex],
			Tier:       ir.TierKind(v.Tier).String(),
			Identity:   v.Identity,
		}
		var svc bpf.PolicySvcDst
		if ir.Direction(v.Origin) == ir.Egress && b.objs.SvcCt.Lookup(&k, &svc) == nil {
			// A Service connection: name the backend, not the ClusterIP.
			fr.Dst, fr.DstPort = netip.AddrFrom16(svc.Addr).Unmap(), ntohs(svc.Port)
		}
		if ir.Direction(v.Origin) == ir.Ingress {
			fr.Direction = "INGRESS"
			fr.Src, fr.Dst = remote, local
			fr.SrcPort, fr.DstPort = fr.DstPort, fr.SrcPort
		}
		if v.Flags&ctAudited != 0 {
			fr.Verdict = VerdictAudit
		}
		if v.Rule != 0 {
			fr.RuleID = b.alloc.ruleIDs[v.Rule]
		}
		out = append(out, fr)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading conntrack map: %w", err)
	}
	return out, nil
}

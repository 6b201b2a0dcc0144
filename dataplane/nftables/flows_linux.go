//go:build linux

package nftables

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// nfnetlink_log constants (linux/netfilter/nfnetlink_log.h).
const (
	nfulnlMsgPacket = 0
	nfulnlMsgConfig = 1

	nfulaCfgCmd     = 1
	nfulaCfgMode    = 2
	nfulaCfgTimeout = 4
	nfulaCfgQthresh = 5

	nfulnlCfgCmdBind   = 1
	nfulnlCfgCmdUnbind = 2
	nfulnlCopyPacket   = 2

	nfulaTimestamp = 3
	nfulaPayload   = 9
	nfulaPrefix    = 10
	nfulaMark      = 2
)

// Verdicts of flow records, as dataplane defines them.
const (
	VerdictDropped   = dataplane.VerdictDropped
	VerdictAudit     = dataplane.VerdictAudit
	VerdictForwarded = dataplane.VerdictForwarded
)

// FlowRecord is the shared flow record. The nflog reader produces one per
// packet logged by a rule of the backend: the first packet of a dropped or
// audited connection, or of one accepted by a rule with Log set. Accepted
// connections without Log come from the conntrack watcher
// (dataplane/conntrack).
type FlowRecord = dataplane.FlowRecord

// FlowReader reads the backend's nflog group in one namespace.
type FlowReader struct {
	conn    *netlink.Conn
	group   uint16
	resolve func(uint32) (string, bool)
}

// NewFlowReader binds to nflog group in the namespace at nsPath (current
// when empty). resolve maps rule numbers to IDs; Backend.RuleID fits.
// Only one reader per group and namespace can bind.
func NewFlowReader(nsPath string, group uint16, resolve func(uint32) (string, bool)) (*FlowReader, error) {
	cfg := &netlink.Config{}
	if nsPath != "" {
		h, err := netns.Open(nsPath)
		if err != nil {
			return nil, fmt.Errorf("opening flow reader: %w", err)
		}
		defer h.Close()
		cfg.NetNS = int(h)
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("dialing nfnetlink for nflog: %w", err)
	}
	_ = c.SetReadBuffer(4 << 20)
	r := &FlowReader{conn: c, group: group, resolve: resolve}
	cmd := func(attrs ...netlink.Attribute) error {
		data, err := netlink.MarshalAttributes(attrs)
		if err != nil {
			return err
		}
		hdr := []byte{unix.AF_UNSPEC, 0, 0, 0}
		binary.BigEndian.PutUint16(hdr[2:], group)
		_, err = c.Execute(netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8 | nfulnlMsgConfig), Flags: netlink.Request | netlink.Acknowledge},
			Data:   append(hdr, data...),
		})
		return err
	}
	mode := make([]byte, 6)
	binary.BigEndian.PutUint32(mode, 256) // copy 256 bytes: the headers
	mode[4] = nfulnlCopyPacket
	u32 := func(v uint32) []byte { b := make([]byte, 4); binary.BigEndian.PutUint32(b, v); return b }
	if err := errors.Join(
		cmd(netlink.Attribute{Type: nfulaCfgCmd, Data: []byte{nfulnlCfgCmdBind}}),
		cmd(netlink.Attribute{Type: nfulaCfgMode, Data: mode}),
		cmd(netlink.Attribute{Type: nfulaCfgQthresh, Data: u32(1)}),
		cmd(netlink.Attribute{Type: nfulaCfgTimeout, Data: u32(1)}),
	); err != nil {
		c.Close()
		return nil, fmt.Errorf("binding nflog group %d: %w", group, err)
	}
	return r, nil
}

// Close unbinds the group and closes the socket.
func (r *FlowReader) Close() error {
	data, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: nfulaCfgCmd, Data: []byte{nfulnlCfgCmdUnbind}}})
	hdr := []byte{unix.AF_UNSPEC, 0, 0, 0}
	binary.BigEndian.PutUint16(hdr[2:], r.group)
	_, _ = r.conn.Send(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8 | nfulnlMsgConfig), Flags: netlink.Request},
		Data:   append(hdr, data...),
	})
	return r.conn.Close()
}

// Run decodes logged packets and calls fn for each until ctx ends. Packets
// whose prefix is not the backend's are skipped.
func (r *FlowReader) Run(ctx context.Context, fn func(FlowRecord)) error {
	for {
		if err := ctx.Err(); err != nil {
			return nil
		}
		_ = r.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		msgs, err := r.conn.Receive()
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, unix.ENOBUFS) {
				continue // records were lost; go on
			}
			return fmt.Errorf("reading nflog: %w", err)
		}
		for _, m := range msgs {
			if rec, ok := r.decode(m); ok {
				fn(rec)
			}
		}
	}
}

func (r *FlowReader) decode(m netlink.Message) (FlowRecord, bool) {
	var rec FlowRecord
	if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8|nfulnlMsgPacket) || len(m.Data) < 4 {
		return rec, false
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		return rec, false
	}
	var payload []byte
	var prefix string
	var mark uint32
	for ad.Next() {
		switch ad.Type() {
		case nfulaMark:
			if b := ad.Bytes(); len(b) == 4 {
				// The mark register was loaded with the rule
				// number's big-endian bytes (a drop-log map's
				// data), and nflog sends the mark big-endian.
				var raw [4]byte
				binary.NativeEndian.PutUint32(raw[:], binary.BigEndian.Uint32(b))
				mark = binary.BigEndian.Uint32(raw[:])
			}
		case nfulaPrefix:
			prefix = strings.TrimRight(string(ad.Bytes()), "\x00")
		case nfulaPayload:
			payload = ad.Bytes()
		case nfulaTimestamp:
			b := ad.Bytes()
			if len(b) == 16 {
				rec.Time = time.Unix(int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint64(b[8:]))*1000)
			}
		}
	}
	if rec.Time.IsZero() {
		rec.Time = time.Now()
	}
	if !parsePrefix(prefix, mark, &rec) {
		return rec, false
	}
	if r.resolve != nil {
		rec.RuleID, _ = r.resolve(rec.RuleNumber)
	}
	return rec, parsePacket(payload, &rec)
}

// parsePrefix decodes "bh <verdict><dir> <hex id>", or "bh D<dir>" of a
// drop-log map with the rule number in the packet mark.
func parsePrefix(p string, mark uint32, rec *FlowRecord) bool {
	f := strings.Fields(p)
	if len(f) == 2 && len(f[1]) == 2 && f[1][0] == 'D' && mark != 0 {
		f = append(f, strconv.FormatUint(uint64(mark), 16))
	}
	if len(f) != 3 || f[0] != "bh" || len(f[1]) != 2 {
		return false
	}
	switch f[1][0] {
	case 'D':
		rec.Verdict = VerdictDropped
	case 'A':
		rec.Verdict = VerdictAudit
	case 'F':
		rec.Verdict = VerdictForwarded
	default:
		return false
	}
	switch f[1][1] {
	case 'E':
		rec.Direction = "EGRESS"
	case 'I':
		rec.Direction = "INGRESS"
	default:
		return false
	}
	n, err := strconv.ParseUint(f[2], 16, 32)
	if err != nil {
		return false
	}
	rec.RuleNumber = uint32(n)
	return true
}

// parsePacket fills the 5-tuple from an IPv4 or IPv6 packet.
func parsePacket(b []byte, rec *FlowRecord) bool {
	if len(b) < 1 {
		return false
	}
	var l4 []byte
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return false
		}
		ihl := int(b[0]&0x0f) * 4
		rec.Src = netip.AddrFrom4([4]byte(b[12:16]))
		rec.Dst = netip.AddrFrom4([4]byte(b[16:20]))
		rec.Protocol = b[9]
		if len(b) >= ihl {
			l4 = b[ihl:]
		}
	case 6:
		if len(b) < 40 {
			return false
		}
		rec.Src = netip.AddrFrom16([16]byte(b[8:24]))
		rec.Dst = netip.AddrFrom16([16]byte(b[24:40]))
		rec.Protocol = b[6] // extension headers are not walked
		l4 = b[40:]
	default:
		return false
	}
	switch rec.Protocol {
	case 6, 17, 132, 136:
		if len(l4) >= 4 {
			rec.SrcPort = binary.BigEndian.Uint16(l4[0:2])
			rec.DstPort = binary.BigEndian.Uint16(l4[2:4])
		}
	}
	return true
}

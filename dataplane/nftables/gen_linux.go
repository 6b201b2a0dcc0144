//go:build linux

package nftables

import (
	"encoding/binary"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// genReader reads the namespace's nftables ruleset generation, which the
// kernel bumps on every committed transaction of any table. An unchanged
// generation since the backend's own last commit proves that nobody
// changed the table, so a resync can skip the full Verify.
type genReader struct{ c *netlink.Conn }

func newGenReader(nsFd int) (*genReader, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: nsFd})
	if err != nil {
		return nil, fmt.Errorf("dialing nfnetlink: %w", err)
	}
	return &genReader{c: c}, nil
}

func (g *genReader) get() (uint32, error) {
	msgs, err := g.c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, 0, 0, 0},
	})
	if err != nil {
		return 0, fmt.Errorf("reading nftables generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, err
		}
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return binary.BigEndian.Uint32(ad.Bytes()), nil
			}
		}
	}
	return 0, fmt.Errorf("reading nftables generation: no generation in reply")
}

func (g *genReader) close() error { return g.c.Close() }

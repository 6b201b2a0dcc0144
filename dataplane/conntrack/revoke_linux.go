//go:build linux

package conntrack

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/mdlayher/netlink"
	ct "github.com/ti-mo/conntrack"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// Result reports what Revoke did.
type Result struct {
	// Checked is the number of entries that involved a selected endpoint.
	Checked int
	// Deleted is the number of entries deleted.
	Deleted int
}

// Revoke lists the conntrack entries in the namespace at nsPath (the
// current namespace when empty) and deletes those that np denies: an
// entry whose original source is an address of a selected endpoint is
// judged by that endpoint's egress chain (peer = original destination),
// one whose original destination is such an address by its ingress chain
// (peer = original source). The destination port of the original
// direction is the port judged. Entries of other addresses are untouched.
func Revoke(ctx context.Context, nsPath string, np *ir.NodePolicy, endpoints []string) (Result, error) {
	var res Result
	if np == nil || len(endpoints) == 0 {
		return res, nil
	}
	selected := map[netip.Addr]*ir.Endpoint{}
	for _, n := range endpoints {
		ep := np.Endpoint(n)
		if ep == nil {
			return res, fmt.Errorf("revoking connections: unknown endpoint %q", n)
		}
		for _, a := range ep.IPs {
			selected[a.Unmap()] = ep
		}
	}
	cfg := &netlink.Config{}
	if nsPath != "" {
		h, err := netns.Open(nsPath)
		if err != nil {
			return res, fmt.Errorf("revoking connections: %w", err)
		}
		defer h.Close()
		cfg.NetNS = int(h)
	}
	c, err := ct.Dial(cfg)
	if err != nil {
		return res, fmt.Errorf("opening conntrack netlink: %w", err)
	}
	defer c.Close()
	flows, err := c.Dump(nil)
	if err != nil {
		return res, fmt.Errorf("dumping conntrack: %w", err)
	}
	var errs []error
	for _, f := range flows {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		src := f.TupleOrig.IP.SourceAddress.Unmap()
		dst := f.TupleOrig.IP.DestinationAddress.Unmap()
		proto := ir.Protocol(f.TupleOrig.Proto.Protocol)
		port := f.TupleOrig.Proto.DestinationPort
		if f.TupleOrig.Proto.ICMPv4 || f.TupleOrig.Proto.ICMPv6 {
			port = 0
		}
		se, de := selected[src], selected[dst]
		if se == nil && de == nil {
			continue
		}
		res.Checked++
		allowed := true
		if se != nil && !np.Evaluate(&se.Egress, dst, proto, port).Allowed {
			allowed = false
		}
		if de != nil && !np.Evaluate(&de.Ingress, src, proto, port).Allowed {
			allowed = false
		}
		if allowed {
			continue
		}
		del := ct.Flow{TupleOrig: f.TupleOrig, TupleReply: f.TupleReply, Zone: f.Zone}
		if err := c.Delete(del); err != nil {
			if errors.Is(err, syscall.ENOENT) {
				continue // already gone
			}
			errs = append(errs, fmt.Errorf("deleting conntrack entry %v -> %v proto %d port %d: %w", src, dst, proto, port, err))
			continue
		}
		res.Deleted++
	}
	return res, errors.Join(errs...)
}

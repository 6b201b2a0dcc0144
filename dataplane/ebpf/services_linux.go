//go:build linux

package ebpf

import (
	"errors"
	"fmt"
	"net/netip"

	cebpf "github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/bulkhead-dev/bulkhead/bpf"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// syncServices makes svc_cidr hold Options.ServiceCIDRs and local_ep map
// every address of a resolved endpoint to its interface. It diffs against
// what it wrote last; with reread (a Sync that found the policy
// unchanged, the periodic resync) it reads both maps back first, so drift
// is repaired.
func (b *Backend) syncServices(np *ir.NodePolicy, ifindex map[string]uint32, reread bool) error {
	if reread {
		b.svcHave = [2]map[identKey]uint32{}
	}
	cidrs := map[identKey]uint32{}
	for _, p := range b.opts.ServiceCIDRs {
		cidrs[mapped(p)] = 1
	}
	if err := reconcile(b.objs.SvcCidr, cidrs, &b.svcHave[0]); err != nil {
		return fmt.Errorf("writing service ranges: %w", err)
	}
	local := map[identKey]uint32{}
	if len(b.opts.ServiceCIDRs) > 0 {
		for i := range np.Endpoints {
			ep := &np.Endpoints[i]
			idx, ok := ifindex[ep.Name]
			if !ok {
				continue
			}
			for _, a := range ep.IPs {
				a = a.Unmap()
				local[mapped(netip.PrefixFrom(a, a.BitLen()))] = idx
			}
		}
	}
	if err := reconcile(b.objs.LocalEp, local, &b.svcHave[1]); err != nil {
		return fmt.Errorf("writing local endpoint addresses: %w", err)
	}
	return nil
}

// reconcile makes m (keyed by identity-trie keys) hold exactly want.
// *cache is what m holds, read back from the kernel when nil; it is want
// after success and nil after a failure.
func reconcile(m *cebpf.Map, want map[identKey]uint32, cache *map[identKey]uint32) error {
	have := *cache
	*cache = nil
	if have == nil {
		have = map[identKey]uint32{}
		var k bpf.PolicyIdentKey
		var v uint32
		it := m.Iterate()
		for it.Next(&k, &v) {
			have[identKey{Fam: k.Family, Addr: k.Addr, Bits: uint8(k.Prefixlen - 8)}] = v
		}
		if err := it.Err(); err != nil {
			return err
		}
	}
	for ik := range have {
		if _, ok := want[ik]; !ok {
			kk := kernIdentKey(ik)
			if err := m.Delete(&kk); err != nil && !errors.Is(err, cebpf.ErrKeyNotExist) {
				return err
			}
		}
	}
	for ik, v := range want {
		if w, ok := have[ik]; ok && w == v {
			continue
		}
		kk := kernIdentKey(ik)
		if err := m.Update(&kk, &v, cebpf.UpdateAny); err != nil {
			return err
		}
	}
	*cache = want
	return nil
}

// uplinks returns the interfaces that get the Service program: none
// without ServiceCIDRs, Options.ServiceUplinks when set (each must
// exist), else every interface that is up and neither loopback nor an
// endpoint's.
func (b *Backend) uplinks(ifindex map[string]uint32) ([]uint32, error) {
	if len(b.opts.ServiceCIDRs) == 0 {
		return nil, nil
	}
	var out []uint32
	if len(b.opts.ServiceUplinks) > 0 {
		for _, name := range b.opts.ServiceUplinks {
			l, err := b.nl.LinkByName(name)
			if err != nil {
				return nil, fmt.Errorf("service uplink %q: %w", name, err)
			}
			out = append(out, uint32(l.Attrs().Index))
		}
		return out, nil
	}
	eps := map[uint32]bool{}
	for _, idx := range ifindex {
		eps[idx] = true
	}
	links, err := b.nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&netFlagLoopback != 0 || a.OperState != netlink.OperUp && a.Flags&netFlagUp == 0 || eps[uint32(a.Index)] {
			continue
		}
		out = append(out, uint32(a.Index))
	}
	return out, nil
}

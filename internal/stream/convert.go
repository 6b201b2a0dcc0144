package stream

import (
	"fmt"
	"net/netip"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
)

// ToProto converts a NodePolicy to its wire form.
func ToProto(np *ir.NodePolicy) *pb.NodePolicy {
	if np == nil {
		return &pb.NodePolicy{}
	}
	out := &pb.NodePolicy{Node: np.Node}
	out.Endpoints = make([]*pb.Endpoint, len(np.Endpoints))
	for i := range np.Endpoints {
		out.Endpoints[i] = EndpointToProto(&np.Endpoints[i])
	}
	out.Sets = make([]*pb.AddressSet, len(np.Sets))
	for i := range np.Sets {
		out.Sets[i] = SetToProto(&np.Sets[i])
	}
	return out
}

// FromProto converts a wire NodePolicy back to the IR. It rejects
// malformed addresses, prefixes, ports, tiers and actions, naming the
// endpoint or set.
func FromProto(m *pb.NodePolicy) (*ir.NodePolicy, error) {
	np := &ir.NodePolicy{Node: m.GetNode()}
	np.Endpoints = make([]ir.Endpoint, 0, len(m.GetEndpoints()))
	for _, e := range m.GetEndpoints() {
		ep, err := EndpointFromProto(e)
		if err != nil {
			return nil, err
		}
		np.Endpoints = append(np.Endpoints, ep)
	}
	np.Sets = make([]ir.AddressSet, 0, len(m.GetSets()))
	for _, s := range m.GetSets() {
		set, err := SetFromProto(s)
		if err != nil {
			return nil, err
		}
		np.Sets = append(np.Sets, set)
	}
	return np, nil
}

// EndpointToProto converts one endpoint.
func EndpointToProto(e *ir.Endpoint) *pb.Endpoint {
	out := &pb.Endpoint{
		Name:           e.Name,
		Quarantined:    e.Quarantined,
		CutConnections: e.CutConnections,
		Ingress:        chainToProto(&e.Ingress),
		Egress:         chainToProto(&e.Egress),
	}
	out.Ips = make([][]byte, len(e.IPs))
	for i, ip := range e.IPs {
		out.Ips[i] = ip.AsSlice()
	}
	return out
}

// EndpointFromProto converts one wire endpoint.
func EndpointFromProto(m *pb.Endpoint) (ir.Endpoint, error) {
	e := ir.Endpoint{Name: m.GetName(), Quarantined: m.GetQuarantined(), CutConnections: m.GetCutConnections()}
	if e.Name == "" {
		return e, fmt.Errorf("endpoint without a name")
	}
	if len(m.GetIps()) > 0 {
		e.IPs = make([]netip.Addr, 0, len(m.GetIps()))
	}
	for i, b := range m.GetIps() {
		ip, ok := netip.AddrFromSlice(b)
		if !ok {
			return e, fmt.Errorf("endpoint %s: ips[%d]: %d bytes is not an IPv4 or IPv6 address", e.Name, i, len(b))
		}
		e.IPs = append(e.IPs, ip)
	}
	var err error
	if e.Ingress, err = chainFromProto(m.GetIngress()); err != nil {
		return e, fmt.Errorf("endpoint %s: ingress: %w", e.Name, err)
	}
	if e.Egress, err = chainFromProto(m.GetEgress()); err != nil {
		return e, fmt.Errorf("endpoint %s: egress: %w", e.Name, err)
	}
	return e, nil
}

func chainToProto(c *ir.Chain) *pb.Chain {
	out := &pb.Chain{Tiers: make([]*pb.Tier, len(c.Tiers))}
	for i := range c.Tiers {
		t := &c.Tiers[i]
		pt := &pb.Tier{Kind: pb.TierKind(int32(t.Kind) + 1), Rules: make([]*pb.Rule, len(t.Rules))}
		for j := range t.Rules {
			r := &t.Rules[j]
			pr := &pb.Rule{
				Id:     r.ID,
				Peer:   &pb.PeerMatch{Set: r.Peer.Set, Negate: r.Peer.Negate},
				Action: pb.Action(int32(r.Action) + 1),
				Log:    r.Log,
			}
			if len(r.Ports) > 0 {
				pr.Ports = make([]*pb.PortRange, len(r.Ports))
				for k, p := range r.Ports {
					pr.Ports[k] = &pb.PortRange{Protocol: uint32(p.Protocol), From: uint32(p.From), To: uint32(p.To)}
				}
			}
			pt.Rules[j] = pr
		}
		out.Tiers[i] = pt
	}
	return out
}

func chainFromProto(m *pb.Chain) (ir.Chain, error) {
	var c ir.Chain
	if len(m.GetTiers()) == 0 {
		return c, nil
	}
	c.Tiers = make([]ir.Tier, 0, len(m.GetTiers()))
	for i, pt := range m.GetTiers() {
		k := int32(pt.GetKind())
		if k < int32(pb.TierKind_TIER_KIND_QUARANTINE) || k > int32(pb.TierKind_TIER_KIND_BASELINE) {
			return c, fmt.Errorf("tiers[%d]: unknown tier kind %d", i, k)
		}
		t := ir.Tier{Kind: ir.TierKind(k - 1), Rules: make([]ir.Rule, 0, len(pt.GetRules()))}
		for j, pr := range pt.GetRules() {
			a := int32(pr.GetAction())
			if a < int32(pb.Action_ACTION_ACCEPT) || a > int32(pb.Action_ACTION_AUDIT) {
				return c, fmt.Errorf("tiers[%d].rules[%d] (%s): unknown action %d", i, j, pr.GetId(), a)
			}
			r := ir.Rule{
				ID:     pr.GetId(),
				Peer:   ir.PeerMatch{Set: pr.GetPeer().GetSet(), Negate: pr.GetPeer().GetNegate()},
				Action: ir.Action(a - 1),
				Log:    pr.GetLog(),
			}
			if len(pr.GetPorts()) > 0 {
				r.Ports = make([]ir.PortRange, 0, len(pr.GetPorts()))
			}
			for k, pp := range pr.GetPorts() {
				if pp.GetProtocol() > 255 || pp.GetFrom() > 65535 || pp.GetTo() > 65535 {
					return c, fmt.Errorf("tiers[%d].rules[%d] (%s): ports[%d]: protocol %d or port %d-%d out of range",
						i, j, pr.GetId(), k, pp.GetProtocol(), pp.GetFrom(), pp.GetTo())
				}
				r.Ports = append(r.Ports, ir.PortRange{Protocol: ir.Protocol(pp.GetProtocol()), From: uint16(pp.GetFrom()), To: uint16(pp.GetTo())})
			}
			t.Rules = append(t.Rules, r)
		}
		c.Tiers = append(c.Tiers, t)
	}
	return c, nil
}

// SetToProto converts one address set.
func SetToProto(s *ir.AddressSet) *pb.AddressSet {
	out := &pb.AddressSet{Name: s.Name, Prefixes: make([]*pb.Prefix, len(s.Prefixes))}
	for i, p := range s.Prefixes {
		out.Prefixes[i] = &pb.Prefix{Addr: p.Addr().AsSlice(), Bits: uint32(p.Bits())}
	}
	return out
}

// SetFromProto converts one wire address set.
func SetFromProto(m *pb.AddressSet) (ir.AddressSet, error) {
	s := ir.AddressSet{Name: m.GetName()}
	if s.Name == "" {
		return s, fmt.Errorf("address set without a name")
	}
	if len(m.GetPrefixes()) > 0 {
		s.Prefixes = make([]netip.Prefix, 0, len(m.GetPrefixes()))
	}
	for i, p := range m.GetPrefixes() {
		addr, ok := netip.AddrFromSlice(p.GetAddr())
		if !ok {
			return s, fmt.Errorf("address set %s: prefixes[%d]: %d bytes is not an IPv4 or IPv6 address", s.Name, i, len(p.GetAddr()))
		}
		if int(p.GetBits()) > addr.BitLen() {
			return s, fmt.Errorf("address set %s: prefixes[%d]: /%d is longer than the address", s.Name, i, p.GetBits())
		}
		s.Prefixes = append(s.Prefixes, netip.PrefixFrom(addr, int(p.GetBits())))
	}
	return s, nil
}

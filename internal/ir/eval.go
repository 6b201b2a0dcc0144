package ir

import (
	"net/netip"
	"sort"
)

// Verdict is the outcome of evaluating a connection against a chain.
type Verdict struct {
	// Allowed is what the datapath does.
	Allowed bool
	// Audited is set when an Audit rule marked the connection.
	Audited bool
	// Tier and RuleID name the rule that decided; RuleID is empty when the
	// default allow decided.
	Tier   TierKind
	RuleID string
}

// Set returns the address set with the given name, or nil.
func (np *NodePolicy) Set(name string) *AddressSet {
	i := sort.Search(len(np.Sets), func(i int) bool { return np.Sets[i].Name >= name })
	if i < len(np.Sets) && np.Sets[i].Name == name {
		return &np.Sets[i]
	}
	return nil
}

// Endpoint returns the endpoint with the given name, or nil.
func (np *NodePolicy) Endpoint(name string) *Endpoint {
	i := sort.Search(len(np.Endpoints), func(i int) bool { return np.Endpoints[i].Name >= name })
	if i < len(np.Endpoints) && np.Endpoints[i].Name == name {
		return &np.Endpoints[i]
	}
	return nil
}

// EndpointByIP returns the local endpoint that owns ip, or nil.
func (np *NodePolicy) EndpointByIP(ip netip.Addr) *Endpoint {
	for i := range np.Endpoints {
		for _, a := range np.Endpoints[i].IPs {
			if a == ip {
				return &np.Endpoints[i]
			}
		}
	}
	return nil
}

// Evaluate is the reference semantics of a chain: it returns what the
// datapath must do with a new connection whose remote end is peer. Backends
// and tests use it as the oracle for the kernel's behaviour.
func (np *NodePolicy) Evaluate(c *Chain, peer netip.Addr, proto Protocol, port uint16) Verdict {
	audited := false
	for _, t := range c.Tiers {
	rules:
		for _, r := range t.Rules {
			if !np.peerMatches(r.Peer, peer) || !portsMatch(r.Ports, proto, port) {
				continue
			}
			switch r.Action {
			case Accept:
				return Verdict{Allowed: true, Audited: audited, Tier: t.Kind, RuleID: r.ID}
			case Deny:
				return Verdict{Allowed: false, Audited: audited, Tier: t.Kind, RuleID: r.ID}
			case Audit:
				audited = true
				break rules
			case Pass:
				break rules
			}
		}
	}
	return Verdict{Allowed: true, Audited: audited, Tier: TierBaseline}
}

func (np *NodePolicy) peerMatches(m PeerMatch, peer netip.Addr) bool {
	if m.Set == "" {
		return !m.Negate
	}
	in := false
	if s := np.Set(m.Set); s != nil {
		in = s.Contains(peer.Unmap())
	}
	return in != m.Negate
}

func portsMatch(ports []PortRange, proto Protocol, port uint16) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if p.Matches(proto, port) {
			return true
		}
	}
	return false
}

package ir

import (
	"fmt"
	"net/netip"
)

// Direction is the side of an endpoint a chain guards.
type Direction uint8

const (
	// Ingress guards connections to the endpoint; the peer is the source.
	Ingress Direction = iota
	// Egress guards connections from the endpoint; the peer is the
	// destination.
	Egress
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// TierKind names a precedence tier, highest first.
type TierKind uint8

const (
	TierQuarantine TierKind = iota
	TierAdmin
	TierNetworkPolicy
	TierBaseline
)

func (t TierKind) String() string {
	switch t {
	case TierQuarantine:
		return "quarantine"
	case TierAdmin:
		return "admin"
	case TierNetworkPolicy:
		return "networkpolicy"
	case TierBaseline:
		return "baseline"
	}
	return fmt.Sprintf("tier(%d)", uint8(t))
}

// Action is what a matching rule does; see the package documentation.
type Action uint8

const (
	Accept Action = iota
	Deny
	Pass
	Audit
)

func (a Action) String() string {
	switch a {
	case Accept:
		return "accept"
	case Deny:
		return "deny"
	case Pass:
		return "pass"
	case Audit:
		return "audit"
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// Protocol is an IP protocol number: 6 TCP, 17 UDP, 132 SCTP.
type Protocol uint8

const (
	TCP  Protocol = 6
	UDP  Protocol = 17
	SCTP Protocol = 132
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	case SCTP:
		return "SCTP"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// PortRange matches a protocol and an inclusive destination port range.
// From == 0 and To == 0 match every port of the protocol.
type PortRange struct {
	Protocol Protocol `json:"protocol"`
	From     uint16   `json:"from,omitempty"`
	To       uint16   `json:"to,omitempty"`
}

// AllPorts reports whether the range matches every port of its protocol.
func (p PortRange) AllPorts() bool { return p.From == 0 && p.To == 0 }

// Matches reports whether a connection's protocol and destination port fall
// in the range.
func (p PortRange) Matches(proto Protocol, port uint16) bool {
	return p.Protocol == proto && (p.AllPorts() || (port >= p.From && port <= p.To))
}

// AddressSet is a named set of disjoint, sorted, canonical prefixes (IPv4
// and IPv6 mixed). Host addresses are /32 or /128 prefixes. Exceptions
// (ipBlock except, zone network except) are already carved out.
type AddressSet struct {
	Name     string         `json:"name"`
	Prefixes []netip.Prefix `json:"prefixes"`
}

// Contains reports whether ip lies in the set.
func (s *AddressSet) Contains(ip netip.Addr) bool {
	for _, p := range s.Prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// PeerMatch selects the remote end of a connection. An empty Set matches
// every address. Negate inverts the match (peer not in Set).
type PeerMatch struct {
	Set    string `json:"set,omitempty"`
	Negate bool   `json:"negate,omitempty"`
}

// Rule is one match-action entry of a tier.
type Rule struct {
	// ID names the object and rule that produced this entry, e.g.
	// "ZonePolicy/allow-web-db" or "NetworkPolicy/ns/name/ingress/0". It
	// is what flow records report as the deciding policy.
	ID string `json:"id"`
	// Peer selects the remote address.
	Peer PeerMatch `json:"peer"`
	// Ports selects protocol and destination port. Empty matches every
	// protocol and port.
	Ports []PortRange `json:"ports,omitempty"`
	// Action is what a match does.
	Action Action `json:"action"`
	// Log asks the datapath to report connections this rule decides.
	Log bool `json:"log,omitempty"`
}

// Tier is an ordered list of rules of one precedence tier.
type Tier struct {
	Kind  TierKind `json:"kind"`
	Rules []Rule   `json:"rules"`
}

// Chain is what guards one direction of one endpoint: tiers in precedence
// order. Tiers without rules are omitted.
type Chain struct {
	Tiers []Tier `json:"tiers,omitempty"`
}

// Endpoint is a pod whose traffic this node enforces.
type Endpoint struct {
	// Name is "namespace/pod".
	Name string `json:"name"`
	// IPs are the pod's addresses, sorted.
	IPs []netip.Addr `json:"ips"`
	// Quarantined is set while a quarantine isolates the pod.
	Quarantined bool `json:"quarantined,omitempty"`
	// CutConnections asks the agent to delete the conntrack state of
	// connections that a change revokes for this endpoint.
	CutConnections bool `json:"cutConnections,omitempty"`
	// Ingress guards connections to the pod.
	Ingress Chain `json:"ingress"`
	// Egress guards connections from the pod.
	Egress Chain `json:"egress"`
}

// NodePolicy is everything one node enforces.
type NodePolicy struct {
	Node string `json:"node"`
	// Endpoints are the node's local pods, sorted by Name.
	Endpoints []Endpoint `json:"endpoints"`
	// Sets are the address sets the endpoints' rules reference, sorted by
	// Name. Names are unique within a NodePolicy.
	Sets []AddressSet `json:"sets"`
}

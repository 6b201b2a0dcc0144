package dataplane

import (
	"net/netip"
	"time"
)

// Verdicts of flow records.
const (
	VerdictForwarded = "FORWARDED"
	VerdictDropped   = "DROPPED"
	VerdictAudit     = "AUDIT"
)

// Directions of flow records, seen from the endpoint whose chain judged
// the flow.
const (
	DirectionIngress = "INGRESS"
	DirectionEgress  = "EGRESS"
)

// FlowRecord is one observed flow, the same for every backend: the first
// packet of a dropped or audited connection, a new accepted connection,
// a connection that already existed when observation started, or (Closed)
// the end of an accepted connection with its final counters. JSON
// names follow a subset of Hubble's flow format.
type FlowRecord struct {
	Time      time.Time  `json:"time"`
	Verdict   string     `json:"verdict"`
	Direction string     `json:"traffic_direction"`
	Src       netip.Addr `json:"source_ip"`
	Dst       netip.Addr `json:"destination_ip"`
	Protocol  uint8      `json:"protocol"`
	SrcPort   uint16     `json:"source_port,omitempty"`
	DstPort   uint16     `json:"destination_port,omitempty"`
	// RuleID is the deciding rule's ID; empty for the default allow or
	// when the rule number is unknown to the backend.
	RuleID     string `json:"policy,omitempty"`
	RuleNumber uint32 `json:"rule_number"`
	// Packets and Bytes count the flow's traffic in both directions when
	// the source knows them (conntrack DESTROY events and snapshots);
	// zero otherwise. ReplyPackets and ReplyBytes are the part of them
	// sent by the destination.
	Packets      uint64 `json:"packets,omitempty"`
	Bytes        uint64 `json:"bytes,omitempty"`
	ReplyPackets uint64 `json:"reply_packets,omitempty"`
	ReplyBytes   uint64 `json:"reply_bytes,omitempty"`
	// Closed marks the end of an accepted connection (a conntrack DESTROY
	// event): its counters are final. The connection was reported before
	// by a record without Closed (new or existing), which is the one that
	// counts it as a connection.
	Closed bool `json:"closed,omitempty"`
	// Existing marks a connection that was open before observation
	// started (from a connection-tracking snapshot).
	Existing bool `json:"existing,omitempty"`
	// Endpoint is the local endpoint ("namespace/pod") whose chain judged
	// the flow, when the backend knows it; Tier the deciding tier.
	Endpoint string `json:"endpoint,omitempty"`
	Tier     string `json:"tier,omitempty"`
	Identity uint32 `json:"identity,omitempty"`
	// Source and Destination are filled by the agent from what it knows
	// about local endpoints; nil when the address is not a known pod.
	Source      *FlowEndpoint `json:"source,omitempty"`
	Destination *FlowEndpoint `json:"destination,omitempty"`
	// Node is the node whose agent observed the flow.
	Node string `json:"node_name,omitempty"`
}

// FlowEndpoint describes one end of a flow as the agent knows it.
type FlowEndpoint struct {
	Namespace string            `json:"namespace,omitempty"`
	Pod       string            `json:"pod_name,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Zone      string            `json:"zone,omitempty"`
	Node      string            `json:"node_name,omitempty"`
}

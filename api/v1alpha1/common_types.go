package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Reserved peer names that a ZonePolicy may use in from/to. No Zone may take
// these names.
const (
	// PeerUnzoned names every pod that belongs to no zone.
	PeerUnzoned = "unzoned"
	// PeerWorld names every address that is neither a pod nor inside a
	// CIDR zone.
	PeerWorld = "world"
)

// Protocol is an L4 protocol that policies can match.
// +kubebuilder:validation:Enum=TCP;UDP;SCTP
type Protocol string

const (
	ProtocolTCP  Protocol = "TCP"
	ProtocolUDP  Protocol = "UDP"
	ProtocolSCTP Protocol = "SCTP"
)

// PolicyPort selects traffic by protocol and destination port. A port given
// by name is resolved against the destination pod's container ports, per
// pod and protocol, as in NetworkPolicy.
// +kubebuilder:validation:XValidation:rule="!has(self.endPort) || (has(self.port) && type(self.port) == int)",message="endPort requires a numeric port",fieldPath=".endPort"
// +kubebuilder:validation:XValidation:rule="!has(self.endPort) || !has(self.port) || type(self.port) != int || self.endPort >= self.port",message="endPort must not be below port",fieldPath=".endPort"
// +kubebuilder:validation:XValidation:rule="!has(self.port) || type(self.port) != int || (self.port >= 1 && self.port <= 65535)",message="port must be between 1 and 65535",fieldPath=".port"
// +kubebuilder:validation:XValidation:rule="!has(self.port) || type(self.port) != string || (size(self.port) >= 1 && size(self.port) <= 15)",message="a named port must be an IANA_SVC_NAME of at most 15 characters",fieldPath=".port"
type PolicyPort struct {
	// Protocol is TCP, UDP or SCTP. Defaults to TCP.
	// +kubebuilder:default=TCP
	// +optional
	Protocol Protocol `json:"protocol,omitempty"`
	// Port is a port number or a container port name. Absent means every
	// port of the protocol.
	// +optional
	// +kubebuilder:validation:XIntOrString
	Port *intstr.IntOrString `json:"port,omitempty"`
	// EndPort makes Port the start of an inclusive range. Port must then be
	// a number.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	EndPort *int32 `json:"endPort,omitempty"`
}

// Realization tells how many nodes enforce an object.
type Realization struct {
	// NodesDesired is the number of nodes that must enforce the object.
	NodesDesired int32 `json:"nodesDesired"`
	// NodesEnforced is the number of those nodes whose agent acknowledged
	// the generation that contains the object's current form.
	NodesEnforced int32 `json:"nodesEnforced"`
	// EnforcedAt is when the last of the desired nodes acknowledged it.
	// +optional
	EnforcedAt *metav1.Time `json:"enforcedAt,omitempty"`
	// FailedNodes names nodes that reported an error, with the reason.
	// +optional
	// +listType=map
	// +listMapKey=node
	FailedNodes []NodeError `json:"failedNodes,omitempty"`
}

// NodeError is one node's failure to enforce an object.
type NodeError struct {
	Node    string `json:"node"`
	Message string `json:"message"`
}

// Condition types used across the API.
const (
	// ConditionAccepted is true when the object is valid and understood by
	// the engine.
	ConditionAccepted = "Accepted"
	// ConditionEnforced is true when every desired node enforces the
	// object's current generation.
	ConditionEnforced = "Enforced"
	// ConditionConflict is true when a zone lost members to an older zone.
	ConditionConflict = "Conflict"
)

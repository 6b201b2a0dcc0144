package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ForensicsPeer is one entry of a quarantine's allow-list: exactly one of
// zone, cidr or pods, and optionally the ports it may use.
// +kubebuilder:validation:XValidation:rule="[has(self.zone), has(self.cidr), has(self.pods)].filter(x, x).size() == 1",message="exactly one of zone, cidr or pods must be set"
// +kubebuilder:validation:XValidation:rule="!has(self.cidr) || isCIDR(self.cidr)",message="cidr must be a valid CIDR such as 192.0.2.10/32",fieldPath=".cidr"
type ForensicsPeer struct {
	// Zone names a zone, or one of the reserved peers "unzoned" and
	// "world".
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Zone string `json:"zone,omitempty"`
	// CIDR is an IPv4 or IPv6 prefix.
	// +optional
	// +kubebuilder:validation:MaxLength=43
	CIDR string `json:"cidr,omitempty"`
	// Pods chooses pods by namespace and pod labels. An absent namespace
	// selector means the quarantine's own namespace.
	// +optional
	Pods *ZonePods `json:"pods,omitempty"`
	// Ports limits the entry to these destination ports. Absent means
	// every port.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Ports []PolicyPort `json:"ports,omitempty"`
}

// ForensicsAllowList names what a quarantined pod may still talk to.
type ForensicsAllowList struct {
	// Ingress lists peers that may open connections to the pod.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Ingress []ForensicsPeer `json:"ingress,omitempty"`
	// Egress lists peers the pod may open connections to.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Egress []ForensicsPeer `json:"egress,omitempty"`
}

// QuarantineSpec selects pods to isolate now.
// +kubebuilder:validation:XValidation:rule="has(self.podName) != has(self.podSelector)",message="exactly one of podName or podSelector must be set"
// +kubebuilder:validation:XValidation:rule="!(has(self.expireAfter) && has(self.expireAt))",message="set at most one of expireAfter or expireAt"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.released) || !oldSelf.released || self.released",message="a released quarantine cannot be re-armed; create a new one",fieldPath=".released"
// +kubebuilder:validation:XValidation:rule="oldSelf.reason == self.reason",message="reason is immutable",fieldPath=".reason"
type QuarantineSpec struct {
	// PodName quarantines one pod of the quarantine's namespace.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	PodName string `json:"podName,omitempty"`
	// PodSelector quarantines every pod of the namespace that matches,
	// including pods created later.
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
	// Reason says why, for the audit trail.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.trim().size() > 0",message="reason must not be blank"
	Reason string `json:"reason"`
	// RequestedBy is the identity that asked for the quarantine. The CLI
	// sets it; the controller records the authenticated user beside it.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	RequestedBy string `json:"requestedBy,omitempty"`
	// Allow is the forensics allow-list.
	// +optional
	Allow ForensicsAllowList `json:"allow,omitempty"`
	// AllowDNS keeps DNS (UDP and TCP port 53) to kube-dns open.
	// +optional
	AllowDNS bool `json:"allowDNS,omitempty"`
	// ExpireAfter ends the quarantine this long after it was created.
	// +optional
	ExpireAfter *metav1.Duration `json:"expireAfter,omitempty"`
	// ExpireAt ends the quarantine at this time.
	// +optional
	ExpireAt *metav1.Time `json:"expireAt,omitempty"`
	// CutConnections deletes the connection-tracking state of the pods'
	// established connections, so they die at once. Defaults to true.
	// +kubebuilder:default=true
	// +optional
	CutConnections *bool `json:"cutConnections,omitempty"`
	// Released ends the quarantine by hand. It cannot be undone.
	// +optional
	Released bool `json:"released,omitempty"`
}

// QuarantinePhase is where a quarantine is in its life.
// +kubebuilder:validation:Enum=Pending;Active;Expired;Released
type QuarantinePhase string

const (
	QuarantinePending  QuarantinePhase = "Pending"
	QuarantineActive   QuarantinePhase = "Active"
	QuarantineExpired  QuarantinePhase = "Expired"
	QuarantineReleased QuarantinePhase = "Released"
)

// AuthenticatedRequesterAnnotation holds the username the API server
// authenticated for the request that created a Quarantine. The
// MutatingAdmissionPolicy in config/admission sets it on create (over any
// client value) and its ValidatingAdmissionPolicy keeps it immutable; the
// controller copies it to status.authenticatedRequester.
const AuthenticatedRequesterAnnotation = "segmentation.bulkhead.dev/authenticated-requester"

// MaxBlockedFlows bounds status.blockedFlows.
const MaxBlockedFlows = 50

// QuarantineFlow is one refused connection attempt of a quarantined pod
// (an agent flow record with verdict DROPPED decided by the quarantine).
type QuarantineFlow struct {
	// Time is when the agent saw it.
	Time metav1.MicroTime `json:"time"`
	// Node is the node whose agent refused it.
	Node string `json:"node"`
	// Direction is ingress or egress, seen from the judged endpoint.
	// +optional
	Direction string `json:"direction,omitempty"`
	// Protocol is TCP, UDP, SCTP or the IP protocol number.
	Protocol string `json:"protocol"`
	// Source and Destination are IP or [IPv6]:port.
	Source      string `json:"source"`
	Destination string `json:"destination"`
	// SourcePod and DestinationPod are namespace/name when the address
	// was a known pod.
	// +optional
	SourcePod string `json:"sourcePod,omitempty"`
	// +optional
	DestinationPod string `json:"destinationPod,omitempty"`
}

// QuarantineNode records when one node enforced the quarantine.
type QuarantineNode struct {
	Node string `json:"node"`
	// EnforcedAt is when the node's agent acknowledged it, to the
	// microsecond.
	// +optional
	EnforcedAt *metav1.MicroTime `json:"enforcedAt,omitempty"`
	// Error is the node's failure to program it, if any.
	// +optional
	Error string `json:"error,omitempty"`
}

// QuarantineStatus is the audit trail of a quarantine.
type QuarantineStatus struct {
	// +optional
	Phase QuarantinePhase `json:"phase,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// AuthenticatedRequester is the user the API server saw create the
	// object, copied from the AuthenticatedRequesterAnnotation that the
	// admission policy in config/admission sets; empty without it.
	// +optional
	AuthenticatedRequester string `json:"authenticatedRequester,omitempty"`
	// MatchedPods lists the pods isolated now, as namespace/name.
	// +optional
	// +listType=set
	MatchedPods []string `json:"matchedPods,omitempty"`
	// Nodes records per-node enforcement.
	// +optional
	// +listType=map
	// +listMapKey=node
	Nodes []QuarantineNode `json:"nodes,omitempty"`
	// RequestedAt is when the quarantine was created.
	// +optional
	RequestedAt *metav1.Time `json:"requestedAt,omitempty"`
	// EnforcedAt is when every node that hosts a matched pod enforced
	// it, to the microsecond.
	// +optional
	EnforcedAt *metav1.MicroTime `json:"enforcedAt,omitempty"`
	// EndedAt is when it expired or was released, to the microsecond.
	// +optional
	EndedAt *metav1.MicroTime `json:"endedAt,omitempty"`
	// BlockedFlows are the most recent connection attempts this
	// quarantine refused, as the agents reported them, newest first and
	// at most MaxBlockedFlows, kept for forensics.
	// +optional
	// +kubebuilder:validation:MaxItems=50
	// +listType=atomic
	BlockedFlows []QuarantineFlow `json:"blockedFlows,omitempty"`
	// BlockedFlowsTotal counts every refused attempt recorded, including
	// those no longer in BlockedFlows.
	// +optional
	BlockedFlowsTotal int64 `json:"blockedFlowsTotal,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Quarantine isolates pods at the highest precedence, with a forensics
// allow-list, an expiry and an audit trail.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=qt
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Pod",type=string,JSONPath=`.spec.podName`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.spec.reason`
// +kubebuilder:printcolumn:name="Enforced",type=date,JSONPath=`.status.enforcedAt`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Quarantine struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   QuarantineSpec   `json:"spec"`
	Status QuarantineStatus `json:"status,omitempty"`
}

// QuarantineList is a list of Quarantines.
// +kubebuilder:object:root=true
type QuarantineList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Quarantine `json:"items"`
}

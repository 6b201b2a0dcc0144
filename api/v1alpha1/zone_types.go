package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ZoneMode says how a zone's admin-tier and baseline denials act.
// +kubebuilder:validation:Enum=Enforce;Audit;Learn
type ZoneMode string

const (
	// ZoneModeEnforce drops what the zone denies.
	ZoneModeEnforce ZoneMode = "Enforce"
	// ZoneModeAudit reports what the zone would deny as AUDIT verdicts and
	// lets the flow go on to the NetworkPolicy tier.
	ZoneModeAudit ZoneMode = "Audit"
	// ZoneModeLearn acts as Audit and also records every flow of the
	// zone's members for suggestions.
	ZoneModeLearn ZoneMode = "Learn"
)

// IntraZonePosture is the baseline for traffic between two members of one
// zone.
// +kubebuilder:validation:Enum=Allow;Deny
type IntraZonePosture string

const (
	IntraZoneAllow IntraZonePosture = "Allow"
	IntraZoneDeny  IntraZonePosture = "Deny"
)

// ZonePods chooses pods by namespace and pod labels. Both selectors must
// match. An empty selector matches everything; an absent one too.
type ZonePods struct {
	// NamespaceSelector chooses namespaces by label.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// PodSelector chooses pods by label within those namespaces.
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
}

// ZoneNetwork is one external network: a CIDR minus exceptions.
// +kubebuilder:validation:XValidation:rule="isCIDR(self.cidr)",message="cidr must be a valid CIDR such as 192.0.2.0/24",fieldPath=".cidr"
// +kubebuilder:validation:XValidation:rule="!has(self.except) || !isCIDR(self.cidr) || self.except.all(e, isCIDR(e) && cidr(self.cidr).containsCIDR(e))",message="every except entry must be a valid CIDR inside cidr",fieldPath=".except"
type ZoneNetwork struct {
	// CIDR is an IPv4 or IPv6 prefix.
	// +kubebuilder:validation:MaxLength=43
	CIDR string `json:"cidr"`
	// Except lists prefixes inside CIDR that are not part of the zone.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=43
	Except []string `json:"except,omitempty"`
}

// ZoneSpec declares a zone's members and posture.
// +kubebuilder:validation:XValidation:rule="has(self.pods) != has(self.networks)",message="exactly one of pods or networks must be set"
type ZoneSpec struct {
	// Pods makes the zone a set of pods.
	// +optional
	Pods *ZonePods `json:"pods,omitempty"`
	// Networks makes the zone a set of external networks.
	// +optional
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	Networks []ZoneNetwork `json:"networks,omitempty"`
	// Mode is Enforce, Audit or Learn.
	// +kubebuilder:default=Enforce
	// +optional
	Mode ZoneMode `json:"mode,omitempty"`
	// IntraZone is the baseline posture between two members: Allow or
	// Deny. A NetworkPolicy that selects a member overrides it for that
	// member's side, as upstream baseline policies are overridden.
	// +kubebuilder:default=Allow
	// +optional
	IntraZone IntraZonePosture `json:"intraZone,omitempty"`
}

// ZoneStatus reports membership and enforcement.
type ZoneStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Members is the number of pods (or networks) in the zone.
	Members int32 `json:"members"`
	// Realization tells how many nodes enforce the zone.
	// +optional
	Realization *Realization `json:"realization,omitempty"`
	// Conditions: Accepted, Enforced, Conflict.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Zone is a named, exclusive set of endpoints: pods or external networks.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=zn
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Intra",type=string,JSONPath=`.spec.intraZone`
// +kubebuilder:printcolumn:name="Members",type=integer,JSONPath=`.status.members`
// +kubebuilder:printcolumn:name="Enforced",type=integer,JSONPath=`.status.realization.nodesEnforced`
// +kubebuilder:printcolumn:name="Nodes",type=integer,JSONPath=`.status.realization.nodesDesired`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name != 'unzoned' && self.metadata.name != 'world'",message="metadata.name: 'unzoned' and 'world' are reserved peer names"
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="metadata.name must be at most 63 characters"
type Zone struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ZoneSpec   `json:"spec"`
	Status ZoneStatus `json:"status,omitempty"`
}

// ZoneList is a list of Zones.
// +kubebuilder:object:root=true
type ZoneList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Zone `json:"items"`
}

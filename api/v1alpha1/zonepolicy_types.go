package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ZonePolicyAction is what a matching ZonePolicy does to a flow.
// +kubebuilder:validation:Enum=Accept;Deny;Pass
type ZonePolicyAction string

const (
	// ActionAccept allows the flow; no lower tier is consulted.
	ActionAccept ZonePolicyAction = "Accept"
	// ActionDeny drops the flow (or audits it, in Audit and Learn modes).
	ActionDeny ZonePolicyAction = "Deny"
	// ActionPass skips the rest of the admin tier, including the zone
	// boundary, and hands the flow to NetworkPolicy.
	ActionPass ZonePolicyAction = "Pass"
)

// ZonePolicySpec judges flows from one set of zones to another.
// +kubebuilder:validation:XValidation:rule="!has(self.auditOnly) || !self.auditOnly || self.action == 'Deny'",message="auditOnly is only meaningful with action Deny",fieldPath=".auditOnly"
type ZonePolicySpec struct {
	// Priority orders ZonePolicies in the admin tier: lower first, ties
	// broken by name.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	Priority int32 `json:"priority"`
	// From lists the source zones. The reserved names "unzoned" and
	// "world" name pods in no zone and addresses outside every zone.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +listType=set
	From []string `json:"from"`
	// To lists the destination zones, with the same reserved names.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +listType=set
	To []string `json:"to"`
	// Ports limits the policy to these destination ports. Absent or empty
	// means every port and protocol.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Ports []PolicyPort `json:"ports,omitempty"`
	// Action is Accept, Deny or Pass.
	Action ZonePolicyAction `json:"action"`
	// AuditOnly turns this Deny into an AUDIT verdict: the flow is
	// reported and goes on as if passed.
	// +optional
	AuditOnly bool `json:"auditOnly,omitempty"`
	// Log reports every flow this policy decides as a flow record.
	// +optional
	Log bool `json:"log,omitempty"`
}

// ZonePolicyStatus reports acceptance and enforcement.
type ZonePolicyStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	Realization *Realization `json:"realization,omitempty"`
	// Conditions: Accepted, Enforced.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ZonePolicy allows, denies or passes flows between zones in the admin tier.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=zp
// +kubebuilder:printcolumn:name="Priority",type=integer,JSONPath=`.spec.priority`
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=`.spec.action`
// +kubebuilder:printcolumn:name="From",type=string,JSONPath=`.spec.from`
// +kubebuilder:printcolumn:name="To",type=string,JSONPath=`.spec.to`
// +kubebuilder:printcolumn:name="Enforced",type=integer,JSONPath=`.status.realization.nodesEnforced`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ZonePolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ZonePolicySpec   `json:"spec"`
	Status ZonePolicyStatus `json:"status,omitempty"`
}

// ZonePolicyList is a list of ZonePolicies.
// +kubebuilder:object:root=true
type ZonePolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ZonePolicy `json:"items"`
}

package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SuggestionState is where a suggestion is in review.
// +kubebuilder:validation:Enum=Learning;Stable;Staged;Enforced;Rejected
type SuggestionState string

const (
	SuggestionLearning SuggestionState = "Learning"
	SuggestionStable   SuggestionState = "Stable"
	SuggestionStaged   SuggestionState = "Staged"
	SuggestionEnforced SuggestionState = "Enforced"
	SuggestionRejected SuggestionState = "Rejected"
)

// SuggestionScope is what a suggestion covers: one zone or one namespace.
// +kubebuilder:validation:XValidation:rule="has(self.zone) != has(self.namespace)",message="exactly one of zone or namespace must be set"
type SuggestionScope struct {
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Zone string `json:"zone,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace,omitempty"`
}

// Evidence is what was observed behind one suggested rule.
type Evidence struct {
	// Flows is the number of flows (connections) observed.
	Flows int64 `json:"flows"`
	// Packets is the number of packets observed.
	// +optional
	Packets int64 `json:"packets,omitempty"`
	// SourcePods is the number of distinct source pods.
	// +optional
	SourcePods int32       `json:"sourcePods,omitempty"`
	FirstSeen  metav1.Time `json:"firstSeen"`
	LastSeen   metav1.Time `json:"lastSeen"`
	// Samples are a few example flows, as "src -> dst proto/port".
	// +optional
	// +kubebuilder:validation:MaxItems=10
	Samples []string `json:"samples,omitempty"`
}

// SuggestedRule is one rule of a suggestion with its evidence.
type SuggestedRule struct {
	// Policy names the suggested object this rule belongs to, as
	// Kind/namespace/name.
	Policy string `json:"policy"`
	// Description says in words what the rule allows.
	Description string   `json:"description"`
	Evidence    Evidence `json:"evidence"`
}

// PolicySuggestionSpec holds suggested policies for one scope.
type PolicySuggestionSpec struct {
	Scope SuggestionScope `json:"scope"`
	// State is Learning, Stable, Staged, Enforced or Rejected.
	// +kubebuilder:default=Learning
	// +optional
	State SuggestionState `json:"state,omitempty"`
	// ZonePolicies is the suggested ZonePolicy YAML, one multi-document
	// string.
	// +optional
	ZonePolicies string `json:"zonePolicies,omitempty"`
	// NetworkPolicies is the suggested NetworkPolicy YAML, one
	// multi-document string.
	// +optional
	NetworkPolicies string `json:"networkPolicies,omitempty"`
	// Rules carries the evidence for each suggested rule.
	// +optional
	// +kubebuilder:validation:MaxItems=1000
	Rules []SuggestedRule `json:"rules,omitempty"`
}

// PolicySuggestionStatus reports the suggestion's life.
type PolicySuggestionStatus struct {
	// LastChange is when the suggestion last gained a rule.
	// +optional
	LastChange *metav1.Time `json:"lastChange,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// PolicySuggestion is what learning mode proposes for a zone or namespace.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=psug
// +kubebuilder:printcolumn:name="Zone",type=string,JSONPath=`.spec.scope.zone`
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.spec.scope.namespace`
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.spec.state`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type PolicySuggestion struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   PolicySuggestionSpec   `json:"spec"`
	Status PolicySuggestionStatus `json:"status,omitempty"`
}

// PolicySuggestionList is a list of PolicySuggestions.
// +kubebuilder:object:root=true
type PolicySuggestionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PolicySuggestion `json:"items"`
}

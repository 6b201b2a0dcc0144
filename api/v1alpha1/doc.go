// Package v1alpha1 holds the segmentation.bulkhead.dev/v1alpha1 API: Zone,
// ZonePolicy, Quarantine and PolicySuggestion.
//
// Every field that a schema can check is validated at admission with CEL or
// OpenAPI rules, so an invalid object never reaches the engine. The exact
// semantics of these objects are written down in docs/policy-model.md.
//
// +kubebuilder:object:generate=true
// +groupName=segmentation.bulkhead.dev
package v1alpha1

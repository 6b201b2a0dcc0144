package suggest

import (
	"bytes"
	"fmt"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// Spec renders the suggestion as a PolicySuggestion spec.
func (s *Suggestion) Spec() (v1alpha1.PolicySuggestionSpec, error) {
	spec := v1alpha1.PolicySuggestionSpec{Scope: s.Scope, State: s.State, Rules: s.Rules}
	var err error
	zps := make([]any, len(s.ZonePolicies))
	for i := range s.ZonePolicies {
		zps[i] = &s.ZonePolicies[i]
	}
	if spec.ZonePolicies, err = MarshalDocs(zps); err != nil {
		return spec, fmt.Errorf("rendering zone policies: %w", err)
	}
	nps := make([]any, len(s.NetworkPolicies))
	for i := range s.NetworkPolicies {
		nps[i] = &s.NetworkPolicies[i]
	}
	if spec.NetworkPolicies, err = MarshalDocs(nps); err != nil {
		return spec, fmt.Errorf("rendering network policies: %w", err)
	}
	if len(spec.Rules) > 1000 {
		spec.Rules = spec.Rules[:1000]
	}
	return spec, nil
}

// MarshalDocs renders objects as one multi-document YAML string, without
// status and empty creation timestamps.
func MarshalDocs(objs []any) (string, error) {
	var b strings.Builder
	for i, o := range objs {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return "", err
		}
		delete(u, "status")
		if md, ok := u["metadata"].(map[string]any); ok {
			delete(md, "creationTimestamp")
		}
		y, err := yaml.Marshal(u)
		if err != nil {
			return "", err
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(y)
	}
	return b.String(), nil
}

// splitDocs splits multi-document YAML into its non-empty documents.
func splitDocs(s string) [][]byte {
	var out [][]byte
	for _, d := range bytes.Split([]byte("\n"+s), []byte("\n---")) {
		if len(bytes.TrimSpace(d)) > 0 {
			out = append(out, d)
		}
	}
	return out
}

// ParseZonePolicies reads a spec.zonePolicies string back.
func ParseZonePolicies(s string) ([]v1alpha1.ZonePolicy, error) {
	var out []v1alpha1.ZonePolicy
	for i, d := range splitDocs(s) {
		var zp v1alpha1.ZonePolicy
		if err := yaml.UnmarshalStrict(d, &zp); err != nil {
			return nil, fmt.Errorf("spec.zonePolicies: document %d: %w", i+1, err)
		}
		if zp.Kind != "ZonePolicy" || zp.Name == "" {
			return nil, fmt.Errorf("spec.zonePolicies: document %d: not a named ZonePolicy (kind %q)", i+1, zp.Kind)
		}
		out = append(out, zp)
	}
	return out, nil
}

// ParseNetworkPolicies reads a spec.networkPolicies string back.
func ParseNetworkPolicies(s string) ([]networkingv1.NetworkPolicy, error) {
	var out []networkingv1.NetworkPolicy
	for i, d := range splitDocs(s) {
		var np networkingv1.NetworkPolicy
		if err := yaml.UnmarshalStrict(d, &np); err != nil {
			return nil, fmt.Errorf("spec.networkPolicies: document %d: %w", i+1, err)
		}
		if np.Kind != "NetworkPolicy" || np.Name == "" || np.Namespace == "" {
			return nil, fmt.Errorf("spec.networkPolicies: document %d: not a NetworkPolicy with namespace and name (kind %q)", i+1, np.Kind)
		}
		out = append(out, np)
	}
	return out, nil
}

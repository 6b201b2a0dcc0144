// Package scenario loads cluster objects for offline analysis: Namespaces,
// Pods, NetworkPolicies, Zones, ZonePolicies and Quarantines from
// multi-document YAML or JSON files and directories (Load, LoadPaths), or
// live from an API server (LoadLive), and feeds them to a policy.Engine
// (Scenario.Engine).
//
// Errors name the file, the document and object, and the field, e.g.
// `s.yaml: document 3 (NetworkPolicy default/web): spec.ingress[0].from[1].ipBlock.cidr: invalid CIDR "10.0.0/8"`.
// Other kinds are skipped with a warning. Namespaces that objects use but
// no document declares are created implicitly, with the label
// kubernetes.io/metadata.name, as the API server would.
package scenario

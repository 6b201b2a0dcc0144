// Package suggest turns learned workload-level flow edges
// (api/v1alpha1 FlowEdge) and a snapshot of the live world into
// least-privilege policy suggestions.
//
// It is pure Go: no API client, no kernel. The caller (the suggestion
// controller, tests, tools) gathers edges and live pods and reads the
// result.
//
// Invariants:
//   - Output is deterministic: the same edges and world, in any order,
//     give byte-identical YAML and evidence.
//   - A pod selector is only suggested when, checked against the live
//     pods of its namespace, it selects exactly the pods of the observed
//     workload. It is the smallest such subset of the workload's stable
//     labels; when no label set is exact the workload is left out and a
//     Problem says why. It is never widened to the whole namespace.
//   - Ports are server ports only; a port is given by name when every
//     live destination pod declares a container port of that number,
//     protocol and name.
//   - DNS to kube-dns gets one dedicated egress rule per client
//     workload (UDP and TCP 53); kube-dns itself gets no suggested policy.
//   - Both directions: egress on the client's NetworkPolicy, ingress on
//     the server's. Peers outside the pods are ipBlock CIDRs.
//   - Cross-zone edges become ZonePolicies with action Pass, limited to
//     the observed ports, so the zone boundary opens only where traffic
//     was seen and the NetworkPolicy tier makes the workload-precise
//     decision.
package suggest

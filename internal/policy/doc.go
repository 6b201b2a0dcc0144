// Package policy is Bulkhead's policy engine: a pure, in-memory model of
// namespaces, pods, NetworkPolicies, Zones, ZonePolicies and Quarantines
// that answers three questions:
//
//   - the verdict for any flow, with the trail of tiers and the deciding
//     rule (Evaluate, Matrix);
//   - the compiled per-node intermediate representation that the
//     dataplane enforces (NodePolicy, see internal/ir);
//   - status facts for the controller (ZoneStatus, QuarantinedPods,
//     ObjectNodes).
//
// The semantics are those of docs/policy-model.md. Evaluate implements them
// directly, flow by flow; NodePolicy compiles them into per-endpoint chains.
// The two are independent implementations and the tests hold them to the
// invariant that, for every flow between two pods, Evaluate allows the flow
// iff the source's egress chain and the destination's ingress chain both
// allow it (ir.NodePolicy.Evaluate).
//
// The engine imports no Kubernetes client, netlink, nftables or eBPF code.
// It is not safe for concurrent use: callers serialize all calls. Updates
// are incremental: a change marks the endpoints and address sets it touches,
// and the next NodePolicy or TakeDirtyNodes call recompiles only those.
package policy

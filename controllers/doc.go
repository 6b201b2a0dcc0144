// Package controllers is the bulkhead controller: it watches Zones,
// ZonePolicies, Quarantines, NetworkPolicies, Pods, Namespaces and Nodes,
// feeds them incrementally into the policy engine, publishes every node's
// compiled policy to the stream hub (internal/stream), and, on the leader
// only, turns agents' acks into status conditions, realization and events.
//
// Model owns the engine and serializes every call to it under one mutex;
// informer handlers mutate it and kick a debounced publisher. The
// per-node view is computed from the watched objects alone, so every
// replica serves the same view (with its own epoch). No per-pod or
// per-node object is written to the API server.
package controllers

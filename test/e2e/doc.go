// Package e2e runs the whole product in the local lab — a real
// kube-apiserver, the real controller, one real agent per node, pods as
// network namespaces — and requires the reachability matrix measured with
// real packets to equal `bulkhead analyze --kubeconfig` on the objects read
// back from the lab's API server.
//
// The scenarios are the engine's own (internal/policy/testdata/scenarios,
// whose expected matrices are written by hand), so a scenario checks the
// engine against the hand-written matrix there, and the datapath against
// the engine here.
package e2e

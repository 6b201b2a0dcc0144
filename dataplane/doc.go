// Package dataplane defines the interface between the agent and the kernel
// backends that enforce a node's policy: nftables, eBPF tc, and an
// in-memory fake for tests. The backends live in sub-packages; the agent
// loop that feeds them lives in dataplane/agent.
package dataplane

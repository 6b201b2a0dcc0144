// Package nftables is the nftables dataplane backend. It enforces an
// ir.NodePolicy in one inet table that it owns (default "bulkhead") in
// one network namespace, and never reads or changes any other table.
//
// Two base chains on the forward hook dispatch packets through verdict
// maps: "egress" (priority 0) on the source address to the sending
// endpoint's egress chain, "ingress" (priority 10) on the destination
// address to the receiving endpoint's ingress chain. Each starts with
// "ct state established,related accept" and "ct state invalid drop", so
// only new connections are judged; an accept ends only its own base chain,
// so both sides of a same-node flow are judged, and a drop is final.
// Endpoint chains jump tier chains in order and end with accept (the
// default allow). Address sets are interval sets, one per family, shared
// by every rule that names them.
//
// Every Sync is one netlink transaction: a full rebuild (first Sync, after
// a failure, after drift, or for a large change) or a delta of set
// elements and per-endpoint chain rewrites. Chain and set names derive
// from hashes of endpoint and set names, so they are stable across
// rebuilds and restarts. docs/dataplane-nftables.md describes the layout.
package nftables

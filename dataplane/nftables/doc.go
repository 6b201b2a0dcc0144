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
// Each endpoint direction and family has one chain (directions no tier
// restricts share "ep-open"): the tiers in order, then accept (the
// default allow). Consecutive tiers form runs compiled into one
// concatenated interval verdict map keyed by peer address . l4proto .
// dport, whose elements are the first-match resolution of the run's
// rules, where a Pass or no match in a tier leaves the packet to the next
// (plus a peer . l4proto fallback when rules match protocols without
// ports), so a packet's cost does not grow with the rule count. A tier
// whose first rule matches everything is one rule. Logged drops go to a
// drop-log data map per run whose rule sets the packet mark to the rule
// number, logs to nflog and drops; logged accepts and audits jump to
// shared action chains, one per rule and direction, through data-less
// sets.
//
// Every Sync is one netlink transaction: a full rebuild (first Sync, after
// a failure, after drift, or for a large change) or a delta of set
// elements and per-endpoint chain rewrites. Chain and set names derive
// from hashes of endpoint and set names, so they are stable across
// rebuilds and restarts. docs/dataplane-nftables.md describes the layout.
package nftables

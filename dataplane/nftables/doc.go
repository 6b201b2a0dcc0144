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
// default allow). Consecutive tiers form runs whose rules are resolved
// first-match into cells keyed by peer address . l4proto . dport (plus a
// peer . l4proto fallback when rules match protocols without ports),
// where a Pass or no match in a tier leaves the packet to the next, so a
// packet's cost does not grow with the rule count. The cells go to sets
// and maps by verdict: accepts and unlogged drops to sets without data
// whose rule carries the verdict, logged drops to a drop-log data map
// whose rule sets the packet mark to the rule number, logs to nflog and
// drops, audits and logged accepts to sets whose rule jumps to a shared
// action chain. Narrow pieces of the address space (a few pod addresses)
// go to hash maps as single keys, wider ones to interval (pipapo) maps.
// The addresses in none of a run's sets (the background: everyone
// outside a zone) have no elements: the run's members are in guard sets,
// and the background's cells are looked up behind a guard miss, or are
// one rule. A tier whose first rule matches everything is one rule.
//
// Every Sync is one netlink transaction: a full rebuild (first Sync, after
// a failure, after drift, or for a large change) or a delta of set
// elements and per-endpoint chain rewrites. Chain and set names derive
// from hashes of endpoint and set names, so they are stable across
// rebuilds and restarts. docs/dataplane-nftables.md describes the layout.
package nftables

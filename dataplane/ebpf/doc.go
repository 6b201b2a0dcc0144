// Package ebpf is the eBPF tc dataplane backend: it enforces an
// ir.NodePolicy with the programs of bpf/policy.c attached (TCX, or
// clsact filters where TCX is missing) to the node-side interface of every
// local endpoint, found by route lookup from the endpoint's IPs in the
// node namespace (routed veths).
//
// It owns the pin directory Options.PinDir: the maps under <PinDir>/<layout
// version>/ and the TCX links under <PinDir>/links/. Everything it
// programs is derived from the NodePolicy in Go: identities are the
// equivalence classes of addresses over all address sets, and the whole
// tier walk of every (endpoint, direction, identity, protocol) is compiled
// into port-prefix entries of one LPM trie, so the datapath does two
// lookups per new connection whatever the policy's size, and none for
// packets of known connections (its own LRU conntrack map).
//
// Invariants: the identity and policy maps are double-buffered and a
// packet reads the buffer index once, so it never sees a half-written
// policy; the inactive buffer is written completely before the index
// flips. Close leaves programs, links and maps in force; Uninstall removes
// them. Interfaces, programs and filters it did not create are never
// changed.
package ebpf

// Package conntrack cuts established connections that a new policy no
// longer allows, by deleting their connection-tracking entries in a
// node's network namespace. It judges each entry with the policy's
// reference semantics (ir.NodePolicy.Evaluate), so every dataplane
// backend that relies on the kernel's conntrack can share it. It deletes
// only entries whose original source or destination is an address of one
// of the endpoints it is asked about; it never touches other entries.
//
// The kernel tracks a namespace's connections only while some hook there
// uses conntrack (an nft ct expression, an iptables conntrack match, or
// a BPF program calling the conntrack helpers). In a namespace without
// one there is nothing to list and Revoke deletes nothing.
package conntrack

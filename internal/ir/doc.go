// Package ir defines the per-node intermediate representation that the
// policy engine compiles and that every dataplane backend enforces.
//
// A NodePolicy lists the node's local endpoints and, for each endpoint and
// direction, an ordered list of tiers. The datapath evaluates a new
// connection against the tiers in order; inside a tier the first matching
// rule decides:
//
//   - Accept: the connection is allowed; nothing below is consulted.
//   - Deny:   the connection is dropped; nothing below is consulted.
//   - Pass:   the rest of this tier is skipped; evaluation goes on with the
//     next tier.
//   - Audit:  as Pass, and the connection is marked AUDIT. A marked
//     connection that is finally allowed is reported with verdict AUDIT.
//
// A tier in which no rule matches hands the connection to the next tier.
// After the last tier the connection is allowed (Kubernetes' default).
// Replies of an allowed connection are allowed by connection tracking.
//
// The IR is the full contract between engine and backends: it carries
// resolved addresses and numeric ports only, never selectors or names.
// Everything is sorted so that equal policies compare equal.
package ir

// Package stream is the controller→agent policy channel: a gRPC
// bidirectional stream (streampb) that serves every agent its node's
// compiled policy as a snapshot followed by minimal deltas.
//
// It owns the wire form of the IR (convert.go is the one conversion layer),
// the delta computation (Diff/Apply), the controller side (Hub keeps the
// per-node published policy and generation, Server authenticates agents
// with TokenReview and serves only the token's node) and the agent side
// (Dial, Session).
//
// Invariants: within one epoch (a random id per Hub) every node's
// generation only grows; every Watch starts with a snapshot; a delta names
// the generation it applies to, so a receiver can detect a gap.
package stream

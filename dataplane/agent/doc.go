// Package agent is the per-node agent loop: it keeps a Watch open to a
// controller (failing over between addresses with backoff), rebuilds the
// node's full desired ir.NodePolicy from the snapshot and deltas it
// receives, enforces it with one dataplane.Dataplane, acks every
// generation (or reports the error), resyncs periodically to repair
// drift, and persists the last applied (epoch, generation) in its state
// directory.
//
// Invariants: nothing is written to the kernel before the first snapshot
// of a session has arrived; within an epoch an older or equal generation
// is never applied; a delta whose base is not the generation the agent
// holds, or a delta of a new epoch, ends the session so the next one
// starts with a snapshot; when no controller is reachable the last policy
// stays in force and is still resynced.
//
// NewBackend is the one place that chooses a backend.
package agent

package dataplane

import (
	"context"
	"errors"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// ErrNotSupported is wrapped by errors from backends that cannot run on
// this kernel or platform.
var ErrNotSupported = errors.New("not supported")

// Dataplane enforces one node's policy in the kernel.
//
// Sync makes the kernel enforce desired, which becomes the backend's
// current state once Sync returns nil. The contract:
//
//   - Declarative and idempotent: Sync with the same policy twice changes
//     nothing the second time, and a Sync after drift (someone edited the
//     backend's kernel objects) repairs it.
//   - Atomic: a connection is judged either by the old policy or by the
//     new one, never by a mix. A failed Sync leaves the previous policy in
//     force and returns an error; the backend's current state is then
//     unknown and the next Sync rebuilds everything it owns.
//   - Incremental: when the previous Sync succeeded, a small change of
//     policy is applied as a small kernel transaction, not a rebuild.
//   - Ownership: a backend touches only kernel objects it created (its nft
//     table, its BPF programs, maps, links and pins). Other tables,
//     programs and routes are never read for decisions nor changed.
//   - Revocation: for endpoints with CutConnections set, established
//     connections that desired no longer allows are cut (their
//     connection-tracking state is deleted) before Sync returns.
//   - Persistence: kernel state outlives the process. Close releases
//     handles and leaves enforcement in place; only Uninstall removes it.
type Dataplane interface {
	// Name is the backend's name, e.g. "nftables" or "ebpf".
	Name() string
	// Sync enforces desired; see the type's documentation.
	Sync(ctx context.Context, desired *ir.NodePolicy) error
	// Close releases the backend's handles. Enforcement stays in force.
	Close() error
	// Uninstall removes every kernel object the backend owns.
	Uninstall(ctx context.Context) error
}

// Package fake is an in-memory Dataplane for tests. It records every
// policy it was asked to enforce and can be told to fail.
package fake

import (
	"context"
	"sync"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// Backend records synced policies in memory.
type Backend struct {
	mu      sync.Mutex
	current *ir.NodePolicy
	syncs   int
	// FailWith, when set, is returned by Sync instead of applying.
	FailWith error
}

var _ dataplane.Dataplane = (*Backend)(nil)

// Name implements dataplane.Dataplane.
func (b *Backend) Name() string { return "fake" }

// Sync implements dataplane.Dataplane.
func (b *Backend) Sync(_ context.Context, desired *ir.NodePolicy) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.FailWith != nil {
		return b.FailWith
	}
	b.current = desired
	b.syncs++
	return nil
}

// Close implements dataplane.Dataplane.
func (b *Backend) Close() error { return nil }

// Uninstall implements dataplane.Dataplane.
func (b *Backend) Uninstall(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.current = nil
	return nil
}

// Current returns the last policy synced, or nil.
func (b *Backend) Current() *ir.NodePolicy {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.current
}

// Syncs returns how many syncs succeeded.
func (b *Backend) Syncs() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.syncs
}

//go:build !linux

package ebpf

import (
	"context"
	"fmt"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// Backend is unavailable off Linux.
type Backend struct{}

var _ dataplane.Dataplane = (*Backend)(nil)

// Detect returns an error wrapping dataplane.ErrNotSupported.
func Detect() error { return fmt.Errorf("ebpf backend: %w: needs Linux", dataplane.ErrNotSupported) }

// New returns an error wrapping dataplane.ErrNotSupported.
func New(Options) (*Backend, error) { return nil, Detect() }

func (b *Backend) Name() string                               { return "ebpf" }
func (b *Backend) Sync(context.Context, *ir.NodePolicy) error { return dataplane.ErrNotSupported }
func (b *Backend) Close() error                               { return nil }
func (b *Backend) Uninstall(context.Context) error            { return dataplane.ErrNotSupported }
func (b *Backend) Stats() Stats                               { return Stats{} }

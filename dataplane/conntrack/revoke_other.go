//go:build !linux

package conntrack

import (
	"context"
	"fmt"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// Result reports what Revoke did.
type Result struct{ Checked, Deleted int }

// Revoke is not supported off Linux.
func Revoke(context.Context, string, *ir.NodePolicy, []string) (Result, error) {
	return Result{}, fmt.Errorf("conntrack: %w", dataplane.ErrNotSupported)
}

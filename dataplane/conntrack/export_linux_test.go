//go:build linux

package conntrack

import (
	"context"
	"net/netip"

	"github.com/bulkhead-dev/bulkhead/dataplane"
)

// WatchSmall is Watch with a tiny event socket buffer and queue, so tests
// can make the kernel drop events; overflowed runs after each recovery.
func WatchSmall(ctx context.Context, nsPath string, local func(netip.Addr) bool, fn func(dataplane.FlowRecord), overflowed func()) error {
	return watch(ctx, nsPath, false, local, fn, watchOptions{readBuffer: 4096, queue: 1, overflowed: overflowed})
}

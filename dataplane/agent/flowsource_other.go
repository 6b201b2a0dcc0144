//go:build !linux

package agent

import (
	"fmt"
	"net/netip"

	"github.com/bulkhead-dev/bulkhead/dataplane"
)

// NFLogGroup is the nflog group the agent's nftables backend logs to.
const NFLogGroup = 7

// NewFlowSource is not supported off Linux.
func NewFlowSource(d dataplane.Dataplane, _ string, _ func(netip.Addr) bool) (FlowSource, error) {
	return nil, fmt.Errorf("backend %s: %w: no flow source", d.Name(), dataplane.ErrNotSupported)
}

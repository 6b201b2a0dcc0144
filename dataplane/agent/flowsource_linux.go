//go:build linux

package agent

import (
	"context"
	"fmt"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/dataplane/ebpf"
	"github.com/bulkhead-dev/bulkhead/dataplane/nftables"
)

// NFLogGroup is the nflog group the agent's nftables backend logs to.
const NFLogGroup = 7

// NewFlowSource returns the flow source of a backend built by NewBackend.
// The nftables backend's records come from its nflog group in netnsPath;
// the eBPF backend's from its ring buffer.
func NewFlowSource(d dataplane.Dataplane, netnsPath string) (FlowSource, error) {
	switch b := d.(type) {
	case *nftables.Backend:
		r, err := nftables.NewFlowReader(netnsPath, NFLogGroup, b.RuleID)
		if err != nil {
			return nil, fmt.Errorf("opening nftables flow source: %w", err)
		}
		return func(ctx context.Context, fn func(dataplane.FlowRecord)) error {
			defer r.Close()
			return r.Run(ctx, fn)
		}, nil
	case *ebpf.Backend:
		r, err := b.NewFlowReader()
		if err != nil {
			return nil, fmt.Errorf("opening eBPF flow source: %w", err)
		}
		return func(ctx context.Context, fn func(dataplane.FlowRecord)) error {
			defer r.Close()
			return r.Run(ctx, fn)
		}, nil
	}
	return nil, fmt.Errorf("backend %s: %w: no flow source", d.Name(), dataplane.ErrNotSupported)
}

//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/dataplane/conntrack"
	"github.com/bulkhead-dev/bulkhead/dataplane/ebpf"
	"github.com/bulkhead-dev/bulkhead/dataplane/nftables"
)

// NFLogGroup is the nflog group the agent's nftables backend logs to.
const NFLogGroup = 7

// NewFlowSource returns the flow source of a backend built by NewBackend.
// The nftables backend's records come from its nflog group in netnsPath
// (drops, audits, logged accepts) and from conntrack in netnsPath
// (accepted connections: a snapshot of the existing ones at start, then
// NEW events, and DESTROY events with each connection's final counters);
// local tells conntrack which addresses are local pods. It turns on
// net.netfilter.nf_conntrack_acct in netnsPath, without which conntrack
// keeps no counters. The
// eBPF backend's come from its own connection tracking (a snapshot of
// the tracked connections at start, so long-lived connections opened
// before the agent started are learned too) and then from its ring
// buffer, which reports new and dropped connections itself. The reader
// opens before the snapshot, so a connection that starts in between is
// reported at least once (perhaps twice), never missed.
func NewFlowSource(d dataplane.Dataplane, netnsPath string, local func(netip.Addr) bool) (FlowSource, error) {
	switch b := d.(type) {
	case *nftables.Backend:
		if err := conntrack.EnableAccounting(netnsPath); err != nil {
			return nil, fmt.Errorf("opening nftables flow source: %w", err)
		}
		r, err := nftables.NewFlowReader(netnsPath, NFLogGroup, b.RuleID)
		if err != nil {
			return nil, fmt.Errorf("opening nftables flow source: %w", err)
		}
		return func(ctx context.Context, fn func(dataplane.FlowRecord)) error {
			defer r.Close()
			var mu sync.Mutex
			safe := func(rec dataplane.FlowRecord) { mu.Lock(); fn(rec); mu.Unlock() }
			// Either half ending ends the source, so its error is
			// reported at once rather than when the agent stops.
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ctErr := make(chan error, 1)
			go func() {
				err := conntrack.Watch(ctx, netnsPath, true, local, safe)
				cancel()
				ctErr <- err
			}()
			err := r.Run(ctx, safe)
			cancel()
			return errors.Join(err, <-ctErr)
		}, nil
	case *ebpf.Backend:
		r, err := b.NewFlowReader()
		if err != nil {
			return nil, fmt.Errorf("opening eBPF flow source: %w", err)
		}
		return func(ctx context.Context, fn func(dataplane.FlowRecord)) error {
			defer r.Close()
			existing, err := b.Snapshot()
			if err != nil {
				return fmt.Errorf("snapshotting eBPF connection tracking: %w", err)
			}
			for _, rec := range existing {
				fn(rec)
			}
			return r.Run(ctx, fn)
		}, nil
	}
	return nil, fmt.Errorf("backend %s: %w: no flow source", d.Name(), dataplane.ErrNotSupported)
}

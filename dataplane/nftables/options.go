package nftables

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/go-logr/logr"
)

// DefaultTableName is the inet table the backend owns unless told otherwise.
const DefaultTableName = "bulkhead"

// Options configure a Backend.
type Options struct {
	// NetNSPath is the network namespace to program, e.g.
	// /run/netns/node-1. Empty means the caller's current namespace.
	NetNSPath string
	// TableName is the inet table the backend owns; DefaultTableName
	// when empty.
	TableName string
	// Logger is used when a Sync's context carries no logger.
	Logger logr.Logger
	// NFLogGroup is the nflog group that drops and audit verdicts are
	// logged to (see FlowReader).
	NFLogGroup uint16
	// DisableNFLog leaves log statements out of the ruleset.
	DisableNFLog bool
	// DisableConnectionCutting turns revocation off: established
	// connections survive a change that no longer allows them, even for
	// endpoints with CutConnections set.
	DisableConnectionCutting bool
	// AlwaysVerify makes every unchanged Sync compare the whole kernel
	// table, instead of only when the namespace's nftables generation
	// moved since the backend's last commit.
	AlwaysVerify bool
	// MaxDeltaOps is the largest delta (in netlink objects) applied as a
	// delta; larger changes rebuild the table. Default 20000.
	MaxDeltaOps int
}

var tableNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,63}$`)

func (o *Options) setDefaults() error {
	if o.TableName == "" {
		o.TableName = DefaultTableName
	}
	if !tableNameRE.MatchString(o.TableName) {
		return fmt.Errorf("options: table name %q: want letters, digits, '_' or '-', starting with a letter, at most 64 characters", o.TableName)
	}
	if o.MaxDeltaOps < 0 {
		return errors.New("options: MaxDeltaOps must not be negative")
	}
	if o.MaxDeltaOps == 0 {
		o.MaxDeltaOps = 20000
	}
	if o.Logger.GetSink() == nil {
		o.Logger = logr.Discard()
	}
	return nil
}

// Stats counts the backend's transactions.
type Stats struct {
	// Rebuilds, Deltas and NoOps count successful Syncs by kind.
	Rebuilds, Deltas, NoOps int
	// DriftRepairs counts rebuilds caused by a kernel table that differed
	// from the applied state.
	DriftRepairs int
	// Adopted counts first Syncs that found the kernel table already
	// equal to the desired state (e.g. after an agent restart) and wrote
	// nothing; they also count as NoOps.
	Adopted int
	// GenerationHits counts unchanged Syncs that skipped the full
	// Verify because no transaction was committed in the namespace since
	// the backend's own last one.
	GenerationHits int
	// Failures counts failed transactions.
	Failures int
	// LastOps is the number of objects (table, sets, elements, chains,
	// rules) in the last transaction; LastDuration its time.
	LastOps      int
	LastDuration time.Duration
	// LastCommit is the part of LastDuration spent in the kernel
	// commit: from sending the batch to its last ack.
	LastCommit time.Duration
	// LastCompile is the time the last Sync took to turn the policy
	// into the desired table state, before LastDuration.
	LastCompile time.Duration
	// ConnectionsCut counts conntrack entries deleted by revocation.
	ConnectionsCut int
}

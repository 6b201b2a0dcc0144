package ebpf

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"time"

	"github.com/go-logr/logr"
)

// DefaultPinRoot is where pin directories live unless Options.PinDir says
// otherwise.
const DefaultPinRoot = "/sys/fs/bpf/bulkhead"

// LayoutVersion names the layout of the pinned maps. It is part of the
// maps' pin directory, so an upgrade that changes a map's layout loads
// fresh maps beside the old ones, moves the links to the new programs and
// then removes the old maps (see Backend.Sync).
const LayoutVersion = "v1"

// AttachMode chooses how programs are attached.
type AttachMode string

const (
	// AttachAuto uses TCX and falls back to clsact filters when the
	// kernel has no TCX.
	AttachAuto AttachMode = ""
	// AttachTCX uses TCX links only.
	AttachTCX AttachMode = "tcx"
	// AttachClsact uses classic clsact direct-action filters only.
	AttachClsact AttachMode = "clsact"
)

// Options configure a Backend.
type Options struct {
	// NetNSPath is the node network namespace to program, e.g.
	// /run/netns/node-1. Empty means the caller's current namespace.
	NetNSPath string
	// PinDir holds the backend's pinned maps and links. Default:
	// /sys/fs/bpf/bulkhead/<netns name>, or .../host when NetNSPath is
	// empty.
	PinDir string
	// Logger is used when a Sync's context carries no logger.
	Logger logr.Logger
	// Attach chooses TCX, clsact, or TCX with clsact fallback (default).
	Attach AttachMode
	// DisableFlowEvents stops the datapath from emitting new-flow and
	// drop events into the ring buffer.
	DisableFlowEvents bool
	// DisableConnectionCutting turns revocation off: established
	// connections survive a change that no longer allows them, even for
	// endpoints with CutConnections set.
	DisableConnectionCutting bool
	// ServiceCIDRs are the Service (ClusterIP) ranges whose DNAT runs in
	// the node's netfilter (kube-proxy, or the lab's service proxy).
	// Egress to them is judged after DNAT, with the backend as the peer;
	// see docs/dataplane-ebpf.md#services. Empty: none (egress to a
	// ClusterIP is judged against the ClusterIP itself).
	ServiceCIDRs []netip.Prefix
	// ServiceUplinks names the node interfaces that carry traffic to
	// remote Service backends; they get the post-DNAT egress program.
	// Empty with ServiceCIDRs set: every interface of the node namespace
	// that is up and neither loopback nor an endpoint's.
	ServiceUplinks []string
}

var pinNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,200}$`)

func (o *Options) setDefaults() error {
	if o.PinDir == "" {
		name := "host"
		if o.NetNSPath != "" {
			name = filepath.Base(o.NetNSPath)
		}
		if !pinNameRE.MatchString(name) {
			return fmt.Errorf("options: netns name %q cannot name a pin directory; set PinDir", name)
		}
		o.PinDir = filepath.Join(DefaultPinRoot, name)
	}
	if !filepath.IsAbs(o.PinDir) {
		return fmt.Errorf("options: PinDir %q: want an absolute path on a bpffs", o.PinDir)
	}
	switch o.Attach {
	case AttachAuto, AttachTCX, AttachClsact:
	default:
		return fmt.Errorf("options: Attach %q: want %q, %q or empty", o.Attach, AttachTCX, AttachClsact)
	}
	for _, p := range o.ServiceCIDRs {
		if !p.IsValid() || p.Addr().Is4In6() {
			return fmt.Errorf("options: ServiceCIDRs: %v is not a valid IPv4 or IPv6 prefix", p)
		}
	}
	if len(o.ServiceCIDRs) > 64 {
		return fmt.Errorf("options: ServiceCIDRs: %d prefixes, at most 64", len(o.ServiceCIDRs))
	}
	if len(o.ServiceUplinks) > 0 && len(o.ServiceCIDRs) == 0 {
		return fmt.Errorf("options: ServiceUplinks %v without ServiceCIDRs", o.ServiceUplinks)
	}
	if o.Logger.GetSink() == nil {
		o.Logger = logr.Discard()
	}
	return nil
}

// Stats counts the backend's work.
type Stats struct {
	// Syncs counts successful Syncs; NoOps those that wrote nothing.
	Syncs, NoOps int
	// DriftRepairs counts Syncs that found the active buffer differing
	// from the applied state and rewrote it.
	DriftRepairs int
	// Flips counts buffer swaps.
	Flips int
	// LastWrites is the number of map entries written or deleted by the
	// last Sync, LastDuration its time.
	LastWrites   int
	LastDuration time.Duration
	// LastCompile is the Go compile time of the last Sync; LastMapWrite
	// the time it spent diffing against and writing the inactive buffer
	// and flipping (0 when nothing changed). Neither counts the wait for
	// a buffer that was active less than 10 ms ago.
	LastCompile, LastMapWrite time.Duration
	// IdentEntries, ClassEntries and PolicyEntries are the sizes of the
	// active buffer's maps.
	IdentEntries, ClassEntries, PolicyEntries int
	// LastRouteLookups counts the route lookups of endpoint addresses
	// the last Sync made (the others were answered from the cache that
	// the main table's host routes revalidate).
	LastRouteLookups int
	// ConnectionsCut counts conntrack entries deleted by revocation.
	ConnectionsCut int
	// Attached counts interfaces with programs attached; Clsact is set
	// when they use clsact filters instead of TCX.
	Attached int
	Clsact   bool
}

// ProgramStats is the kernel's run-time accounting of one datapath
// program: how often it ran and the time it spent. The kernel counts only
// while BPF statistics are enabled (kernel.bpf_stats_enabled, or
// cilium/ebpf's EnableStats).
type ProgramStats struct {
	Name     string
	RunCount uint64
	Runtime  time.Duration
}

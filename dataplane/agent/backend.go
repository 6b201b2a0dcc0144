package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/go-logr/logr"

	"github.com/bulkhead-dev/bulkhead/dataplane"
)

// BackendConfig is what a Factory needs to build a backend.
type BackendConfig struct {
	// NetNSPath is the network namespace to program ("" for the agent's
	// own).
	NetNSPath string
	// ServiceCIDRs are the ClusterIP ranges the node's netfilter DNATs
	// (kube-proxy or the lab's service proxy). The eBPF backend judges
	// egress to them after DNAT, with the backend as the peer; the
	// nftables backend needs nothing, as its forward hook already runs
	// after DNAT.
	ServiceCIDRs []netip.Prefix
	// ServiceUplinks are the node interfaces that carry traffic to remote
	// Service backends (eBPF; empty: every interface that is up and not
	// an endpoint's).
	ServiceUplinks []string
}

// Factory builds a backend from c.
type Factory func(c BackendConfig, log logr.Logger) (dataplane.Dataplane, error)

// backends are the kernel backends compiled in, by name. Files named
// backend_<name>.go register them.
var backends = map[string]Factory{}

// autoOrder is the preference of "auto": the first backend that builds
// wins.
var autoOrder = []string{"nftables", "ebpf"}

// Backends returns the names NewBackend accepts.
func Backends() []string {
	names := []string{"auto"}
	for n := range backends {
		names = append(names, n)
	}
	sort.Strings(names[1:])
	return names
}

// NewBackend returns the named backend ("nftables", "ebpf" or "auto").
// An unknown name is an error; a known one this build or kernel cannot run
// returns an error wrapping dataplane.ErrNotSupported.
func NewBackend(name string, c BackendConfig, log logr.Logger) (dataplane.Dataplane, error) {
	if name == "auto" {
		var errs []error
		for _, n := range autoOrder {
			f, ok := backends[n]
			if !ok {
				errs = append(errs, fmt.Errorf("%s: %w: not compiled in", n, dataplane.ErrNotSupported))
				continue
			}
			b, err := f(c, log)
			if err == nil {
				log.Info("selected backend", "backend", n)
				return b, nil
			}
			errs = append(errs, fmt.Errorf("%s: %w", n, err))
		}
		return nil, fmt.Errorf("no backend can run here: %w", errors.Join(errs...))
	}
	f, ok := backends[name]
	if !ok {
		for _, n := range autoOrder {
			if n == name {
				return nil, fmt.Errorf("backend %q: %w: not compiled into this agent", name, dataplane.ErrNotSupported)
			}
		}
		return nil, fmt.Errorf("unknown backend %q (known: %s)", name, strings.Join(Backends(), ", "))
	}
	b, err := f(c, log)
	if err != nil {
		return nil, fmt.Errorf("starting backend %s: %w", name, err)
	}
	return b, nil
}

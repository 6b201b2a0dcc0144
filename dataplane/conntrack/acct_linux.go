//go:build linux

package conntrack

import (
	"fmt"
	"os"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// acctSysctl is net.netfilter.nf_conntrack_acct, a per-namespace setting:
// without it conntrack keeps no packet and byte counters.
const acctSysctl = "/proc/sys/net/netfilter/nf_conntrack_acct"

// EnableAccounting turns on net.netfilter.nf_conntrack_acct in the
// namespace at nsPath (current when empty), so that connections created
// from now on carry packet and byte counters. Connections that already
// exist keep none.
func EnableAccounting(nsPath string) error {
	err := inNamespace(nsPath, func() error {
		on, err := readAccounting()
		if err != nil || on {
			return err
		}
		return os.WriteFile(acctSysctl, []byte("1\n"), 0o644)
	})
	if err != nil {
		return fmt.Errorf("enabling conntrack accounting: %w", err)
	}
	return nil
}

// Accounting reports whether net.netfilter.nf_conntrack_acct is on in the
// namespace at nsPath (current when empty).
func Accounting(nsPath string) (bool, error) {
	var on bool
	err := inNamespace(nsPath, func() (err error) {
		on, err = readAccounting()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("reading conntrack accounting: %w", err)
	}
	return on, nil
}

func readAccounting() (bool, error) {
	b, err := os.ReadFile(acctSysctl)
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) == "1", nil
}

// inNamespace runs fn in the namespace at nsPath, or in the current one
// when nsPath is empty.
func inNamespace(nsPath string, fn func() error) error {
	if nsPath == "" {
		return fn()
	}
	return netns.Do(nsPath, fn)
}

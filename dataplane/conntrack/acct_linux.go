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
// exist keep none. It reports whether the setting was off before.
func EnableAccounting(nsPath string) (changed bool, err error) {
	set := func() error {
		b, err := os.ReadFile(acctSysctl)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(b)) == "1" {
			return nil
		}
		changed = true
		return os.WriteFile(acctSysctl, []byte("1\n"), 0o644)
	}
	if nsPath == "" {
		err = set()
	} else {
		err = netns.Do(nsPath, set)
	}
	if err != nil {
		return false, fmt.Errorf("enabling conntrack accounting: %w", err)
	}
	return changed, nil
}

// Accounting reports whether net.netfilter.nf_conntrack_acct is on in the
// namespace at nsPath (current when empty).
func Accounting(nsPath string) (bool, error) {
	var on bool
	get := func() error {
		b, err := os.ReadFile(acctSysctl)
		if err != nil {
			return err
		}
		on = strings.TrimSpace(string(b)) == "1"
		return nil
	}
	var err error
	if nsPath == "" {
		err = get()
	} else {
		err = netns.Do(nsPath, get)
	}
	if err != nil {
		return false, fmt.Errorf("reading conntrack accounting: %w", err)
	}
	return on, nil
}

//go:build linux

package dptest

import (
	"net"
	"testing"

	cebpf "github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// TCXPrograms returns how many programs are attached to the TCX ingress
// and egress hooks of interface ifname in the namespace at nsPath (the
// eBPF backend attaches two per pod interface; none are left after it
// uninstalls). It fails the test if the interface or the query fails.
func TCXPrograms(t testing.TB, nsPath, ifname string) int {
	t.Helper()
	n := 0
	err := netns.Do(nsPath, func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		for _, a := range []cebpf.AttachType{cebpf.AttachTCXIngress, cebpf.AttachTCXEgress} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: ifc.Index, Attach: a})
			if err != nil {
				return err
			}
			n += len(res.Programs)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("querying TCX programs on %s: %v", ifname, err)
	}
	return n
}

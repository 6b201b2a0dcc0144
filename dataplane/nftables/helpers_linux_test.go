//go:build linux

package nftables

import (
	"context"
	"errors"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// newBackend opens a backend on nsPath and uninstalls it when the test
// ends.
func newBackend(t testing.TB, nsPath string, opts Options) *Backend {
	t.Helper()
	opts.NetNSPath = nsPath
	if opts.NFLogGroup == 0 {
		opts.NFLogGroup = 7
	}
	b, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Uninstall(context.Background()); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Uninstall: %v", err)
		}
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

func newDataplane(t *testing.T, nsPath string) dataplane.Dataplane {
	return newBackend(t, nsPath, Options{})
}

// nsOnly creates a bare namespace for tests that need no pods.
func nsOnly(t testing.TB) string {
	t.Helper()
	testenv.RequireRoot(t)
	name := "bh-nft-" + randHex()
	if err := netns.Create(name); err != nil {
		t.Fatalf("creating netns: %v", err)
	}
	t.Cleanup(func() {
		if err := netns.Delete(name); err != nil {
			t.Errorf("deleting netns: %v", err)
		}
	})
	return netns.Path(name)
}

// nft runs the nft command inside the namespace.
func nft(t testing.TB, nsPath string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		testenv.SkipOrFail(t, "nft not installed")
	}
	name := nsPath[strings.LastIndex(nsPath, "/")+1:]
	out, err := exec.Command("ip", append([]string{"netns", "exec", name, "nft"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nft %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// scatteredZone returns n pod addresses 10.<b>.x.y, four apart, 60 to a
// /24 (a zone's members), and every webEvery-th of them (its web pods).
func scatteredZone(n, webEvery int, b byte) (zone, web []netip.Prefix) {
	for i := 0; i < n; i++ {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, b, byte(i / 60), byte(i%60*4 + 1)}), 32)
		zone = append(zone, p)
		if i%webEvery == 0 {
			web = append(web, p)
		}
	}
	return zone, web
}

// zoneBoundaryTiers are the tiers of a zoned endpoint: a Pass for the
// members of set zone, a Deny for everyone outside it, then the
// NetworkPolicy npID accepting set web on TCP 8080.
func zoneBoundaryTiers(zone, web, npID string) []ir.Tier {
	return []ir.Tier{
		dptest.Tier(ir.TierAdmin,
			dptest.Rule("ZonePolicy/in-zone", zone, false, ir.Pass),
			ir.Rule{ID: "ZoneBoundary/z", Peer: ir.PeerMatch{Set: zone, Negate: true}, Action: ir.Deny}),
		dptest.Tier(ir.TierNetworkPolicy, dptest.Rule(npID, web, false, ir.Accept, ir.PortRange{Protocol: ir.TCP, From: 8080, To: 8080})),
	}
}

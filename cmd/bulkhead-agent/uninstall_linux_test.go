//go:build linux

package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/dataplane/agent"
	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/dataplane/ebpf"
	"github.com/bulkhead-dev/bulkhead/dataplane/nftables"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

func nftIn(t *testing.T, nsPath string, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + nsPath, "nft"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nft %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestUninstallFlagRemovesOnlyTheBackendsState installs a denying policy
// with one backend instance, closes it as a stopping agent would, then runs
// the agent with --uninstall (a fresh backend instance, as in a one-shot
// Job) twice.
func TestUninstallFlagRemovesOnlyTheBackendsState(t *testing.T) {
	testenv.RequireRoot(t)
	for _, name := range []string{"nftables", "ebpf"} {
		t.Run(name, func(t *testing.T) {
			if name == "ebpf" {
				if err := ebpf.Detect(); err != nil {
					testenv.SkipOrFail(t, err.Error())
				}
			}
			ctx := context.Background()
			topo := dptest.NewTopology(t, 2)
			a, b := topo.Pods[0], topo.Pods[1]
			nftIn(t, topo.NodePath, "add", "table", "inet", "other")
			nftIn(t, topo.NodePath, "add", "chain", "inet", "other", "c", "{ type filter hook forward priority 5 ; }")
			nftIn(t, topo.NodePath, "add", "rule", "inet", "other", "c", "meta", "mark", "0x42", "accept")
			other := nftIn(t, topo.NodePath, "list", "table", "inet", "other")

			var dp dataplane.Dataplane
			var pinDir string
			var err error
			if name == "ebpf" {
				var be *ebpf.Backend
				be, err = ebpf.New(ebpf.Options{NetNSPath: topo.NodePath})
				if be != nil {
					pinDir = be.PinDir()
					t.Cleanup(func() {
						_ = os.RemoveAll(pinDir)
						_ = os.Remove(filepath.Dir(pinDir)) // the shared root, when empty
					})
				}
				dp = be
			} else {
				dp, err = nftables.New(nftables.Options{NetNSPath: topo.NodePath})
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if err := dp.Sync(ctx, topo.DenyAToB()); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			if err := dptest.ProbeTCP(a, b.IP4, 80); err == nil {
				t.Fatal("a -> b allowed while denied")
			}
			if err := dp.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if name == "ebpf" {
				if pins, _ := filepath.Glob(filepath.Join(pinDir, "*", "*")); len(pins) == 0 {
					t.Fatalf("no pins under %s before --uninstall", pinDir)
				}
			} else if !strings.Contains(nftIn(t, topo.NodePath, "list", "tables"), "bulkhead") {
				t.Fatal("no bulkhead table before --uninstall")
			}

			for i := 1; i <= 2; i++ {
				o := agent.Options{Uninstall: true, Backend: name, NetNS: topo.NodePath}
				if err := o.Validate(); err != nil {
					t.Fatalf("run %d: Validate: %v", i, err)
				}
				if err := agent.Main(ctx, o); err != nil {
					t.Fatalf("run %d: --uninstall: %v", i, err)
				}
			}

			if tables := nftIn(t, topo.NodePath, "list", "tables"); strings.Contains(tables, "bulkhead") {
				t.Errorf("bulkhead table left after --uninstall:\n%s", tables)
			}
			if diff := cmp.Diff(other, nftIn(t, topo.NodePath, "list", "table", "inet", "other")); diff != "" {
				t.Errorf("table inet other changed (-before +after):\n%s", diff)
			}
			if name == "ebpf" {
				for _, p := range topo.Pods {
					if n := dptest.TCXPrograms(t, topo.NodePath, p.HostIf); n != 0 {
						t.Errorf("%d programs still attached to %s after --uninstall", n, p.HostIf)
					}
				}
				if _, err := os.Stat(pinDir); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("pin directory %s still there after --uninstall (%v)", pinDir, err)
				}
			}
			if err := dptest.ProbeTCP(a, b.IP4, 80); err != nil {
				t.Errorf("a -> b still denied after --uninstall: %v", err)
			}
		})
	}
}

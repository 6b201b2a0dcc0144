package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// TestAgentProgramsNftablesInItsNamespace runs the agent with the real
// nftables backend against a namespace the test creates: nothing is
// written before the snapshot, then the table holds the served endpoint.
func TestAgentProgramsNftablesInItsNamespace(t *testing.T) {
	testenv.RequireRoot(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "bh-agent-" + hex.EncodeToString(b[:])
	if err := netns.Create(name); err != nil {
		testenv.SkipOrFail(t, "cannot create a network namespace: "+err.Error())
	}
	t.Cleanup(func() {
		if err := netns.Delete(name); err != nil {
			t.Logf("deleting namespace %s: %v", name, err)
		}
	})
	nft := func() string {
		out, err := exec.Command("ip", "netns", "exec", name, "nft", "list", "ruleset").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list ruleset: %v: %s", err, out)
		}
		return string(out)
	}
	be, err := NewBackend("nftables", BackendConfig{NetNSPath: netns.Path(name)}, testr.New(t))
	if err != nil {
		t.Fatalf("NewBackend(nftables): %v", err)
	}
	t.Cleanup(func() {
		_ = be.Uninstall(context.Background())
		_ = be.Close()
	})
	bundle := newBundle(t)
	c := startController(t, "", bundle)
	a, _ := runAgent(t, Config{Node: "node-a", Controllers: []string{c.addr}, Dial: dialer(bundle, "token-a"), Backend: be})
	time.Sleep(300 * time.Millisecond) // the agent is connected and waiting for its snapshot
	if got := nft(); strings.Contains(got, "bulkhead") {
		t.Fatalf("the agent wrote to the kernel before any snapshot:\n%s", got)
	}
	c.hub.Publish("node-a", policy("node-a", "ns/p0"))
	c.hub.MarkReady()
	eventually(t, "the snapshot to be enforced", a.Ready)
	got := nft()
	if !strings.Contains(got, "table inet bulkhead") || !strings.Contains(got, "10.244.1.10") {
		t.Fatalf("ruleset after the snapshot lacks the table or the endpoint address:\n%s", got)
	}
}

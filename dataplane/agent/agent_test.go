package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/bulkhead-dev/bulkhead/dataplane/fake"
	"github.com/bulkhead-dev/bulkhead/internal/certs"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/stream"
)

var cmpIR = cmp.Options{cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), cmpopts.EquateEmpty()}

type controller struct {
	t      *testing.T
	addr   string
	bundle *certs.Bundle
	hub    *stream.Hub
	stop   func()
}

var auth = stream.StaticAuthenticator{Agents: map[string]stream.Identity{
	"token-a": {User: "system:serviceaccount:bulkhead-system:bulkhead-agent", Node: "node-a"},
	"token-b": {User: "system:serviceaccount:bulkhead-system:bulkhead-agent", Node: "node-b"},
}}

// start serves a fresh hub (a new epoch) on addr ("" picks a port).
func startController(t *testing.T, addr string, b *certs.Bundle) *controller {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lis net.Listener
	var err error
	for i := 0; i < 50; i++ { // the old listener's port may take a moment to free
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	c := &controller{t: t, addr: lis.Addr().String(), bundle: b, hub: stream.NewHub()}
	c.stop, err = stream.Serve(lis, b, &stream.Server{Hub: c.hub, Auth: auth, Log: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)
	return c
}

func policy(node string, pods ...string) *ir.NodePolicy {
	np := &ir.NodePolicy{Node: node}
	for i, p := range pods {
		np.Endpoints = append(np.Endpoints, ir.Endpoint{
			Name: p, IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 244, 1, byte(10 + i)})},
			Ingress: ir.Chain{Tiers: []ir.Tier{{Kind: ir.TierNetworkPolicy, Rules: []ir.Rule{{ID: "NetworkPolicy/ns/np/ingress/0", Peer: ir.PeerMatch{Set: "web"}, Action: ir.Accept}}}}},
		})
	}
	np.Sets = []ir.AddressSet{{Name: "web", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}}}
	return np
}

func dialer(b *certs.Bundle, token string) Dialer {
	return func(addr string) (*grpc.ClientConn, error) {
		return stream.Dial(stream.ClientConfig{Address: addr, CAPEM: b.CACert, Token: token})
	}
}

func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newBundle(t *testing.T) *certs.Bundle {
	b, err := certs.Generate([]string{"127.0.0.1", "localhost"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func runAgent(t *testing.T, cfg Config) (*Agent, context.CancelFunc) {
	t.Helper()
	cfg.Log = testr.New(t)
	cfg.MinBackoff, cfg.MaxBackoff = 20*time.Millisecond, 100*time.Millisecond
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return a, cancel
}

func TestAgentFollowsSnapshotThenDeltas(t *testing.T) {
	b := newBundle(t)
	c := startController(t, "", b)
	c.hub.Publish("node-a", policy("node-a", "ns/p0", "ns/p1"))
	c.hub.Publish("node-b", policy("node-b", "ns/other"))
	c.hub.MarkReady()
	be := &fake.Backend{}
	dir := t.TempDir()
	a, _ := runAgent(t, Config{Node: "node-a", Controllers: []string{c.addr}, Dial: dialer(b, "token-a"), Backend: be, StateDir: dir})

	eventually(t, "the snapshot to be enforced", a.Ready)
	if d := cmp.Diff(policy("node-a", "ns/p0", "ns/p1"), be.Current(), cmpIR); d != "" {
		t.Fatalf("after snapshot (-want +got):\n%s", d)
	}
	gen := c.hub.Publish("node-a", policy("node-a", "ns/p0", "ns/p1", "ns/p2"))
	eventually(t, "the delta to be acked", func() bool { s, _ := c.hub.State("node-a"); return s.Acked == gen })
	if d := cmp.Diff(policy("node-a", "ns/p0", "ns/p1", "ns/p2"), be.Current(), cmpIR); d != "" {
		t.Fatalf("after delta (-want +got):\n%s", d)
	}
	b2, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	if want := `"generation":` + "2"; !strings.Contains(string(b2), want) || !strings.Contains(string(b2), c.hub.Epoch()) {
		t.Fatalf("state.json = %s, want epoch %s and generation 2", b2, c.hub.Epoch())
	}
}

func TestFailedSyncIsReportedAndRepairedOnResync(t *testing.T) {
	b := newBundle(t)
	c := startController(t, "", b)
	c.hub.Publish("node-a", policy("node-a", "ns/p0"))
	c.hub.MarkReady()
	be := &fake.Backend{FailWith: errors.New("nft: no space left")}
	a, _ := runAgent(t, Config{Node: "node-a", Controllers: []string{c.addr}, Dial: dialer(b, "token-a"), Backend: be})
	eventually(t, "the failure to be reported", func() bool { s, _ := c.hub.State("node-a"); return s.Err != "" })
	s, _ := c.hub.State("node-a")
	if !strings.Contains(s.Err, "no space left") || s.Acked != 0 || a.Ready() {
		t.Fatalf("state after failed sync = %+v ready=%v; want the error, nothing acked, not ready", s, a.Ready())
	}
	be.FailWith = nil
	if err := a.Resync(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the resync to be acked", func() bool { s, _ := c.hub.State("node-a"); return s.Acked == 1 && s.Err == "" })
}

func TestAgentIdentityIsEnforced(t *testing.T) {
	b := newBundle(t)
	c := startController(t, "", b)
	c.hub.Publish("node-b", policy("node-b", "ns/secret"))
	c.hub.MarkReady()
	for _, tc := range []struct {
		name, token, node string
		want              codes.Code
	}{
		{"an agent of node A asking for node B is refused", "token-a", "node-b", codes.PermissionDenied},
		{"a missing token is unauthenticated", "", "node-b", codes.Unauthenticated},
		{"a bad token is unauthenticated", "forged", "node-b", codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var conn *grpc.ClientConn
			var err error
			if tc.token != "" {
				conn, err = stream.Dial(stream.ClientConfig{Address: c.addr, CAPEM: b.CACert, Token: tc.token})
			} else {
				conn, err = grpcNoToken(c.addr, b)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			s, err := stream.Open(context.Background(), conn, tc.node, "", 0)
			if err == nil {
				var msg any
				msg, err = s.Recv()
				if err == nil {
					t.Fatalf("got %v, want %s", msg, tc.want)
				}
			}
			if status.Code(err) != tc.want {
				t.Fatalf("error %v, want code %s", err, tc.want)
			}
		})
	}
}

func TestControllerRestartStartsNewEpochWithSnapshot(t *testing.T) {
	b := newBundle(t)
	c := startController(t, "", b)
	for i := 0; i < 5; i++ { // push node-a to generation 5
		c.hub.Publish("node-a", policy("node-a", "ns/p0", "ns/p"+string(rune('a'+i))))
	}
	c.hub.MarkReady()
	be := &fake.Backend{}
	a, _ := runAgent(t, Config{Node: "node-a", Controllers: []string{c.addr}, Dial: dialer(b, "token-a"), Backend: be})
	eventually(t, "generation 5", func() bool { return a.Applied().Generation == 5 })
	old := a.Applied()

	c.stop()
	// While no controller runs, the last policy stays in force.
	time.Sleep(100 * time.Millisecond)
	if d := cmp.Diff(policy("node-a", "ns/p0", "ns/pe"), be.Current(), cmpIR); d != "" {
		t.Fatalf("policy while the controller is down (-want +got):\n%s", d)
	}
	c2 := startController(t, c.addr, b)
	c2.hub.Publish("node-a", policy("node-a", "ns/p0"))
	c2.hub.MarkReady()
	eventually(t, "the new epoch's snapshot", func() bool { return a.Applied().Epoch == c2.hub.Epoch() })
	if got := a.Applied(); got.Generation != 1 || got.Epoch == old.Epoch {
		t.Fatalf("after restart applied %+v, want generation 1 of a new epoch (old %+v)", got, old)
	}
	if d := cmp.Diff(policy("node-a", "ns/p0"), be.Current(), cmpIR); d != "" {
		t.Fatalf("after restart (-want +got):\n%s", d)
	}
}

func grpcNoToken(addr string, b *certs.Bundle) (*grpc.ClientConn, error) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b.CACert)
	return grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})))
}

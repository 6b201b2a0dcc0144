package agent

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"

	"github.com/bulkhead-dev/bulkhead/dataplane/agent/endpointapi"
	"github.com/bulkhead-dev/bulkhead/dataplane/fake"
	"github.com/bulkhead-dev/bulkhead/internal/stream"
)

type hint struct {
	Node, Pod string
	IPs       []netip.Addr
}

// serveEndpointAPI serves a's endpoint API on a socket in a temp dir
// whose path is longer than a sockaddr_un holds.
func serveEndpointAPI(t *testing.T, a *Agent) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 90))
	if err := mkdir(dir); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, endpointapi.SocketName)
	lis, err := endpointapi.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: EndpointHandler(a)}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestAdmitWaitsUntilThePodsPolicyIsEnforced(t *testing.T) {
	b := newBundle(t)
	hub := stream.NewHub()
	hub.Publish("node-a", policy("node-a", "ns/p0"))
	hub.MarkReady()
	var mu sync.Mutex
	var hints []hint
	// The controller compiles the pod only once the agent's hint
	// arrives, as it does for a pod whose status has no IPs yet.
	srv := &stream.Server{Hub: hub, Auth: auth, Log: testr.New(t), OnEndpointHint: func(node, ns, name string, ips []netip.Addr) {
		mu.Lock()
		hints = append(hints, hint{node, ns + "/" + name, ips})
		mu.Unlock()
		go func() {
			time.Sleep(100 * time.Millisecond)
			hub.Publish("node-a", policy("node-a", "ns/p0", "ns/p1"))
		}()
	}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop, err := stream.Serve(lis, b, srv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	be := &fake.Backend{}
	a, _ := runAgent(t, Config{Node: "node-a", Controllers: []string{lis.Addr().String()}, Dial: dialer(b, "token-a"), Backend: be})
	eventually(t, "the snapshot to be enforced", a.Ready)
	sock := serveEndpointAPI(t, a)

	p1 := policy("node-a", "ns/p0", "ns/p1").Endpoints[1].IPs // 10.244.1.11
	start := time.Now()
	resp, err := endpointapi.Admit(context.Background(), sock, endpointapi.Request{Namespace: "ns", Name: "p1", IPs: []string{p1[0].String()}, TimeoutSeconds: 5})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Errorf("Admit answered after %s, before the controller published the pod (100ms)", took)
	}
	if resp.Generation != 2 || resp.Epoch != hub.Epoch() {
		t.Errorf("Admit answered %+v, want generation 2 of epoch %s", resp, hub.Epoch())
	}
	if d := cmp.Diff(policy("node-a", "ns/p0", "ns/p1"), be.Current(), cmpIR); d != "" {
		t.Errorf("when Admit answered the backend did not hold the pod (-want +got):\n%s", d)
	}
	mu.Lock()
	if d := cmp.Diff([]hint{{"node-a", "ns/p1", p1}}, hints, cmpIR); d != "" {
		t.Errorf("hints the controller received (-want +got):\n%s", d)
	}
	mu.Unlock()

	// Asking again for an enforced endpoint answers at once, sending
	// no hint.
	if _, err := endpointapi.Admit(context.Background(), sock, endpointapi.Request{Namespace: "ns", Name: "p1", IPs: []string{p1[0].String()}, TimeoutSeconds: 1}); err != nil {
		t.Errorf("repeated Admit: %v", err)
	}
	mu.Lock()
	if len(hints) != 1 {
		t.Errorf("a repeated Admit of an enforced pod sent hints: %v", hints)
	}
	mu.Unlock()
}

func TestAdmitFailsClosed(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  endpointapi.Request
		want string
	}{
		{"no controller reachable: refused within the timeout", endpointapi.Request{Namespace: "ns", Name: "p", IPs: []string{"10.244.1.9"}, TimeoutSeconds: 0.3}, "no controller is connected"},
		{"a malformed address is refused naming the field", endpointapi.Request{Namespace: "ns", Name: "p", IPs: []string{"10.244.1.999"}}, "ips[0]"},
		{"an endpoint without addresses is refused", endpointapi.Request{Namespace: "ns", Name: "p"}, "at least one IP is required"},
		{"an endpoint without a name is refused", endpointapi.Request{Namespace: "ns", IPs: []string{"10.244.1.9"}}, "namespace and name are required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			dead := lis.Addr().String()
			lis.Close() // nothing listens there
			a, _ := runAgent(t, Config{Node: "node-a", Controllers: []string{dead}, Dial: dialer(newBundle(t), "token-a"), Backend: &fake.Backend{}})
			sock := serveEndpointAPI(t, a)
			start := time.Now()
			_, err = endpointapi.Admit(context.Background(), sock, tc.req)
			if !errors.Is(err, endpointapi.ErrNotAdmitted) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Admit = %v, want ErrNotAdmitted with %q", err, tc.want)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("the refusal took %s", took)
			}
		})
	}
}

func mkdir(d string) error { return os.MkdirAll(d, 0o700) }

package agent

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/dataplane/fake"
	"github.com/bulkhead-dev/bulkhead/internal/stream"
	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
)

// TestAgentReportsEdgesAndStreamsRecordsThroughTheController runs an agent
// with a scripted flow source against a real stream server: the server
// receives the interval's edge summary, and a Flows caller filtering on a
// namespace gets the matching records enriched with the local pod.
func TestAgentReportsEdgesAndStreamsRecordsThroughTheController(t *testing.T) {
	b := newBundle(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hub := stream.NewHub()
	bus := &stream.FlowBus{}
	var mu sync.Mutex
	var reports []*pb.FlowReport
	srv := &stream.Server{Hub: hub, Log: testr.New(t), FlowBus: bus,
		Auth: stream.StaticAuthenticator{Agents: auth.Agents, Users: map[string]stream.Identity{"user": {User: "alice"}}},
		OnFlows: func(node string, r *pb.FlowReport) {
			mu.Lock()
			reports = append(reports, r)
			mu.Unlock()
			for _, f := range r.GetRecords() {
				if rec, err := stream.DecodeFlow(f); err == nil {
					bus.Publish(rec)
				}
			}
		}}
	stop, err := stream.Serve(lis, b, srv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	hub.Publish("node-a", policy("node-a", "shop/web", "shop/db")) // 10.244.1.10, 10.244.1.11
	hub.MarkReady()

	// A CLI-like caller.
	conn, err := stream.Dial(stream.ClientConfig{Address: lis.Addr().String(), CAPEM: b.CACert, Token: "user"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fs, err := pb.NewPolicyStreamClient(conn).Flows(ctx, &pb.FlowsRequest{Namespace: "shop", Verdict: "dropped"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the Flows call to subscribe", func() bool { return bus.Subscribers() == 1 })

	feed := make(chan dataplane.FlowRecord, 16)
	src := func(ctx context.Context, fn func(dataplane.FlowRecord)) error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case r := <-feed:
				fn(r)
			}
		}
	}
	a, _ := runAgent(t, Config{Node: "node-a", Controllers: []string{lis.Addr().String()}, Dial: dialer(b, "token-a"), Backend: &fake.Backend{},
		Flows: src, FlowInterval: 100 * time.Millisecond})
	eventually(t, "the snapshot to be enforced", a.Ready)
	web, db, ext := netip.MustParseAddr("10.244.1.10"), netip.MustParseAddr("10.244.1.11"), netip.MustParseAddr("10.244.7.7")
	now := time.Now()
	feed <- dataplane.FlowRecord{Time: now, Verdict: "FORWARDED", Direction: "EGRESS", Src: web, Dst: db, Protocol: 6, SrcPort: 4000, DstPort: 5432}
	feed <- dataplane.FlowRecord{Time: now, Verdict: "FORWARDED", Direction: "INGRESS", Src: web, Dst: db, Protocol: 6, SrcPort: 4000, DstPort: 5432}
	feed <- dataplane.FlowRecord{Time: now, Verdict: "FORWARDED", Direction: "EGRESS", Src: web, Dst: db, Protocol: 6, SrcPort: 4001, DstPort: 5432}
	feed <- dataplane.FlowRecord{Time: now, Verdict: "DROPPED", Direction: "INGRESS", Src: ext, Dst: db, Protocol: 6, SrcPort: 999, DstPort: 22}

	got, err := fs.Recv()
	if err != nil {
		t.Fatalf("Flows: %v", err)
	}
	rec, err := stream.DecodeFlow(got)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Verdict != "DROPPED" || rec.DstPort != 22 || rec.Destination == nil || rec.Destination.Pod != "db" || rec.Destination.Namespace != "shop" || rec.Source != nil || rec.Node != "node-a" {
		t.Errorf("streamed record = %+v (dst %+v), want the drop to shop/db on node-a from an unknown source", rec, rec.Destination)
	}

	var edges []*pb.FlowEdge
	eventually(t, "a flow report with edges", func() bool {
		mu.Lock()
		defer mu.Unlock()
		edges = nil
		for _, r := range reports {
			edges = append(edges, r.GetEdges()...)
		}
		return len(edges) >= 2
	})
	conns := map[string]uint64{}
	for _, e := range edges {
		s, _ := netip.AddrFromSlice(e.GetSrc())
		conns[s.String()+">"+e.GetVerdict()] += e.GetConnections()
	}
	if conns["10.244.1.10>FORWARDED"] != 2 || conns["10.244.7.7>DROPPED"] != 1 || len(conns) != 2 {
		t.Errorf("edge connections = %v; want web->db forwarded 2 (the ingress copy not counted twice), ext->db dropped 1", conns)
	}
}

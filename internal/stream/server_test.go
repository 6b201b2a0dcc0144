package stream_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/bulkhead-dev/bulkhead/internal/certs"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/stream"
	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
)

// TestAcksDoNotWaitBehindASlowFlowPipeline blocks OnFlows on the first
// report and checks that the session's ack still reaches the hub, that
// reports beyond the queue are dropped and counted, and that the queued
// ones are handed on in order once the pipeline moves again.
func TestAcksDoNotWaitBehindASlowFlowPipeline(t *testing.T) {
	b, err := certs.Generate([]string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hub := stream.NewHub()
	release, entered := make(chan struct{}), make(chan struct{})
	got := make(chan uint64, 16)
	var dropped atomic.Int32
	srv := &stream.Server{Hub: hub, Log: testr.New(t), FlowQueue: 2,
		Auth: stream.StaticAuthenticator{Agents: map[string]stream.Identity{"token-a": {User: "agent", Node: "node-a"}}},
		OnFlows: func(_ string, r *pb.FlowReport) {
			if r.GetDropped() == 1 {
				close(entered)
				<-release // the pipeline is stuck on the first report
			}
			got <- r.GetDropped()
		},
		FlowsDropped: func(string) { dropped.Add(1) },
	}
	stop, err := stream.Serve(lis, b, srv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	gen := hub.Publish("node-a", &ir.NodePolicy{Node: "node-a"})
	hub.MarkReady()

	conn, err := stream.Dial(stream.ClientConfig{Address: lis.Addr().String(), CAPEM: b.CACert, Token: "token-a"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := stream.Open(ctx, conn, "node-a", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := sess.Recv()
	if err != nil || msg.GetSnapshot() == nil {
		t.Fatalf("first message %v, %v; want the snapshot", msg, err)
	}
	// Report 1 blocks the pipeline, 2 and 3 fill the queue, 4 and 5 are
	// dropped; the Dropped field numbers them.
	for i := uint64(1); i <= 5; i++ {
		if err := sess.Report(&pb.FlowReport{Dropped: i}); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			select {
			case <-time.After(5 * time.Second):
				t.Fatal("the first report never reached OnFlows")
			case <-entered: // taken off the queue: the next ones queue up
			}
		}
	}
	if err := sess.Ack(msg.GetEpoch(), msg.GetGeneration(), nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if st, _ := hub.State("node-a"); st.Acked >= gen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the ack sent behind a stuck flow report never reached the hub")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := dropped.Load(); n != 2 {
		t.Fatalf("%d reports counted as dropped, want 2 (queue of 2 behind a stuck one)", n)
	}
	close(release)
	for _, want := range []uint64{1, 2, 3} {
		select {
		case n := <-got:
			if n != want {
				t.Fatalf("OnFlows got report %d, want %d (in order)", n, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("report %d never reached OnFlows after the pipeline moved", want)
		}
	}
}

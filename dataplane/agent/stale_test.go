package agent

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/bulkhead-dev/bulkhead/dataplane/fake"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/stream"
	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
)

// scripted serves a fixed list of messages per session and records acks.
type scripted struct {
	pb.UnimplementedPolicyStreamServer
	sessions [][]*pb.ControllerMessage
	mu       sync.Mutex
	n        int
	acks     []string
}

func (s *scripted) Watch(st pb.PolicyStream_WatchServer) error {
	if _, err := st.Recv(); err != nil {
		return err
	}
	s.mu.Lock()
	i := s.n
	s.n++
	s.mu.Unlock()
	if i >= len(s.sessions) {
		<-st.Context().Done()
		return nil
	}
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				return
			}
			s.mu.Lock()
			a := m.GetAck()
			s.acks = append(s.acks, a.GetEpoch()+"/"+itoa(a.GetGeneration())+errSuffix(a.GetError()))
			s.mu.Unlock()
		}
	}()
	for _, m := range s.sessions[i] {
		if err := st.Send(m); err != nil {
			return err
		}
	}
	time.Sleep(200 * time.Millisecond) // let acks arrive, then end the session
	return nil
}

func itoa(g uint64) string { return string(rune('0' + g)) }

func errSuffix(e string) string {
	if e != "" {
		return " error"
	}
	return ""
}

func snap(epoch string, gen uint64, np *ir.NodePolicy) *pb.ControllerMessage {
	return &pb.ControllerMessage{Epoch: epoch, Generation: gen, Body: &pb.ControllerMessage_Snapshot{Snapshot: stream.ToProto(np)}}
}

func delta(epoch string, gen uint64, prev, next *ir.NodePolicy, base uint64) *pb.ControllerMessage {
	d := stream.Diff(prev, next)
	d.BaseGeneration = base
	return &pb.ControllerMessage{Epoch: epoch, Generation: gen, Body: &pb.ControllerMessage_Delta{Delta: d}}
}

// recording wraps the fake to keep every policy applied, in order.
type recording struct {
	*fake.Backend
	mu      sync.Mutex
	applied []int
}

func (r *recording) Sync(ctx context.Context, np *ir.NodePolicy) error {
	r.mu.Lock()
	r.applied = append(r.applied, len(np.Endpoints))
	r.mu.Unlock()
	return r.Backend.Sync(ctx, np)
}

func TestAgentNeverAppliesStaleOrUnanchoredUpdates(t *testing.T) {
	p1, p2, p3 := policy("node-a", "ns/a"), policy("node-a", "ns/a", "ns/b"), policy("node-a", "ns/a", "ns/b", "ns/c")
	srv := &scripted{sessions: [][]*pb.ControllerMessage{
		{
			snap("e1", 3, p1),
			delta("e1", 2, p1, p3, 1), // older generation: ignored
			delta("e1", 3, p1, p3, 2), // same generation: ignored
			delta("e1", 4, p1, p2, 3), // applies: 2 endpoints
		},
		{
			delta("e2", 1, p2, p3, 0), // a new epoch without a snapshot: refused, session ends
		},
		{
			snap("e1", 2, p1), // a snapshot older than held in the same epoch: refused
		},
		{
			snap("e2", 1, p3), // a new epoch's snapshot is taken even with a lower generation
		},
	}}
	b := newBundle(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tc, _ := b.TLSConfig()
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(tc)))
	pb.RegisterPolicyStreamServer(gs, srv)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)

	be := &recording{Backend: &fake.Backend{}}
	a, _ := runAgent(t, Config{Node: "node-a", Controllers: []string{lis.Addr().String()}, Dial: dialer(b, "t"), Backend: be})
	eventually(t, "epoch e2", func() bool { return a.Applied().Epoch == "e2" })
	be.mu.Lock()
	defer be.mu.Unlock()
	if d := cmp.Diff([]int{1, 2, 3}, be.applied); d != "" {
		t.Fatalf("endpoint counts of the policies synced, in order (-want +got):\n%s", d)
	}
	eventually(t, "the last ack", func() bool { srv.mu.Lock(); defer srv.mu.Unlock(); return len(srv.acks) == 3 })
	srv.mu.Lock()
	if d := cmp.Diff([]string{"e1/3", "e1/4", "e2/1"}, srv.acks); d != "" {
		t.Fatalf("acks (-want +got):\n%s", d)
	}
	srv.mu.Unlock()
	if got := a.Applied(); got != (State{Epoch: "e2", Generation: 1}) {
		t.Fatalf("applied %+v", got)
	}
	if d := cmp.Diff(p3, be.Current(), cmpIR); d != "" {
		t.Fatalf("final policy (-want +got):\n%s", d)
	}
}

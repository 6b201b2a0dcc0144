package stream

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/go-logr/logr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
)

// Server implements the PolicyStream service on top of a Hub.
type Server struct {
	pb.UnimplementedPolicyStreamServer

	Hub  *Hub
	Auth Authenticator
	Log  logr.Logger
	// StatusFunc answers Status for authorized users; nil makes Status
	// Unimplemented.
	StatusFunc func(ctx context.Context) (*pb.StatusResponse, error)
	// OnSession, when set, is told when an agent session opens (+1) and
	// closes (-1).
	OnSession func(node string, delta int)
	// OnFlows, when set, receives each FlowReport an agent sends, in
	// order, on a goroutine of the session's own: a slow flow pipeline
	// never delays the session's acks. Up to FlowQueue reports wait for
	// it; beyond that a report is dropped and counted in FlowsDropped.
	OnFlows func(node string, r *pb.FlowReport)
	// FlowQueue is the per-session backlog of reports for OnFlows
	// (default 64).
	FlowQueue int
	// FlowsDropped, when set, counts reports dropped because OnFlows
	// fell FlowQueue reports behind.
	FlowsDropped func(node string)
	// OnEndpointHint, when set, receives each EndpointHint with the
	// session's authenticated node and the parsed addresses. It runs on
	// the receive loop and must not block for long. A hint with a
	// malformed address ends the session with InvalidArgument.
	OnEndpointHint func(node, namespace, name string, ips []netip.Addr)
	// IsLeader, when set, gates Watch: while it reports false the session
	// is refused with Unavailable after authentication, so the agent moves
	// on to another controller address.
	IsLeader func() bool
	// FlowBus serves the Flows call; nil makes Flows Unimplemented.
	FlowBus *FlowBus
}

var _ pb.PolicyStreamServer = (*Server)(nil)

func bearer(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
	}
	return ""
}

func authStatus(err error) error {
	switch {
	case errors.Is(err, ErrUnauthenticated):
		return status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, ErrForbidden):
		return status.Error(codes.PermissionDenied, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

// Watch implements the stream: authenticate, read Hello, check the node,
// send a snapshot, then a delta whenever the node's policy changes, while
// recording the agent's acks in the hub.
func (s *Server) Watch(st pb.PolicyStream_WatchServer) error {
	ctx := st.Context()
	id, err := s.Auth.AuthenticateAgent(ctx, bearer(ctx))
	if err != nil {
		s.Log.Info("refused agent", "reason", err.Error())
		return authStatus(err)
	}
	first, err := st.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil || hello.GetNode() == "" {
		return status.Error(codes.InvalidArgument, "the first message must be a Hello naming the node")
	}
	log := s.Log.WithValues("node", hello.GetNode(), "user", id.User)
	if hello.GetNode() != id.Node {
		log.Info("refused hello for another node", "tokenNode", id.Node)
		return status.Errorf(codes.PermissionDenied, "token is bound to node %q, not %q", id.Node, hello.GetNode())
	}
	if s.IsLeader != nil && !s.IsLeader() {
		log.V(1).Info("refused agent: this replica is not the leader")
		return status.Error(codes.Unavailable, "this controller replica is not the leader; agents are served by the leader")
	}
	if err := s.Hub.WaitReady(ctx); err != nil {
		return status.FromContextError(err).Err()
	}
	node := id.Node
	notify, unsubscribe := s.Hub.subscribe(node)
	defer unsubscribe()
	if s.OnSession != nil {
		s.OnSession(node, 1)
		defer s.OnSession(node, -1)
	}
	log.Info("agent connected", "agentEpoch", hello.GetEpoch(), "agentGeneration", hello.GetGeneration())

	flows := s.startFlows(ctx, node, log)
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if fr := m.GetFlows(); fr != nil {
				flows(fr)
				continue
			}
			if h := m.GetEndpoint(); h != nil {
				ips, err := hintIPs(h)
				if err != nil {
					recvErr <- status.Error(codes.InvalidArgument, err.Error())
					return
				}
				log.V(1).Info("endpoint hint", "pod", h.GetNamespace()+"/"+h.GetName(), "ips", h.GetIps())
				if s.OnEndpointHint != nil {
					s.OnEndpointHint(node, h.GetNamespace(), h.GetName(), ips)
				}
				continue
			}
			a := m.GetAck()
			if a == nil {
				recvErr <- status.Error(codes.InvalidArgument, "after Hello only Acks, FlowReports and EndpointHints may be sent")
				return
			}
			if !s.Hub.Ack(node, a.GetEpoch(), a.GetGeneration(), a.GetError()) {
				log.V(1).Info("ignored ack", "epoch", a.GetEpoch(), "generation", a.GetGeneration())
			} else if a.GetError() != "" {
				log.Info("agent failed to apply", "generation", a.GetGeneration(), "error", a.GetError())
			}
		}
	}()

	gen, pol, _ := s.Hub.current(node)
	if err := st.Send(&pb.ControllerMessage{Epoch: s.Hub.Epoch(), Generation: gen, Body: &pb.ControllerMessage_Snapshot{Snapshot: ToProto(pol)}}); err != nil {
		return err
	}
	sentGen, sent := gen, pol
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			if errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
				return nil
			}
			log.V(1).Info("agent stream ended", "reason", err.Error())
			return err
		case <-notify:
		}
		gen, pol, d := s.Hub.current(node)
		if gen <= sentGen {
			continue
		}
		if gen != sentGen+1 || d == nil || d.GetBaseGeneration() != sentGen {
			d = Diff(sent, pol)
			d.BaseGeneration = sentGen
		}
		msg := &pb.ControllerMessage{Epoch: s.Hub.Epoch(), Generation: gen, Body: &pb.ControllerMessage_Delta{Delta: d}}
		if err := st.Send(msg); err != nil {
			return err
		}
		sentGen, sent = gen, pol
	}
}

// startFlows starts the session's flow goroutine, which hands reports to
// OnFlows until ctx ends, and returns the non-blocking enqueue the
// receive loop calls.
func (s *Server) startFlows(ctx context.Context, node string, log logr.Logger) func(*pb.FlowReport) {
	if s.OnFlows == nil {
		return func(*pb.FlowReport) {}
	}
	n := s.FlowQueue
	if n <= 0 {
		n = 64
	}
	q := make(chan *pb.FlowReport, n)
	go func() {
		for {
			select {
			case <-ctx.Done():
				// The session is over: hand on what it queued.
				for {
					select {
					case fr := <-q:
						s.OnFlows(node, fr)
					default:
						return
					}
				}
			case fr := <-q:
				s.OnFlows(node, fr)
			}
		}
	}()
	dropped := 0
	return func(fr *pb.FlowReport) {
		select {
		case q <- fr:
		default:
			dropped++
			if dropped == 1 || dropped%100 == 0 {
				log.Info("dropping flow reports: the flow pipeline is behind", "queued", n, "dropped", dropped)
			}
			if s.FlowsDropped != nil {
				s.FlowsDropped(node)
			}
		}
	}
}

func hintIPs(h *pb.EndpointHint) ([]netip.Addr, error) {
	key := h.GetNamespace() + "/" + h.GetName()
	if h.GetNamespace() == "" || h.GetName() == "" {
		return nil, fmt.Errorf("endpoint hint %q: namespace and name are required", key)
	}
	if len(h.GetIps()) == 0 {
		return nil, fmt.Errorf("endpoint hint %s: no ips", key)
	}
	out := make([]netip.Addr, 0, len(h.GetIps()))
	for i, s := range h.GetIps() {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("endpoint hint %s: ips[%d]: %w", key, i, err)
		}
		out = append(out, ip.Unmap())
	}
	return out, nil
}

// Status implements the CLI's status call: the caller's own token must
// pass TokenReview and a SubjectAccessReview for listing zones.
func (s *Server) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	if s.StatusFunc == nil {
		return nil, status.Error(codes.Unimplemented, "status is not served")
	}
	if _, err := s.Auth.AuthorizeUser(ctx, bearer(ctx), "list", "zones"); err != nil {
		return nil, authStatus(err)
	}
	return s.StatusFunc(ctx)
}

package stream

import (
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
)

// FlowBus fans flow records out to Flows subscribers. Each subscriber has
// a bounded buffer; records that do not fit are dropped for that
// subscriber and counted. The zero value is usable.
type FlowBus struct {
	mu      sync.Mutex
	subs    map[*flowSub]struct{}
	Dropped atomic.Uint64
}

type flowSub struct {
	filter *pb.FlowsRequest
	ch     chan dataplane.FlowRecord
}

// Subscribers is the number of open Flows calls.
func (b *FlowBus) Subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// Publish hands r to every subscriber whose filter matches.
func (b *FlowBus) Publish(r dataplane.FlowRecord) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		if !MatchFlow(s.filter, &r) {
			continue
		}
		select {
		case s.ch <- r:
		default:
			b.Dropped.Add(1)
		}
	}
}

func (b *FlowBus) subscribe(f *pb.FlowsRequest) (*flowSub, func()) {
	s := &flowSub{filter: f, ch: make(chan dataplane.FlowRecord, 1024)}
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[*flowSub]struct{}{}
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s, func() {
		b.mu.Lock()
		delete(b.subs, s)
		b.mu.Unlock()
	}
}

// MatchFlow reports whether r passes f: the verdict must equal f's (case
// insensitive), and namespace, pod and zone must match either end.
func MatchFlow(f *pb.FlowsRequest, r *dataplane.FlowRecord) bool {
	if v := f.GetVerdict(); v != "" && !strings.EqualFold(v, r.Verdict) {
		return false
	}
	if f.GetNamespace() == "" && f.GetPod() == "" && f.GetZone() == "" {
		return true
	}
	for _, ep := range []*dataplane.FlowEndpoint{r.Source, r.Destination} {
		if ep == nil {
			continue
		}
		if (f.GetNamespace() == "" || f.GetNamespace() == ep.Namespace) &&
			(f.GetPod() == "" || f.GetPod() == ep.Pod) &&
			(f.GetZone() == "" || f.GetZone() == ep.Zone) {
			return true
		}
	}
	return false
}

// DecodeFlow decodes a record of a FlowReport.
func DecodeFlow(f *pb.Flow) (dataplane.FlowRecord, error) {
	var r dataplane.FlowRecord
	err := json.Unmarshal([]byte(f.GetJson()), &r)
	return r, err
}

// EncodeFlow encodes a record for a FlowReport.
func EncodeFlow(r dataplane.FlowRecord) *pb.Flow {
	b, _ := json.Marshal(r) // a FlowRecord always encodes
	return &pb.Flow{Json: string(b)}
}

// Flows implements the CLI's flow stream: the caller's token must pass
// TokenReview and a SubjectAccessReview for listing zones. It streams
// records published to s.FlowBus after the call starts until the caller
// ends it.
func (s *Server) Flows(req *pb.FlowsRequest, st pb.PolicyStream_FlowsServer) error {
	if s.FlowBus == nil {
		return status.Error(codes.Unimplemented, "flows are not served")
	}
	ctx := st.Context()
	if _, err := s.Auth.AuthorizeUser(ctx, bearer(ctx), "list", "zones"); err != nil {
		return authStatus(err)
	}
	sub, done := s.FlowBus.subscribe(req)
	defer done()
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-sub.ch:
			if err := st.Send(EncodeFlow(r)); err != nil {
				return err
			}
		}
	}
}

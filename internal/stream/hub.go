package stream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
)

// Hub holds, for one controller instance (one epoch), every node's
// published policy and generation, the delta from the previous
// generation, and what each node's agent acknowledged. It is safe for
// concurrent use.
type Hub struct {
	epoch string
	now   func() time.Time

	mu    sync.Mutex
	nodes map[string]*nodeState
	// forgotten keeps the last generation of nodes dropped by Forget, so
	// a node that comes back continues above it: within an epoch a
	// generation number is never reused, and an agent still holding
	// the old one is never sent an "older" snapshot it must refuse.
	forgotten map[string]uint64
	ready     chan struct{}
	// memo shares set patches between the nodes' deltas (see setMemo).
	memo setMemo
	// OnAck, when set, is called (without the lock) after every ack.
	onAck func(node string)
}

const maxPublished = 1024

type pubTime struct {
	gen uint64
	at  time.Time
}

type nodeState struct {
	gen    uint64
	policy *ir.NodePolicy
	delta  *pb.Delta // from gen-1 to gen, nil when gen 1 or unknown
	// published holds when each generation newer than the acked one was
	// published, oldest first, for the lag metric. It keeps at most
	// maxPublished entries (the oldest always survives).
	published []pubTime

	subs map[chan struct{}]struct{}

	acked    uint64
	ackedAt  time.Time
	errGen   uint64
	errMsg   string
	errAt    time.Time
	sessions int
}

// NewEpoch returns a fresh random epoch id: the start time and 64 random
// bits, so ids never repeat across restarts.
func NewEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%x-%s", time.Now().Unix(), hex.EncodeToString(b[:]))
}

// NewHub returns an empty hub with a new epoch. Watches wait until
// MarkReady is called, so no agent receives a snapshot computed from a
// partial view of the cluster.
func NewHub() *Hub {
	return &Hub{epoch: NewEpoch(), now: time.Now, nodes: map[string]*nodeState{}, ready: make(chan struct{})}
}

// SetOnAck registers a callback run after every ack.
func (h *Hub) SetOnAck(f func(node string)) { h.mu.Lock(); h.onAck = f; h.mu.Unlock() }

// Epoch returns the hub's epoch.
func (h *Hub) Epoch() string { return h.epoch }

// MarkReady lets watches proceed. It is idempotent.
func (h *Hub) MarkReady() {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.ready:
	default:
		close(h.ready)
	}
}

// Ready reports whether MarkReady was called.
func (h *Hub) Ready() bool {
	select {
	case <-h.ready:
		return true
	default:
		return false
	}
}

// WaitReady blocks until MarkReady or ctx ends.
func (h *Hub) WaitReady(ctx context.Context) error {
	select {
	case <-h.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *Hub) node(name string) *nodeState {
	n := h.nodes[name]
	if n == nil {
		g := h.forgotten[name] + 1
		delete(h.forgotten, name)
		n = &nodeState{policy: &ir.NodePolicy{Node: name}, gen: g, published: []pubTime{{g, h.now()}}, subs: map[chan struct{}]struct{}{}}
		h.nodes[name] = n
	}
	return n
}

// Publish makes np the node's current policy. When it differs from the
// current one the generation grows by one and subscribers are notified;
// otherwise nothing changes. A nil np is an empty policy. np must not be
// modified afterwards. It returns the node's generation.
func (h *Hub) Publish(node string, np *ir.NodePolicy) uint64 {
	g, _ := h.PublishDelta(node, np)
	return g
}

// PublishDelta is Publish that also returns the delta from the previous
// generation: nil when the generation did not move or the node is new.
// The delta is shared with the stream; do not modify it.
func (h *Hub) PublishDelta(node string, np *ir.NodePolicy) (uint64, *pb.Delta) {
	if np == nil {
		np = &ir.NodePolicy{Node: node}
	}
	for {
		h.mu.Lock()
		n, existed := h.nodes[node]
		if !existed {
			n = h.node(node)
			n.policy = np
			h.mu.Unlock()
			return n.gen, nil
		}
		prev := n.policy
		h.mu.Unlock()
		// Diff without the lock, so acks and sessions of every node go
		// on meanwhile; then commit unless another publish of this node
		// came first, in which case diff again against that one.
		d := diff(prev, np, &h.memo)
		h.mu.Lock()
		if h.nodes[node] != n || n.policy != prev {
			h.mu.Unlock()
			continue
		}
		moved := h.commitLocked(n, np, d)
		gen := n.gen
		h.mu.Unlock()
		if !moved {
			return gen, nil
		}
		return gen, d
	}
}

// commitLocked makes np, reached by d, the node's policy under a new
// generation; it reports false, changing nothing, when d is empty.
func (h *Hub) commitLocked(n *nodeState, np *ir.NodePolicy, d *pb.Delta) bool {
	if Empty(d) {
		return false
	}
	d.BaseGeneration = n.gen
	n.gen++
	n.policy = np
	n.delta = d
	if len(n.published) >= maxPublished {
		n.published = append(n.published[:1], n.published[2:]...)
	}
	n.published = append(n.published, pubTime{n.gen, h.now()})
	for c := range n.subs {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	return true
}

// EndRound tells the hub that a round of publishes (every node a change
// touched) is over: it forgets the set changes it shared between the
// round's deltas. Skipping it costs memory (at most one older form of each
// changed set), never correctness.
func (h *Hub) EndRound() { h.memo.clear() }

// Generation returns the node's current generation (0 if never published).
func (h *Hub) Generation(node string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n := h.nodes[node]; n != nil {
		return n.gen
	}
	return 0
}

// current returns the node's generation, policy and delta from gen-1.
func (h *Hub) current(node string) (uint64, *ir.NodePolicy, *pb.Delta) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.node(node)
	return n.gen, n.policy, n.delta
}

func (h *Hub) subscribe(node string) (chan struct{}, func()) {
	c := make(chan struct{}, 1)
	h.mu.Lock()
	n := h.node(node)
	n.subs[c] = struct{}{}
	n.sessions++
	h.mu.Unlock()
	return c, func() {
		h.mu.Lock()
		delete(n.subs, c)
		n.sessions--
		h.mu.Unlock()
	}
}

// Ack records an agent's outcome for a generation of this hub's epoch.
// Acks for another epoch or for a generation never published are ignored
// and reported as false.
func (h *Hub) Ack(node, epoch string, gen uint64, errMsg string) bool {
	h.mu.Lock()
	n := h.nodes[node]
	if epoch != h.epoch || n == nil || gen > n.gen || gen == 0 {
		h.mu.Unlock()
		return false
	}
	now := h.now()
	if errMsg == "" {
		if gen > n.acked {
			n.acked, n.ackedAt = gen, now
			i := 0
			for i < len(n.published) && n.published[i].gen <= gen {
				i++
			}
			n.published = n.published[i:]
		}
		if gen >= n.errGen {
			n.errGen, n.errMsg = 0, ""
		}
	} else if gen >= n.errGen {
		n.errGen, n.errMsg, n.errAt = gen, errMsg, now
	}
	f := h.onAck
	h.mu.Unlock()
	if f != nil {
		f(node)
	}
	return true
}

// NodeState is one node's realization as the hub sees it.
type NodeState struct {
	Node string
	// Generation is the newest published generation.
	Generation uint64
	// Acked is the newest generation the agent enforced, AckedAt when.
	Acked   uint64
	AckedAt time.Time
	// ErrGeneration and Err describe the newest failure not yet
	// superseded by a successful ack of that or a later generation.
	ErrGeneration uint64
	Err           string
	// Sessions is the number of open watches for the node.
	Sessions int
	// LagSeconds is how long the oldest unacknowledged generation has
	// waited; 0 when the agent is up to date.
	LagSeconds float64
}

// State returns the node's state; ok is false for an unknown node.
func (h *Hub) State(node string) (NodeState, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.nodes[node]
	if n == nil {
		return NodeState{Node: node}, false
	}
	return h.stateLocked(node, n), true
}

func (h *Hub) stateLocked(name string, n *nodeState) NodeState {
	s := NodeState{Node: name, Generation: n.gen, Acked: n.acked, AckedAt: n.ackedAt, ErrGeneration: n.errGen, Err: n.errMsg, Sessions: n.sessions}
	if n.acked < n.gen {
		for _, p := range n.published {
			if p.gen > n.acked {
				s.LagSeconds = h.now().Sub(p.at).Seconds()
				break
			}
		}
	}
	return s
}

// States returns every node's state, sorted by node name.
func (h *Hub) States() []NodeState {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]NodeState, 0, len(h.nodes))
	for name, n := range h.nodes {
		out = append(out, h.stateLocked(name, n))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// Forget drops a node that no longer exists.
func (h *Hub) Forget(node string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n := h.nodes[node]; n != nil && len(n.subs) == 0 {
		if h.forgotten == nil {
			h.forgotten = map[string]uint64{}
		}
		h.forgotten[node] = n.gen
		delete(h.nodes, node)
	}
}

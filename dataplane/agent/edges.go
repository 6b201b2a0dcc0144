package agent

import (
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/dataplane"
)

// AddrEdge is the agent's address-level summary of every flow between two
// addresses on one server port with one verdict in an interval.
type AddrEdge struct {
	Src, Dst    netip.Addr
	Protocol    uint8
	Port        uint16
	Verdict     string
	Connections uint64
	// Packets and Bytes are the final counters (both directions) of the
	// connections that closed in the interval.
	Packets   uint64
	Bytes     uint64
	FirstSeen time.Time
	LastSeen  time.Time
}

type edgeKey struct {
	src, dst netip.Addr
	proto    uint8
	port     uint16
	verdict  string
}

// EdgeReducer folds flow records into address-level edges until Flush.
// It holds at most max edges; records of further edges are counted as
// dropped. A flow is recorded by both its egress and its ingress chain
// when both ends are local; only one of them counts. A connection counts
// once, by its first record (new or existing), not by its Closed record.
// Counters are added from every record; a Closed record (final counters)
// adds only what its connection's Existing record (counters so far) did
// not, so nothing is counted twice.
type EdgeReducer struct {
	mu      sync.Mutex
	max     int
	pending map[edgeKey]*AddrEdge
	dropped uint64
	// counted holds the counters added from Existing records of
	// connections that have not closed yet, across intervals.
	counted map[flowTuple]counters
}

type counters struct{ packets, bytes uint64 }

// maxCounted bounds EdgeReducer.counted. Past it, the counters of further
// Existing records are not added (their Closed records add all).
const maxCounted = 1 << 16

// NewEdgeReducer returns a reducer holding at most max edges (at least 1).
func NewEdgeReducer(max int) *EdgeReducer {
	if max < 1 {
		max = 1
	}
	return &EdgeReducer{max: max, pending: map[edgeKey]*AddrEdge{}, counted: map[flowTuple]counters{}}
}

// Add folds r in. It returns false when r was dropped because the
// reducer was full.
func (e *EdgeReducer) Add(r dataplane.FlowRecord, localIngress func(netip.Addr) bool) bool {
	// Ingress records of flows whose source is local were already
	// counted by the source's egress chain.
	if r.Direction == dataplane.DirectionIngress && r.Verdict == dataplane.VerdictForwarded && localIngress != nil && localIngress(r.Src) {
		return true
	}
	k := edgeKey{r.Src.Unmap(), r.Dst.Unmap(), r.Protocol, r.DstPort, r.Verdict}
	e.mu.Lock()
	defer e.mu.Unlock()
	cur, ok := e.pending[k]
	if !ok {
		if len(e.pending) >= e.max {
			e.dropped++
			return false
		}
		cur = &AddrEdge{Src: k.src, Dst: k.dst, Protocol: k.proto, Port: k.port, Verdict: k.verdict, FirstSeen: r.Time, LastSeen: r.Time}
		e.pending[k] = cur
	}
	switch t := (flowTuple{k.src, k.dst, r.SrcPort, r.DstPort, r.Protocol}); {
	case r.Closed:
		before := e.counted[t]
		delete(e.counted, t)
		if r.Packets > before.packets {
			cur.Packets += r.Packets - before.packets
		}
		if r.Bytes > before.bytes {
			cur.Bytes += r.Bytes - before.bytes
		}
	case r.Existing:
		// A repeated snapshot record of the same connection (after an
		// event overflow) adds only what grew since.
		before, again := e.counted[t]
		if !again {
			cur.Connections++
		}
		if r.Packets == 0 && r.Bytes == 0 || !again && len(e.counted) >= maxCounted {
			break
		}
		if r.Packets > before.packets {
			cur.Packets += r.Packets - before.packets
			before.packets = r.Packets
		}
		if r.Bytes > before.bytes {
			cur.Bytes += r.Bytes - before.bytes
			before.bytes = r.Bytes
		}
		e.counted[t] = before
	default:
		// New connections' records carry no counters on the nftables
		// backend; where a source sets them, no later record repeats them.
		cur.Connections++
		cur.Packets += r.Packets
		cur.Bytes += r.Bytes
	}
	if r.Time.Before(cur.FirstSeen) {
		cur.FirstSeen = r.Time
	}
	if r.Time.After(cur.LastSeen) {
		cur.LastSeen = r.Time
	}
	return true
}

// Flush returns the pending edges, sorted, and starts a new interval.
func (e *EdgeReducer) Flush() []AddrEdge {
	e.mu.Lock()
	pending := e.pending
	e.pending = map[edgeKey]*AddrEdge{}
	e.mu.Unlock()
	out := make([]AddrEdge, 0, len(pending))
	for _, v := range pending {
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if c := a.Src.Compare(b.Src); c != 0 {
			return c < 0
		}
		if c := a.Dst.Compare(b.Dst); c != 0 {
			return c < 0
		}
		if a.Protocol != b.Protocol {
			return a.Protocol < b.Protocol
		}
		if a.Port != b.Port {
			return a.Port < b.Port
		}
		return a.Verdict < b.Verdict
	})
	return out
}

// Dropped is the number of records dropped because the reducer was full.
func (e *EdgeReducer) Dropped() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dropped
}

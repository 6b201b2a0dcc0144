package agent

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/stream"
	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
)

// FlowSource reads a backend's flow records and calls fn for each until
// ctx ends (nftables.FlowReader.Run, ebpf.FlowReader.Run).
type FlowSource func(ctx context.Context, fn func(dataplane.FlowRecord)) error

// Defaults of the flow pipeline.
const (
	DefaultFlowInterval        = 5 * time.Second
	DefaultMaxPendingEdges     = 10000
	DefaultMaxRecordsPerReport = 2000
)

// flowPipe enriches records, logs them, reduces them to edges and keeps a
// bounded batch of records for the next report.
type flowPipe struct {
	node    string
	reducer *EdgeReducer
	log     *FlowLog
	maxRecs int

	local atomic.Pointer[map[netip.Addr]string] // IP -> "namespace/pod"

	mu          sync.Mutex
	recs        []*pb.Flow
	droppedRecs uint64
	// audited holds the 5-tuples of recent AUDIT records: on the
	// nftables backend an audited connection is reported once by nflog
	// (AUDIT) and again by conntrack (FORWARDED, as it was accepted);
	// the FORWARDED copy is dropped so the connection counts once, and
	// its Closed record (final counters) is reported as AUDIT.
	audited map[flowTuple]time.Time
}

type flowTuple struct {
	src, dst     netip.Addr
	sport, dport uint16
	proto        uint8
}

// auditMemory is how long an AUDIT record suppresses the FORWARDED
// record of the same connection; maxAudited bounds the memory.
const (
	auditMemory = 30 * time.Second
	maxAudited  = 20000
)

// duplicateOfAudit reports whether r is the FORWARDED copy of a
// connection already reported as AUDIT, and remembers AUDIT records.
func (p *flowPipe) duplicateOfAudit(r dataplane.FlowRecord) bool {
	k := flowTuple{r.Src.Unmap(), r.Dst.Unmap(), r.SrcPort, r.DstPort, r.Protocol}
	at := r.Time
	if at.IsZero() {
		at = time.Now()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch r.Verdict {
	case dataplane.VerdictAudit:
		if p.audited == nil {
			p.audited = map[flowTuple]time.Time{}
		}
		if len(p.audited) >= maxAudited {
			for t, seen := range p.audited {
				if at.Sub(seen) > auditMemory {
					delete(p.audited, t)
				}
			}
		}
		if len(p.audited) < maxAudited {
			p.audited[k] = at
		}
	case dataplane.VerdictForwarded:
		if seen, ok := p.audited[k]; ok && at.Sub(seen) <= auditMemory && !r.Existing && !r.Closed {
			return true
		}
	}
	return false
}

// closedAudit reports whether r is the Closed record of a connection
// reported as AUDIT in the last auditMemory: its counters belong to that
// connection's AUDIT edge.
func (p *flowPipe) closedAudit(r dataplane.FlowRecord) bool {
	if !r.Closed || r.Verdict != dataplane.VerdictForwarded {
		return false
	}
	at := r.Time
	if at.IsZero() {
		at = time.Now()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	seen, ok := p.audited[flowTuple{r.Src.Unmap(), r.Dst.Unmap(), r.SrcPort, r.DstPort, r.Protocol}]
	return ok && at.Sub(seen) <= auditMemory
}

func newFlowPipe(cfg *Config) *flowPipe {
	p := &flowPipe{node: cfg.Node, reducer: NewEdgeReducer(cfg.MaxPendingEdges), log: cfg.FlowLog, maxRecs: cfg.MaxRecordsPerReport}
	m := map[netip.Addr]string{}
	p.local.Store(&m)
	return p
}

// setEndpoints records the local endpoints of an enforced policy.
func (p *flowPipe) setEndpoints(np *ir.NodePolicy) {
	m := map[netip.Addr]string{}
	if np != nil {
		for _, ep := range np.Endpoints {
			for _, ip := range ep.IPs {
				m[ip.Unmap()] = ep.Name
			}
		}
	}
	p.local.Store(&m)
}

func (p *flowPipe) isLocal(ip netip.Addr) bool {
	_, ok := (*p.local.Load())[ip.Unmap()]
	return ok
}

// IsLocal reports whether ip is an address of an endpoint of the policy
// last enforced.
func (a *Agent) IsLocal(ip netip.Addr) bool { return a.flows.isLocal(ip) }

func (p *flowPipe) endpoint(ip netip.Addr) *dataplane.FlowEndpoint {
	name, ok := (*p.local.Load())[ip.Unmap()]
	if !ok {
		return nil
	}
	ns, pod, _ := cut(name)
	return &dataplane.FlowEndpoint{Namespace: ns, Pod: pod, Node: p.node}
}

func cut(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			return s[:i], s[i+1:], true
		}
	}
	return "", s, false
}

func (p *flowPipe) add(r dataplane.FlowRecord, m *Metrics) {
	r.Node = p.node
	if r.Source == nil {
		r.Source = p.endpoint(r.Src)
	}
	if r.Destination == nil {
		r.Destination = p.endpoint(r.Dst)
	}
	if p.duplicateOfAudit(r) {
		return
	}
	if p.closedAudit(r) {
		r.Verdict = dataplane.VerdictAudit
	}
	m.FlowRecords.WithLabelValues(r.Verdict).Inc()
	if p.log != nil {
		if err := p.log.Write(r); err != nil {
			m.FlowLogErrors.Inc()
		}
	}
	local := func(a netip.Addr) bool { _, ok := (*p.local.Load())[a.Unmap()]; return ok }
	if !p.reducer.Add(r, local) {
		m.FlowEdgesDropped.Inc()
	}
	p.mu.Lock()
	if len(p.recs) < p.maxRecs {
		p.recs = append(p.recs, stream.EncodeFlow(r))
	} else {
		p.droppedRecs++
	}
	p.mu.Unlock()
}

// report takes the interval's edges and records.
func (p *flowPipe) report() *pb.FlowReport {
	edges := p.reducer.Flush()
	p.mu.Lock()
	recs := p.recs
	p.recs = nil
	dropped := p.droppedRecs + p.reducer.Dropped()
	p.mu.Unlock()
	if len(edges) == 0 && len(recs) == 0 {
		return nil
	}
	r := &pb.FlowReport{Records: recs, Dropped: dropped}
	for _, e := range edges {
		r.Edges = append(r.Edges, &pb.FlowEdge{
			Src: e.Src.AsSlice(), Dst: e.Dst.AsSlice(), Protocol: uint32(e.Protocol), Port: uint32(e.Port),
			Verdict: e.Verdict, Connections: e.Connections, Packets: e.Packets, Bytes: e.Bytes,
			FirstSeenUnixNano: e.FirstSeen.UnixNano(), LastSeenUnixNano: e.LastSeen.UnixNano(),
		})
	}
	return r
}

// flowLoop runs the flow source and reports every interval on the open
// session. Without a session the interval's data is discarded: edges are
// summaries of recent traffic, and the controller persists what it got.
func (a *Agent) flowLoop(ctx context.Context) {
	go func() {
		if err := a.cfg.Flows(ctx, func(r dataplane.FlowRecord) { a.flows.add(r, a.m) }); err != nil && ctx.Err() == nil {
			a.log.Error(err, "flow source ended")
		}
	}()
	t := time.NewTicker(a.cfg.FlowInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rep := a.flows.report()
		if rep == nil {
			continue
		}
		a.mu.Lock()
		if a.sess != nil {
			if err := a.sess.Report(rep); err != nil {
				a.log.V(1).Info("sending flow report failed", "error", err.Error())
			} else {
				a.m.FlowReports.Inc()
			}
		}
		a.mu.Unlock()
	}
}

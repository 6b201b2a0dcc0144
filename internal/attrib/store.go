package attrib

import (
	"fmt"
	"hash/fnv"
	"sort"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// Limits of merged edges, as the FlowEdge type bounds them.
const (
	MaxSourcePods = 10
	MaxSamples    = 5
	// MaxEdgesPerSet is the most edges one FlowEdgeSet holds.
	MaxEdgesPerSet = 500
	// SetNamePrefix starts the name of every FlowEdgeSet the controller
	// owns: SetNamePrefix + two hex digits of the shard number.
	SetNamePrefix = "bulkhead-flows-"
)

// EdgeKey identifies a merged edge: both endpoints (workload or CIDR, and
// the Service addressed), protocol, server port and verdict.
func EdgeKey(e *v1alpha1.FlowEdge) string {
	return endpointKey(e.Source) + "|" + endpointKey(e.Destination) + "|" + string(e.Protocol) + "/" + fmt.Sprint(e.Port) + "|" + string(e.Verdict)
}

func endpointKey(ep v1alpha1.EdgeEndpoint) string {
	if w := ep.Workload; w != nil {
		return w.Namespace + "/" + w.Kind + "/" + w.Name + "@" + ep.Service
	}
	return ep.CIDR + "@" + ep.Service
}

// Store merges workload-level edges. It is not safe for concurrent use.
type Store struct {
	max     int
	edges   map[string]*v1alpha1.FlowEdge
	dirty   bool
	dropped int64
}

// NewStore returns a store holding at most max edges (0: no limit).
func NewStore(max int) *Store { return &Store{max: max, edges: map[string]*v1alpha1.FlowEdge{}} }

// Len is the number of merged edges.
func (s *Store) Len() int { return len(s.edges) }

// Dropped is the number of new edges refused because the store was full.
func (s *Store) Dropped() int64 { return s.dropped }

// Dirty reports whether edges changed since the last MarkClean.
func (s *Store) Dirty() bool { return s.dirty }

// MarkClean records that the current edges were persisted.
func (s *Store) MarkClean() { s.dirty = false }

// MarkDirty records that the edges must be persisted again, as after a
// failed write.
func (s *Store) MarkDirty() { s.dirty = true }

// Merge adds e: counters add up, first/last seen widen, labels and zones
// take the later edge's values, source pods and samples are kept up to
// their limits. It returns false when e is new and the store is full.
func (s *Store) Merge(e v1alpha1.FlowEdge) bool {
	k := EdgeKey(&e)
	cur, ok := s.edges[k]
	if !ok {
		if s.max > 0 && len(s.edges) >= s.max {
			s.dropped++
			return false
		}
		c := e.DeepCopy()
		c.SourcePods = capStrings(nil, c.SourcePods, MaxSourcePods)
		c.Samples = capStrings(nil, c.Samples, MaxSamples)
		if c.SourcePodCount < int32(len(c.SourcePods)) {
			c.SourcePodCount = int32(len(c.SourcePods))
		}
		s.edges[k] = c
		s.dirty = true
		return true
	}
	cur.Connections += e.Connections
	cur.Packets += e.Packets
	cur.Bytes += e.Bytes
	if e.FirstSeen.Before(&cur.FirstSeen) {
		cur.FirstSeen = e.FirstSeen
	}
	if cur.LastSeen.Before(&e.LastSeen) {
		cur.LastSeen = e.LastSeen
		refresh(&cur.Source, e.Source)
		refresh(&cur.Destination, e.Destination)
	}
	for _, p := range e.SourcePods {
		if !contains(cur.SourcePods, p) {
			// Beyond the listed ten, distinct pods cannot be told apart;
			// the count then grows with every unlisted pod reported.
			cur.SourcePodCount++
			cur.SourcePods = capStrings(cur.SourcePods, []string{p}, MaxSourcePods)
		}
	}
	cur.Samples = capStrings(cur.Samples, e.Samples, MaxSamples)
	s.dirty = true
	return true
}

func refresh(dst *v1alpha1.EdgeEndpoint, src v1alpha1.EdgeEndpoint) {
	if dst.Workload != nil && src.Workload != nil {
		dst.Workload.Labels = src.Workload.Labels
		dst.Workload.Zone = src.Workload.Zone
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func capStrings(dst, add []string, max int) []string {
	for _, s := range add {
		if len(dst) >= max {
			break
		}
		if !contains(dst, s) {
			dst = append(dst, s)
		}
	}
	return dst
}

// Edges returns copies of the merged edges sorted by key.
func (s *Store) Edges() []v1alpha1.FlowEdge {
	keys := make([]string, 0, len(s.edges))
	for k := range s.edges {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]v1alpha1.FlowEdge, 0, len(keys))
	for _, k := range keys {
		out = append(out, *s.edges[k].DeepCopy())
	}
	return out
}

// Load merges the edges of persisted sets, as after a controller restart.
// Loading does not make the store dirty.
func (s *Store) Load(sets []v1alpha1.FlowEdgeSet) {
	d := s.dirty
	for i := range sets {
		if !strings.HasPrefix(sets[i].Name, SetNamePrefix) {
			continue
		}
		for _, e := range sets[i].Spec.Edges {
			s.Merge(e)
		}
	}
	s.dirty = d
}

// Shard splits edges into FlowEdgeSets of at most MaxEdgesPerSet edges.
// An edge's shard is the FNV-1a hash of its key modulo the shard count;
// the count is the smallest power of two for which no shard overflows, so
// the same edges always give the same sets, and a new edge rewrites only
// its own shard unless the count grows. Names are SetNamePrefix and the
// shard number in two or more hex digits; within a set edges are sorted
// by key. Empty shards are returned too, so that stale content is cleared.
func Shard(edges []v1alpha1.FlowEdge) []v1alpha1.FlowEdgeSet {
	keys := make([]string, len(edges))
	hashes := make([]uint32, len(edges))
	for i := range edges {
		keys[i] = EdgeKey(&edges[i])
		h := fnv.New32a()
		h.Write([]byte(keys[i]))
		hashes[i] = h.Sum32()
	}
	n := 1
	for n < len(edges)/MaxEdgesPerSet+1 {
		n *= 2
	}
	var counts []int
	for {
		counts = make([]int, n)
		over := false
		for _, h := range hashes {
			counts[h%uint32(n)]++
			if counts[h%uint32(n)] > MaxEdgesPerSet {
				over = true
			}
		}
		if !over {
			break
		}
		n *= 2
	}
	idx := make([][]int, n)
	for i, h := range hashes {
		idx[h%uint32(n)] = append(idx[h%uint32(n)], i)
	}
	sets := make([]v1alpha1.FlowEdgeSet, n)
	for sh := range sets {
		sort.Slice(idx[sh], func(a, b int) bool { return keys[idx[sh][a]] < keys[idx[sh][b]] })
		sets[sh].Name = SetName(sh)
		for _, i := range idx[sh] {
			sets[sh].Spec.Edges = append(sets[sh].Spec.Edges, *edges[i].DeepCopy())
		}
	}
	return sets
}

// SetName is the name of shard i.
func SetName(i int) string { return fmt.Sprintf("%s%02x", SetNamePrefix, i) }

// ZoneModes gives the mode of each zone by name.
type ZoneModes map[string]v1alpha1.ZoneMode

// Persisted reports whether an edge is worth persisting: every Audit or
// Dropped edge, and Forwarded edges with an endpoint in a zone in Learn or
// Audit mode. Forwarded edges between enforced or unzoned workloads are
// streamed by agents but not kept.
func (m ZoneModes) Persisted(e *v1alpha1.FlowEdge) bool {
	if e.Verdict != v1alpha1.VerdictForwarded {
		return true
	}
	for _, ep := range []v1alpha1.EdgeEndpoint{e.Source, e.Destination} {
		if ep.Workload == nil || ep.Workload.Zone == "" {
			continue
		}
		switch m[ep.Workload.Zone] {
		case v1alpha1.ZoneModeLearn, v1alpha1.ZoneModeAudit:
			return true
		}
	}
	return false
}

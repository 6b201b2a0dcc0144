package attrib

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

func edge(src, dst string, port int32, verdict v1alpha1.FlowVerdict, pod string, first, last time.Duration) v1alpha1.FlowEdge {
	return v1alpha1.FlowEdge{
		Source:         v1alpha1.EdgeEndpoint{Workload: &v1alpha1.WorkloadRef{Namespace: "ns", Kind: "Deployment", Name: src}},
		Destination:    v1alpha1.EdgeEndpoint{Workload: &v1alpha1.WorkloadRef{Namespace: "ns", Kind: "Deployment", Name: dst}},
		Protocol:       v1alpha1.ProtocolTCP,
		Port:           port,
		Verdict:        verdict,
		Connections:    1,
		Packets:        3,
		Bytes:          240,
		SourcePodCount: 1,
		SourcePods:     []string{pod},
		FirstSeen:      metav1.NewTime(t0.Add(first)),
		LastSeen:       metav1.NewTime(t0.Add(last)),
		Samples:        []string{"s-" + pod},
	}
}

func TestStoreMergesEdgesOfOneWorkloadPair(t *testing.T) {
	s := NewStore(0)
	s.Merge(edge("web", "db", 5432, v1alpha1.VerdictForwarded, "ns/web-1", 10*time.Second, 20*time.Second))
	s.Merge(edge("web", "db", 5432, v1alpha1.VerdictForwarded, "ns/web-2", 5*time.Second, 15*time.Second))
	s.Merge(edge("web", "db", 5432, v1alpha1.VerdictForwarded, "ns/web-1", 30*time.Second, 40*time.Second))
	s.Merge(edge("web", "db", 5432, v1alpha1.VerdictDropped, "ns/web-1", 0, 0))
	s.Merge(edge("web", "db", 22, v1alpha1.VerdictForwarded, "ns/web-1", 0, 0))
	got := s.Edges()
	if len(got) != 3 {
		t.Fatalf("got %d edges, want 3 (one per port and verdict): %v", len(got), got)
	}
	var fwd *v1alpha1.FlowEdge
	for i := range got {
		if got[i].Port == 5432 && got[i].Verdict == v1alpha1.VerdictForwarded {
			fwd = &got[i]
		}
	}
	if fwd == nil {
		t.Fatal("no forwarded 5432 edge")
	}
	want := edge("web", "db", 5432, v1alpha1.VerdictForwarded, "ns/web-1", 5*time.Second, 40*time.Second)
	want.Connections, want.Packets, want.Bytes = 3, 9, 720
	want.SourcePodCount, want.SourcePods = 2, []string{"ns/web-1", "ns/web-2"}
	want.Samples = []string{"s-ns/web-1", "s-ns/web-2"}
	if diff := cmp.Diff(want, *fwd); diff != "" {
		t.Errorf("merged edge (-want +got):\n%s", diff)
	}
}

func TestStoreKeepsSourcePodsAndSamplesBounded(t *testing.T) {
	s := NewStore(0)
	for i := 0; i < 25; i++ {
		s.Merge(edge("web", "db", 80, v1alpha1.VerdictForwarded, fmt.Sprintf("ns/web-%d", i), 0, 0))
	}
	e := s.Edges()[0]
	if len(e.SourcePods) != MaxSourcePods || len(e.Samples) != MaxSamples || e.SourcePodCount != 25 || e.Connections != 25 {
		t.Errorf("pods=%d samples=%d count=%d conns=%d; want %d, %d, 25, 25", len(e.SourcePods), len(e.Samples), e.SourcePodCount, e.Connections, MaxSourcePods, MaxSamples)
	}
}

func TestStoreRefusesNewEdgesWhenFullAndCountsThem(t *testing.T) {
	s := NewStore(2)
	s.Merge(edge("a", "b", 1, v1alpha1.VerdictForwarded, "p", 0, 0))
	s.Merge(edge("a", "b", 2, v1alpha1.VerdictForwarded, "p", 0, 0))
	if s.Merge(edge("a", "b", 3, v1alpha1.VerdictForwarded, "p", 0, 0)) {
		t.Error("a third edge was accepted by a store of two")
	}
	if !s.Merge(edge("a", "b", 1, v1alpha1.VerdictForwarded, "p", 0, 0)) {
		t.Error("merging into an existing edge was refused when full")
	}
	if s.Len() != 2 || s.Dropped() != 1 {
		t.Errorf("len=%d dropped=%d, want 2 and 1", s.Len(), s.Dropped())
	}
}

func TestShardIsBoundedDeterministicAndComplete(t *testing.T) {
	for _, n := range []int{0, 1, 499, 500, 501, 1700, 5000} {
		t.Run(fmt.Sprintf("%d edges", n), func(t *testing.T) {
			var edges []v1alpha1.FlowEdge
			for i := 0; i < n; i++ {
				edges = append(edges, edge(fmt.Sprintf("w%d", i%97), fmt.Sprintf("d%d", i/97), int32(i%7), v1alpha1.VerdictForwarded, "p", 0, 0))
			}
			sets := Shard(edges)
			if len(sets) == 0 || len(sets)&(len(sets)-1) != 0 {
				t.Fatalf("%d sets, want a power of two", len(sets))
			}
			total := 0
			for i, s := range sets {
				if s.Name != SetName(i) {
					t.Errorf("set %d named %q, want %q", i, s.Name, SetName(i))
				}
				if len(s.Spec.Edges) > MaxEdgesPerSet {
					t.Errorf("set %s holds %d edges, more than %d", s.Name, len(s.Spec.Edges), MaxEdgesPerSet)
				}
				total += len(s.Spec.Edges)
			}
			if total != n {
				t.Errorf("sets hold %d edges, want %d", total, n)
			}
			// Reversed input gives the same sets.
			rev := make([]v1alpha1.FlowEdge, n)
			for i := range edges {
				rev[n-1-i] = edges[i]
			}
			if diff := cmp.Diff(sets, Shard(rev)); diff != "" {
				t.Errorf("sharding depends on input order (-first +reversed):\n%s", diff)
			}
			// A loaded store gives back the same edges.
			st := NewStore(0)
			st.Load(sets)
			if st.Len() != n || st.Dirty() {
				t.Errorf("loaded %d edges (dirty %v), want %d, clean", st.Len(), st.Dirty(), n)
			}
		})
	}
}

func TestPersistedKeepsLearnAuditZonesAndNonForwardedVerdicts(t *testing.T) {
	modes := ZoneModes{"learn": v1alpha1.ZoneModeLearn, "audit": v1alpha1.ZoneModeAudit, "prod": v1alpha1.ZoneModeEnforce}
	inZone := func(v v1alpha1.FlowVerdict, srcZone, dstZone string) v1alpha1.FlowEdge {
		e := edge("a", "b", 80, v, "p", 0, 0)
		e.Source.Workload.Zone, e.Destination.Workload.Zone = srcZone, dstZone
		return e
	}
	cidr := edge("a", "b", 80, v1alpha1.VerdictForwarded, "p", 0, 0)
	cidr.Destination = v1alpha1.EdgeEndpoint{CIDR: "203.0.113.1/32"}
	tests := []struct {
		name string
		e    v1alpha1.FlowEdge
		want bool
	}{
		{"a forwarded edge from a Learn zone is kept", inZone(v1alpha1.VerdictForwarded, "learn", "prod"), true},
		{"a forwarded edge into an Audit zone is kept", inZone(v1alpha1.VerdictForwarded, "", "audit"), true},
		{"a forwarded edge between enforced zones is not kept", inZone(v1alpha1.VerdictForwarded, "prod", "prod"), false},
		{"a forwarded edge between unzoned workloads is not kept", inZone(v1alpha1.VerdictForwarded, "", ""), false},
		{"a forwarded edge to an external CIDR from an enforced zone is not kept", cidr, false},
		{"a dropped edge anywhere is kept", inZone(v1alpha1.VerdictDropped, "prod", "prod"), true},
		{"an audit edge anywhere is kept", inZone(v1alpha1.VerdictAudit, "", ""), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := modes.Persisted(&tt.e); got != tt.want {
				t.Errorf("Persisted = %v, want %v", got, tt.want)
			}
		})
	}
}

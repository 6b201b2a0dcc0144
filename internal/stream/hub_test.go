package stream

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

func TestHubGenerationsAcksAndLag(t *testing.T) {
	now := time.Unix(1000, 0)
	h := NewHub()
	h.now = func() time.Time { return now }
	p := samplePolicy()
	if g := h.Publish("node-a", p); g != 1 {
		t.Fatalf("first publish: generation %d, want 1", g)
	}
	if g := h.Publish("node-a", samplePolicy()); g != 1 {
		t.Fatalf("an equal policy moved the generation to %d", g)
	}
	now = now.Add(time.Second)
	q := samplePolicy()
	q.Endpoints = q.Endpoints[:1]
	g, d := h.PublishDelta("node-a", q)
	if g != 2 || d.GetBaseGeneration() != 1 || len(d.GetRemovedEndpoints()) != 1 {
		t.Fatalf("second publish: generation %d delta %v", g, d)
	}
	now = now.Add(2 * time.Second)
	for _, tc := range []struct {
		name      string
		epoch     string
		gen       uint64
		err       string
		accepted  bool
		wantAcked uint64
		wantErr   string
		wantLag   float64
	}{
		{"an ack of another epoch is ignored", "other", 2, "", false, 0, "", 3},
		{"an ack of a generation never published is ignored", h.Epoch(), 9, "", false, 0, "", 3},
		{"a failure is recorded with its generation", h.Epoch(), 1, "boom", true, 0, "boom", 3},
		{"an ack of generation 1 leaves generation 2 lagging", h.Epoch(), 1, "", true, 1, "", 2},
		{"an ack of the newest clears lag", h.Epoch(), 2, "", true, 2, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := h.Ack("node-a", tc.epoch, tc.gen, tc.err); got != tc.accepted {
				t.Fatalf("Ack = %v, want %v", got, tc.accepted)
			}
			s, _ := h.State("node-a")
			got := []any{s.Acked, s.Err, s.LagSeconds}
			if d := cmp.Diff([]any{tc.wantAcked, tc.wantErr, tc.wantLag}, got); d != "" {
				t.Fatalf("[acked, err, lag] (-want +got):\n%s", d)
			}
		})
	}
}

func TestHubBoundsLagHistory(t *testing.T) {
	h := NewHub()
	start := time.Unix(1000, 0)
	now := start
	h.now = func() time.Time { return now }
	for i := 0; i < 3*maxPublished; i++ {
		now = now.Add(time.Millisecond)
		np := &ir.NodePolicy{Node: "n", Sets: []ir.AddressSet{{Name: "s", Prefixes: bigSet(1+i%2, 0)}}}
		h.Publish("n", np)
	}
	h.mu.Lock()
	n := len(h.nodes["n"].published)
	h.mu.Unlock()
	if n > maxPublished {
		t.Fatalf("%d publish times kept for an agent that never acked, want at most %d", n, maxPublished)
	}
	s, _ := h.State("n")
	if want := now.Sub(start.Add(time.Millisecond)).Seconds(); s.LagSeconds != want {
		t.Fatalf("lag %v, want %v (the oldest unacked generation is kept)", s.LagSeconds, want)
	}
}

func TestHubNeverReusesAGenerationOfAForgottenNode(t *testing.T) {
	h := NewHub()
	h.Publish("node-a", samplePolicy())
	q := samplePolicy()
	q.Endpoints = q.Endpoints[:1]
	if g := h.Publish("node-a", q); g != 2 {
		t.Fatalf("second publish: generation %d, want 2", g)
	}
	h.Forget("node-a")
	if _, ok := h.State("node-a"); ok {
		t.Fatal("a forgotten node without watches is still known")
	}
	if g := h.Publish("node-a", samplePolicy()); g <= 2 {
		t.Fatalf("the node came back at generation %d; an agent holding generation 2 of this epoch would refuse it", g)
	}
	if h.Ack("node-a", h.Epoch(), 2, "") {
		s, _ := h.State("node-a")
		if s.Acked >= s.Generation {
			t.Fatalf("an ack of the forgotten generation 2 counts as enforcing generation %d", s.Generation)
		}
	}
}

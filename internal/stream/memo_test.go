package stream

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
)

// twoNodes returns the policies of two nodes that reference the same
// set, sharing its prefix slice as the engine does.
func twoNodes(prefixes []netip.Prefix) (a, b *ir.NodePolicy) {
	a = &ir.NodePolicy{Node: "node-a", Sets: []ir.AddressSet{{Name: "Zones/web", Prefixes: prefixes}}}
	b = &ir.NodePolicy{Node: "node-b", Sets: []ir.AddressSet{{Name: "Zones/web", Prefixes: prefixes}}}
	return a, b
}

func TestHubSharesSetChangesBetweenNodes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		next  []netip.Prefix
		patch bool
	}{
		{"one member added to a shared large set is one patch message for every node", bigSet(1000, 1), true},
		{"a shared set replaced whole is one set message for every node", []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHub()
			a, b := twoNodes(bigSet(1000, 0))
			h.Publish("node-a", a)
			h.Publish("node-b", b)
			a2, b2 := twoNodes(tc.next)
			_, da := h.PublishDelta("node-a", a2)
			_, db := h.PublishDelta("node-b", b2)
			var ma, mb proto.Message
			if tc.patch {
				if len(da.GetPatchedSets()) != 1 || len(db.GetPatchedSets()) != 1 {
					t.Fatalf("deltas %v and %v, want one patch each", da, db)
				}
				ma, mb = da.GetPatchedSets()[0], db.GetPatchedSets()[0]
			} else {
				if len(da.GetUpsertedSets()) != 1 || len(db.GetUpsertedSets()) != 1 {
					t.Fatalf("deltas %v and %v, want one upserted set each", da, db)
				}
				ma, mb = da.GetUpsertedSets()[0], db.GetUpsertedSets()[0]
			}
			if ma != mb {
				t.Errorf("node-a and node-b got separate messages for the same set change; want one shared message")
			}
			// The shared message must still be exactly what a fresh diff says.
			fresh := Diff(a, a2)
			fresh.BaseGeneration = da.GetBaseGeneration()
			if d := cmp.Diff(fresh, da, protocmp.Transform()); d != "" {
				t.Errorf("memoized delta differs from a fresh Diff (-fresh +memoized):\n%s", d)
			}
			got, err := Apply(b, db)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(b2, got, cmpIR); d != "" {
				t.Errorf("Apply(old, shared delta) (-want +got):\n%s", d)
			}
		})
	}
}

func TestHubDoesNotReuseAPatchForAnotherChange(t *testing.T) {
	h := NewHub()
	base := bigSet(1000, 0)
	a, b := twoNodes(base)
	h.Publish("node-a", a)
	h.Publish("node-b", b)
	// node-a gains the IPv6 member; node-b, from the same old slice, loses
	// the first member: same "from", different "to".
	a2, _ := twoNodes(bigSet(1000, 1))
	_, b2 := twoNodes(base[1:])
	_, da := h.PublishDelta("node-a", a2)
	_, db := h.PublishDelta("node-b", b2)
	if len(da.GetPatchedSets()) != 1 || len(da.GetPatchedSets()[0].GetAdded()) != 1 || len(da.GetPatchedSets()[0].GetRemoved()) != 0 {
		t.Fatalf("node-a delta %v, want a patch adding one member", da)
	}
	if len(db.GetPatchedSets()) != 1 || len(db.GetPatchedSets()[0].GetRemoved()) != 1 || len(db.GetPatchedSets()[0].GetAdded()) != 0 {
		t.Fatalf("node-b delta %v, want a patch removing one member", db)
	}
}

func TestDiffOfUnsortedSetsStaysCorrect(t *testing.T) {
	prev := &ir.NodePolicy{Node: "n", Sets: []ir.AddressSet{
		{Name: "b", Prefixes: bigSet(3, 0)}, {Name: "a", Prefixes: bigSet(2, 0)}, {Name: "gone", Prefixes: bigSet(1, 0)},
	}}
	next := &ir.NodePolicy{Node: "n", Sets: []ir.AddressSet{
		{Name: "c", Prefixes: bigSet(1, 0)}, {Name: "b", Prefixes: bigSet(3, 0)}, {Name: "a", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}},
	}}
	d := Diff(prev, next)
	var up []string
	for _, s := range d.GetUpsertedSets() {
		up = append(up, s.GetName())
	}
	got := [][]string{up, d.GetRemovedSets()}
	if diff := cmp.Diff([][]string{{"a", "c"}, {"gone"}}, got); diff != "" {
		t.Fatalf("[upserted, removed] sets (-want +got):\n%s", diff)
	}
}

func TestConcurrentPublishesOfOneNodeKeepAConsistentChain(t *testing.T) {
	h := NewHub()
	h.Publish("n", &ir.NodePolicy{Node: "n"})
	type pub struct {
		gen uint64
		d   *pb.Delta
		np  *ir.NodePolicy
	}
	var mu sync.Mutex
	var pubs []pub
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				np := &ir.NodePolicy{Node: "n", Sets: []ir.AddressSet{{Name: fmt.Sprintf("w%d", w), Prefixes: bigSet(1+i, 0)}}}
				g, d := h.PublishDelta("n", np)
				if d != nil {
					mu.Lock()
					pubs = append(pubs, pub{g, d, np})
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	byBase := map[uint64]pub{}
	for _, p := range pubs {
		if p.d.GetBaseGeneration() != p.gen-1 {
			t.Fatalf("generation %d has base %d", p.gen, p.d.GetBaseGeneration())
		}
		if _, dup := byBase[p.d.GetBaseGeneration()]; dup {
			t.Fatalf("two deltas from generation %d", p.d.GetBaseGeneration())
		}
		byBase[p.d.GetBaseGeneration()] = p
	}
	// Replaying the chain from generation 1 must reach the hub's policy.
	cur := &ir.NodePolicy{Node: "n"}
	for g := uint64(1); g < h.Generation("n"); g++ {
		p, ok := byBase[g]
		if !ok {
			t.Fatalf("no delta from generation %d (newest %d)", g, h.Generation("n"))
		}
		next, err := Apply(cur, p.d)
		if err != nil {
			t.Fatalf("applying generation %d: %v", p.gen, err)
		}
		if d := cmp.Diff(p.np, next, cmpIR); d != "" {
			t.Fatalf("generation %d replayed (-published +replayed):\n%s", p.gen, d)
		}
		cur = next
	}
	_, last, _ := h.current("n")
	if d := cmp.Diff(last, cur, cmpIR); d != "" {
		t.Fatalf("replayed chain differs from the hub's current policy (-hub +replayed):\n%s", d)
	}
}

func TestHubMemoKeepsOnlyTheNewestFormOfASet(t *testing.T) {
	h := NewHub()
	forms := [][]netip.Prefix{bigSet(1000, 0), bigSet(1000, 1), bigSet(999, 1)}
	a, _ := twoNodes(forms[0])
	h.Publish("node-a", a)
	for _, f := range forms[1:] {
		a, _ := twoNodes(f)
		if _, d := h.PublishDelta("node-a", a); len(d.GetPatchedSets()) != 1 {
			t.Fatalf("delta %v, want one patch", d)
		}
	}
	h.memo.mu.Lock()
	e := h.memo.names["Zones/web"]
	n := len(h.memo.names)
	h.memo.mu.Unlock()
	if n != 1 || e == nil || e.to != formOf(forms[2]) || len(e.patches) != 1 {
		t.Fatalf("memo has %d sets, entry %+v; want one entry for the newest form with one patch", n, e)
	}
	h.EndRound()
	h.memo.mu.Lock()
	n = len(h.memo.names)
	h.memo.mu.Unlock()
	if n != 0 {
		t.Fatalf("memo keeps %d sets after EndRound, want none", n)
	}
}

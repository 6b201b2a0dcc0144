package policy_test

import (
	"encoding/json"
	"net/netip"
	"slices"
	"testing"
)

func samePrefixes(a, b []netip.Prefix) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return string(b)
}

// A node whose endpoints did not change but one of whose sets gained a
// member gets a new NodePolicy that shares the endpoint slice and every
// unchanged set's prefixes with the previous one, a new prefix slice for
// the changed set, and leaves the previous (published) policy untouched.
func TestSetOnlyChangeSharesUnchangedParts(t *testing.T) {
	e, _ := incCluster(t)
	old := e.NodePolicy("node-1")
	oldJSON := mustJSON(t, old)
	if len(old.Endpoints) == 0 || len(old.Sets) < 2 {
		t.Fatalf("node-1 has %d endpoints and %d sets, want some endpoints and at least 2 sets", len(old.Endpoints), len(old.Sets))
	}
	// n0/other-0 (node-0) becomes a web pod and joins n0's app=web peer
	// set, which the n0 db pods on node-1 reference.
	newIP := netip.MustParseAddr("10.244.0.11")
	e.SetPod(mkPod("n0", "other-0", "web", "node-0", newIP.String()))
	dirty := e.TakeDirtyNodes()
	if !slices.Contains(dirty, "node-1") {
		t.Fatalf("dirty nodes %v, want node-1 among them", dirty)
	}
	cur := e.NodePolicy("node-1")
	if cur == old {
		t.Fatal("NodePolicy returned the previous policy after a set change")
	}
	if got, want := mustJSON(t, old), oldJSON; got != want {
		t.Errorf("the previously returned policy was modified:\nnow  %s\nwas  %s", got, want)
	}
	if len(cur.Endpoints) != len(old.Endpoints) || &cur.Endpoints[0] != &old.Endpoints[0] {
		t.Error("endpoints were rebuilt although no endpoint of node-1 changed")
	}
	if len(cur.Sets) != len(old.Sets) {
		t.Fatalf("node-1 has %d sets, had %d", len(cur.Sets), len(old.Sets))
	}
	changed := 0
	for i, s := range cur.Sets {
		o := old.Sets[i]
		if s.Name != o.Name {
			t.Fatalf("set %d is %q, was %q", i, s.Name, o.Name)
		}
		has := slices.Contains(s.Prefixes, netip.PrefixFrom(newIP, 32))
		had := slices.Contains(o.Prefixes, netip.PrefixFrom(newIP, 32))
		switch {
		case has && !had:
			changed++
			if samePrefixes(s.Prefixes, o.Prefixes) {
				t.Errorf("set %q changed but kept its prefix slice", s.Name)
			}
		case slices.Equal(s.Prefixes, o.Prefixes):
			if !samePrefixes(s.Prefixes, o.Prefixes) {
				t.Errorf("set %q did not change but got a new prefix slice", s.Name)
			}
		default:
			t.Errorf("set %q changed unexpectedly: %v, was %v", s.Name, s.Prefixes, o.Prefixes)
		}
	}
	if changed == 0 {
		t.Errorf("no set of node-1 gained %s: %s", newIP, mustJSON(t, cur.Sets))
	}
	if again := e.NodePolicy("node-1"); again != cur {
		t.Error("NodePolicy rebuilt again without a change")
	}
}

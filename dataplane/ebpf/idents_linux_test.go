//go:build linux

package ebpf

import (
	"context"
	"maps"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// TestSetDeltasKeepTheKernelMapsExact syncs a 1,000-rule policy, then
// 60 random set changes one at a time (addresses and CIDRs joining and
// leaving sets, new sets, sets going away), and after every Sync reads
// the active buffer back from the kernel: it must hold exactly what a
// compile of the policy from nothing gives, although each Sync wrote only
// the entries changed since that buffer's policy. An address joining a
// set whose membership exists already costs one entry per buffer.
func TestSetDeltasKeepTheKernelMapsExact(t *testing.T) {
	name := "bh-ebpf-idents-" + randSuffix()
	if err := netns.Create(name); err != nil {
		t.Fatalf("creating netns: %v", err)
	}
	t.Cleanup(func() {
		if err := netns.Delete(name); err != nil {
			t.Errorf("deleting netns: %v", err)
		}
	})
	be := newBackend(t, netns.Path(name), Options{DisableConnectionCutting: true})
	np := dptest.RulesPolicy(1000)
	be.benchIfindex = map[string]uint32{}
	for i, ep := range np.Endpoints {
		be.benchIfindex[ep.Name] = uint32(1000 + i)
	}
	ctx := context.Background()
	check := func(step int, what string) {
		t.Helper()
		kern, err := readProgram(be.buffers(be.active))
		if err != nil {
			t.Fatalf("step %d: reading the active buffer: %v", step, err)
		}
		// A compile from nothing, with the backend's numbers.
		fresh := newAllocator()
		fresh.idents, fresh.nextIdent = maps.Clone(be.alloc.idents), be.alloc.nextIdent
		fresh.classes, fresh.nextClass = maps.Clone(be.alloc.classes), be.alloc.nextClass
		fresh.rules, fresh.ruleIDs, fresh.nextRule = maps.Clone(be.alloc.rules), maps.Clone(be.alloc.ruleIDs), be.alloc.nextRule
		want, err := compile(np, be.benchIfindex, fresh)
		if err != nil {
			t.Fatalf("step %d: compile: %v", step, err)
		}
		wantIdents, _, _ := want.identMap()
		if d := cmp.Diff(wantIdents, kern.idents); d != "" {
			t.Fatalf("step %d (%s): identity map (-compiled +kernel):\n%s", step, what, d)
		}
		if d := cmp.Diff(want.allCls(), kern.allCls()); d != "" {
			t.Fatalf("step %d (%s): class map (-compiled +kernel):\n%s", step, what, d)
		}
		if d := cmp.Diff(want.allPol(), kern.allPol()); d != "" {
			t.Fatalf("step %d (%s): policy map (-compiled +kernel):\n%s", step, what, d)
		}
	}
	if err := be.Sync(ctx, np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	check(0, "first Sync")

	// One address joins a set, then another: the second Sync writes the
	// buffer that held the policy before the first, so it writes both
	// addresses' entries and nothing else.
	np.Sets[7].Prefixes = append(np.Sets[7].Prefixes, netip.MustParsePrefix("10.246.0.1/32"))
	if err := be.Sync(ctx, np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	np.Sets[9].Prefixes = append(np.Sets[9].Prefixes, netip.MustParsePrefix("10.246.0.2/32"))
	if err := be.Sync(ctx, np); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if st := be.Stats(); st.LastWrites != 2 {
		t.Errorf("two addresses joining sets wrote %d entries into the buffer that had neither, want 2", st.LastWrites)
	}
	check(1, "one address joined a set")

	r := rand.New(rand.NewPCG(7, 8))
	pool := []string{"10.245.3.0/24", "10.245.0.0/16", "10.246.1.1/32", "10.245.5.4/32", "10.245.5.7/32", "fd00:10:245:3::/64", "fd00:10:245:9::1/128", "10.0.0.0/8"}
	for step := 2; step < 62; step++ {
		var what string
		switch i := r.IntN(len(np.Sets)); r.IntN(5) {
		case 0, 1:
			p := netip.MustParsePrefix(pool[r.IntN(len(pool))])
			np.Sets[i].Prefixes = append(append([]netip.Prefix(nil), np.Sets[i].Prefixes...), p)
			what = np.Sets[i].Name + " gained " + p.String()
		case 2:
			ps := np.Sets[i].Prefixes
			if len(ps) < 2 {
				continue
			}
			j := r.IntN(len(ps))
			what = np.Sets[i].Name + " lost " + ps[j].String()
			np.Sets[i].Prefixes = append(append([]netip.Prefix(nil), ps[:j]...), ps[j+1:]...)
		case 3: // a set nobody names comes or goes
			if last := np.Sets[len(np.Sets)-1]; last.Name == "zz-extra" {
				np.Sets = np.Sets[:len(np.Sets)-1]
				what = "zz-extra removed"
			} else {
				np.Sets = append(np.Sets, ir.AddressSet{Name: "zz-extra", Prefixes: []netip.Prefix{netip.MustParsePrefix(pool[r.IntN(len(pool))])}})
				what = "zz-extra added"
			}
		default:
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 246, 2, byte(step)}), 32)
			np.Sets[i].Prefixes = append(append([]netip.Prefix(nil), np.Sets[i].Prefixes...), p)
			what = np.Sets[i].Name + " gained " + p.String()
		}
		if err := be.Sync(ctx, np); err != nil {
			t.Fatalf("step %d (%s): Sync: %v", step, what, err)
		}
		check(step, what)
	}
}

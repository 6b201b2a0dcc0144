package stream

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

func TestDiffIsMinimalAndApplies(t *testing.T) {
	base := samplePolicy()
	base.Sets[2].Prefixes = bigSet(1000, 0)
	for _, tc := range []struct {
		name                     string
		change                   func(np *ir.NodePolicy)
		upEP, rmEP, upSet, rmSet []string
		patched                  []string
	}{
		{"an identical policy gives an empty delta", func(*ir.NodePolicy) {}, nil, nil, nil, nil, nil},
		{"a new pod IP sends only that endpoint", func(np *ir.NodePolicy) {
			np.Endpoints[1].IPs = []netip.Addr{netip.MustParseAddr("10.244.1.7")}
		}, []string{"web/w-1"}, nil, nil, nil, nil},
		{"replacing a whole small set upserts it", func(np *ir.NodePolicy) {
			np.Sets[2].Prefixes = []netip.Prefix{netip.MustParsePrefix("10.243.0.1/32")}
		}, nil, nil, []string{"zone-web"}, nil, nil},
		{"one new member of a large set is sent as a patch", func(np *ir.NodePolicy) {
			np.Sets[2].Prefixes = bigSet(1000, 1)
		}, nil, nil, nil, nil, []string{"zone-web"}},
		{"a removed pod and set are named", func(np *ir.NodePolicy) {
			np.Endpoints = np.Endpoints[:1]
			np.Sets = np.Sets[1:]
		}, nil, []string{"web/w-1"}, nil, []string{"q-forensics"}, nil},
		{"a rule action change sends the endpoint", func(np *ir.NodePolicy) {
			np.Endpoints[0].Ingress.Tiers[3].Rules[0].Action = ir.Accept
		}, []string{"pci/db-0"}, nil, nil, nil, nil},
		{"an added pod is upserted", func(np *ir.NodePolicy) {
			np.Endpoints = append(np.Endpoints, ir.Endpoint{Name: "web/w-2", IPs: []netip.Addr{netip.MustParseAddr("10.244.1.8")}})
		}, []string{"web/w-2"}, nil, nil, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := samplePolicy()
			next.Sets[2].Prefixes = bigSet(1000, 0)
			tc.change(next)
			d := Diff(base, next)
			var upEP, upSet []string
			for _, e := range d.UpsertedEndpoints {
				upEP = append(upEP, e.Name)
			}
			for _, s := range d.UpsertedSets {
				upSet = append(upSet, s.Name)
			}
			var patched []string
			for _, p := range d.PatchedSets {
				patched = append(patched, p.Name)
				if n := len(p.Added) + len(p.Removed); n != 1 {
					t.Errorf("patch of %s has %d changes, want 1", p.Name, n)
				}
			}
			got := [][]string{upEP, d.RemovedEndpoints, upSet, d.RemovedSets, patched}
			want := [][]string{tc.upEP, tc.rmEP, tc.upSet, tc.rmSet, tc.patched}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("delta [upserted endpoints, removed endpoints, upserted sets, removed sets, patched sets] (-want +got):\n%s", diff)
			}
			applied, err := Apply(base, d)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(next, applied, cmpIR); diff != "" {
				t.Fatalf("Apply(base, Diff(base, next)) != next (-want +got):\n%s", diff)
			}
		})
	}
}

func TestApplyRefusesRemovingWhatIsAbsent(t *testing.T) {
	d := Diff(samplePolicy(), &ir.NodePolicy{Node: "node-a"})
	if _, err := Apply(&ir.NodePolicy{Node: "node-a"}, d); err == nil {
		t.Fatal("Apply on a policy that lacks the removed endpoints succeeded; want an error showing the delta does not fit")
	}
}

// bigSet returns n host prefixes in 10.245.0.0/16 plus, when extra > 0, an
// IPv6 member, sorted as the engine sorts.
func bigSet(n, extra int) []netip.Prefix {
	var out []netip.Prefix
	for i := 0; i < n; i++ {
		out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 245, byte(i >> 8), byte(i)}), 32))
	}
	if extra > 0 {
		out = append(out, netip.MustParsePrefix("fd00:10:244:7::9/128"))
	}
	return out
}

func TestPatchesRemoveAndAddInOrder(t *testing.T) {
	old := &ir.NodePolicy{Node: "n", Sets: []ir.AddressSet{{Name: "s", Prefixes: bigSet(50, 0)}}}
	next := &ir.NodePolicy{Node: "n", Sets: []ir.AddressSet{{Name: "s", Prefixes: append(append([]netip.Prefix{}, bigSet(50, 0)[:10]...), bigSet(50, 0)[12:]...)}}}
	next.Sets[0].Prefixes = append([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/31")}, next.Sets[0].Prefixes...)
	d := Diff(old, next)
	if len(d.PatchedSets) != 1 || len(d.PatchedSets[0].Added) != 1 || len(d.PatchedSets[0].Removed) != 2 {
		t.Fatalf("delta %v, want a patch adding 1 and removing 2", d)
	}
	got, err := Apply(old, d)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(next, got, cmpIR); diff != "" {
		t.Fatalf("Apply (-want +got):\n%s", diff)
	}
	d.PatchedSets[0].Removed[0] = prefixToProto(netip.MustParsePrefix("192.0.2.1/32"))
	if _, err := Apply(old, d); err == nil || !strings.Contains(err.Error(), "192.0.2.1/32, which is not present") {
		t.Fatalf("a patch removing an absent prefix: error %v", err)
	}
}

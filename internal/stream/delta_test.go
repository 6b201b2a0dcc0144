package stream

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

func TestDiffIsMinimalAndApplies(t *testing.T) {
	base := samplePolicy()
	for _, tc := range []struct {
		name                     string
		change                   func(np *ir.NodePolicy)
		upEP, rmEP, upSet, rmSet []string
	}{
		{"an identical policy gives an empty delta", func(*ir.NodePolicy) {}, nil, nil, nil, nil},
		{"a new pod IP sends only that endpoint", func(np *ir.NodePolicy) {
			np.Endpoints[1].IPs = []netip.Addr{netip.MustParseAddr("10.244.1.7")}
		}, []string{"web/w-1"}, nil, nil, nil},
		{"a set member change sends only that set", func(np *ir.NodePolicy) {
			np.Sets[2].Prefixes = append([]netip.Prefix{netip.MustParsePrefix("10.243.0.1/32")}, np.Sets[2].Prefixes...)
		}, nil, nil, []string{"zone-web"}, nil},
		{"a removed pod and set are named", func(np *ir.NodePolicy) {
			np.Endpoints = np.Endpoints[:1]
			np.Sets = np.Sets[1:]
		}, nil, []string{"web/w-1"}, nil, []string{"q-forensics"}},
		{"a rule action change sends the endpoint", func(np *ir.NodePolicy) {
			np.Endpoints[0].Ingress.Tiers[3].Rules[0].Action = ir.Accept
		}, []string{"pci/db-0"}, nil, nil, nil},
		{"an added pod is upserted", func(np *ir.NodePolicy) {
			np.Endpoints = append(np.Endpoints, ir.Endpoint{Name: "web/w-2", IPs: []netip.Addr{netip.MustParseAddr("10.244.1.8")}})
		}, []string{"web/w-2"}, nil, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := samplePolicy()
			tc.change(next)
			d := Diff(base, next)
			var upEP, upSet []string
			for _, e := range d.UpsertedEndpoints {
				upEP = append(upEP, e.Name)
			}
			for _, s := range d.UpsertedSets {
				upSet = append(upSet, s.Name)
			}
			got := [][]string{upEP, d.RemovedEndpoints, upSet, d.RemovedSets}
			want := [][]string{tc.upEP, tc.rmEP, tc.upSet, tc.rmSet}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("delta [upserted endpoints, removed endpoints, upserted sets, removed sets] (-want +got):\n%s", diff)
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

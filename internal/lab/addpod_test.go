package lab

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPlanAddRemovePod(t *testing.T) {
	p, err := NewPlan("demo", 2, nil, []PodInput{podIn("a", "p0"), podIn("a", "p1"), podIn("a", "p2")})
	if err != nil {
		t.Fatal(err)
	}
	add := func(name string, node int) PodPlan {
		t.Helper()
		pp, err := p.AddPod(podIn("b", name), node, nil)
		if err != nil {
			t.Fatal(err)
		}
		return pp
	}
	type placed struct{ Key, Node, IP, Veth string }
	got := []placed{}
	pp := add("n0", 0) // node 2 has fewer pods
	got = append(got, placed{pp.Key(), pp.NodeName, pp.IP.String(), pp.HostVeth})
	if _, err := p.RemovePod("a/p0"); err != nil {
		t.Fatal(err)
	}
	pp = add("n1", 1) // reuses p0's slot on node 1
	got = append(got, placed{pp.Key(), pp.NodeName, pp.IP.String(), pp.HostVeth})
	want := []placed{
		{"b/n0", "bh-demo-node2", "10.244.2.3", "bhpod1"},
		{"b/n1", "bh-demo-node1", "10.244.1.2", "bhpod0"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("placement (-want +got):\n%s", d)
	}
	found := false
	for _, ns := range p.Namespaces {
		found = found || ns.Name == "b"
	}
	if !found {
		t.Error("namespace b of the added pods is not in the plan")
	}

	errs := []struct {
		name string
		do   func() error
		want string
	}{
		{"a pod that exists already", func() error { _, err := p.AddPod(podIn("b", "n0"), 0, nil); return err }, "b/n0 already exists"},
		{"a node that does not exist", func() error { _, err := p.AddPod(podIn("b", "x"), 3, nil); return err }, "node 3 does not exist"},
		{"removing an unknown pod", func() error { _, err := p.RemovePod("b/none"); return err }, "b/none is not in lab demo"},
	}
	for _, tt := range errs {
		t.Run(tt.name+" is an error", func(t *testing.T) {
			if err := tt.do(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

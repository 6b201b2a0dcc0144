package policy_test

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// zoneSets returns every zone set of every node, by node and set name.
func zoneSets(e *policy.Engine) map[string][]string {
	out := map[string][]string{}
	for _, n := range e.Nodes() {
		for _, s := range e.NodePolicy(n).Sets {
			if !strings.HasPrefix(s.Name, "Zones/") && !strings.HasPrefix(s.Name, "ZoneMode/") {
				continue
			}
			var ps []string
			for _, p := range s.Prefixes {
				ps = append(ps, p.String())
			}
			out[n+" "+s.Name] = ps
		}
	}
	return out
}

// TestZoneSetsFollowPodMoves: pods with runs of adjacent addresses (so
// that zone sets aggregate them into wider prefixes) change zone, change
// address, leave and come back, one at a time and in bursts; after every
// step the zone sets, patched at the moved addresses, equal those of an
// engine built from scratch with the same objects. The zones are pod
// zones (one of them in Audit mode), a network zone overlapping the pod
// addresses, "unzoned", "world" (a negated complement set) and the
// ZoneMode/* sets of the zone boundary.
func TestZoneSetsFollowPodMoves(t *testing.T) {
	r := rand.New(rand.NewSource(3))
	tiers := []string{"a", "b", "c", "none"}
	type podSpec struct {
		ns, name, node, tier string
		ip                   string
	}
	podOf := func(s podSpec) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: s.name, Labels: map[string]string{"tier": s.tier}},
			Spec:       corev1.PodSpec{NodeName: s.node},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: s.ip},
		}
	}
	var zones []*v1alpha1.Zone
	for i, tier := range tiers[:3] {
		zones = append(zones, mkZone("z"+tier, i, map[string]string{"tier": tier}, map[string]string{"env": "prod"}))
	}
	zones[1].Spec.Mode = v1alpha1.ZoneModeAudit // ZoneMode/AuditOrLearn holds zb
	net := &v1alpha1.Zone{ObjectMeta: metav1.ObjectMeta{Name: "lan", CreationTimestamp: metav1.Unix(900, 0)}}
	net.Spec.Networks = []v1alpha1.ZoneNetwork{{CIDR: "10.0.1.0/26"}, {CIDR: "fd00::/120"}}
	zones = append(zones, net)
	zpSpecs := [][2][]string{
		{{"za"}, {"zb", "unzoned"}},
		{{"zb"}, {"zc", "lan"}},
		{{"zc"}, {"world", "za"}},
		{{"unzoned"}, {"world"}},
		{{"lan", "za"}, {"zb", "zc", "unzoned"}},
	}
	var zps []*v1alpha1.ZonePolicy
	for i, s := range zpSpecs {
		zp := &v1alpha1.ZonePolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("zp%d", i)}}
		zp.Spec.Priority = int32(i + 1)
		zp.Spec.From, zp.Spec.To, zp.Spec.Action = s[0], s[1], v1alpha1.ActionAccept
		zps = append(zps, zp)
	}
	namespaces := []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "prod", Labels: map[string]string{"env": "prod"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "dev", Labels: map[string]string{"env": "dev"}}},
	}
	ipOf := func(i int) string {
		if i%5 == 4 {
			return fmt.Sprintf("fd00::%x", i)
		}
		return fmt.Sprintf("10.0.%d.%d", i/64, i%64)
	}
	pods := map[string]podSpec{}
	for i := 0; i < 200; i++ {
		s := podSpec{ns: []string{"prod", "dev"}[i%7/5], name: fmt.Sprintf("p%d", i), node: fmt.Sprintf("n%d", i%3), tier: tiers[i/8%4], ip: ipOf(i)}
		pods[s.ns+"/"+s.name] = s
	}
	apply := func(e *policy.Engine) {
		for _, ns := range namespaces {
			e.SetNamespace(ns)
		}
		for _, z := range zones {
			if err := e.SetZone(z); err != nil {
				t.Fatal(err)
			}
		}
		for _, zp := range zps {
			if err := e.SetZonePolicy(zp); err != nil {
				t.Fatal(err)
			}
		}
		for _, s := range pods {
			e.SetPod(podOf(s))
		}
	}
	inc := policy.New()
	apply(inc)
	inc.TakeDirtyNodes()
	keys := func() []string {
		var ks []string
		for k := range pods {
			ks = append(ks, k)
		}
		return ks
	}
	free := 400 // addresses 200.. are unused at first
	for step := 0; step < 300; step++ {
		burst := 1
		if step%10 == 0 {
			burst = 1 + r.Intn(8)
		}
		for b := 0; b < burst; b++ {
			ks := keys()
			k := ks[r.Intn(len(ks))]
			s := pods[k]
			switch x := r.Intn(10); {
			case x < 6: // change zone
				s.tier = tiers[r.Intn(len(tiers))]
				pods[k] = s
				inc.SetPod(podOf(s))
			case x < 8: // change address, sometimes to a neighbour's
				if r.Intn(2) == 0 {
					s.ip = ipOf(r.Intn(220))
				} else {
					s.ip = ipOf(free % 256)
					free++
				}
				pods[k] = s
				inc.SetPod(podOf(s))
			case x < 9: // leave
				delete(pods, k)
				inc.DeletePod(s.ns, s.name)
			default: // a new pod
				s.name = fmt.Sprintf("q%d", step*10+b)
				s.tier = tiers[r.Intn(len(tiers))]
				s.ip = ipOf(r.Intn(256))
				pods[s.ns+"/"+s.name] = s
				inc.SetPod(podOf(s))
			}
		}
		inc.TakeDirtyNodes()
		full := policy.New()
		apply(full)
		want, got := zoneSets(full), zoneSets(inc)
		if len(want) == 0 {
			t.Fatal("no zone sets")
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("step %d: zone sets differ from a full build (-full +incremental):\n%s", step, diff)
		}
	}
	for _, name := range []string{"ZoneMode/Enforce", "ZoneMode/AuditOrLearn"} {
		if len(zoneSets(inc)["n0 "+name]) == 0 {
			t.Fatalf("node n0 has no members in %s", name)
		}
	}
	if inc.Stats().SetsPatched == 0 {
		t.Fatal("no zone set was patched")
	}
	// the aggregation is exercised: some set holds a prefix wider than a host
	wide := false
	for _, ps := range zoneSets(inc) {
		for _, p := range ps {
			if !strings.HasSuffix(p, "/32") && !strings.HasSuffix(p, "/128") {
				wide = true
			}
		}
	}
	if !wide {
		t.Fatal("no zone set aggregates addresses")
	}
}

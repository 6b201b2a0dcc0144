package stream

import (
	"fmt"
	"slices"
	"sort"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
)

// Diff returns the delta that turns prev into next: endpoints and sets
// added or changed (whole, by name) and the names of those removed. A nil
// prev is an empty policy. Unchanged endpoints and sets are not sent.
func Diff(prev, next *ir.NodePolicy) *pb.Delta {
	if prev == nil {
		prev = &ir.NodePolicy{}
	}
	d := &pb.Delta{}
	old := make(map[string]*ir.Endpoint, len(prev.Endpoints))
	for i := range prev.Endpoints {
		old[prev.Endpoints[i].Name] = &prev.Endpoints[i]
	}
	for i := range next.Endpoints {
		e := &next.Endpoints[i]
		if o, ok := old[e.Name]; ok {
			delete(old, e.Name)
			if EqualEndpoint(o, e) {
				continue
			}
		}
		d.UpsertedEndpoints = append(d.UpsertedEndpoints, EndpointToProto(e))
	}
	for name := range old {
		d.RemovedEndpoints = append(d.RemovedEndpoints, name)
	}
	sort.Strings(d.RemovedEndpoints)

	oldSets := make(map[string]*ir.AddressSet, len(prev.Sets))
	for i := range prev.Sets {
		oldSets[prev.Sets[i].Name] = &prev.Sets[i]
	}
	for i := range next.Sets {
		s := &next.Sets[i]
		if o, ok := oldSets[s.Name]; ok {
			delete(oldSets, s.Name)
			if slices.Equal(o.Prefixes, s.Prefixes) {
				continue
			}
		}
		d.UpsertedSets = append(d.UpsertedSets, SetToProto(s))
	}
	for name := range oldSets {
		d.RemovedSets = append(d.RemovedSets, name)
	}
	sort.Strings(d.RemovedSets)
	return d
}

// Empty reports whether a delta changes nothing.
func Empty(d *pb.Delta) bool {
	return len(d.GetUpsertedEndpoints()) == 0 && len(d.GetRemovedEndpoints()) == 0 &&
		len(d.GetUpsertedSets()) == 0 && len(d.GetRemovedSets()) == 0
}

// Apply returns a new policy: prev with the delta applied, endpoints and
// sets sorted by name as the IR requires. prev is not modified (its
// unchanged endpoints and sets are shared).
func Apply(prev *ir.NodePolicy, d *pb.Delta) (*ir.NodePolicy, error) {
	if prev == nil {
		prev = &ir.NodePolicy{}
	}
	eps := make(map[string]ir.Endpoint, len(prev.Endpoints)+len(d.GetUpsertedEndpoints()))
	for _, e := range prev.Endpoints {
		eps[e.Name] = e
	}
	for _, name := range d.GetRemovedEndpoints() {
		if _, ok := eps[name]; !ok {
			return nil, fmt.Errorf("delta removes endpoint %s, which is not present", name)
		}
		delete(eps, name)
	}
	for _, m := range d.GetUpsertedEndpoints() {
		e, err := EndpointFromProto(m)
		if err != nil {
			return nil, fmt.Errorf("delta: %w", err)
		}
		eps[e.Name] = e
	}
	sets := make(map[string]ir.AddressSet, len(prev.Sets)+len(d.GetUpsertedSets()))
	for _, s := range prev.Sets {
		sets[s.Name] = s
	}
	for _, name := range d.GetRemovedSets() {
		if _, ok := sets[name]; !ok {
			return nil, fmt.Errorf("delta removes address set %s, which is not present", name)
		}
		delete(sets, name)
	}
	for _, m := range d.GetUpsertedSets() {
		s, err := SetFromProto(m)
		if err != nil {
			return nil, fmt.Errorf("delta: %w", err)
		}
		sets[s.Name] = s
	}
	next := &ir.NodePolicy{Node: prev.Node, Endpoints: make([]ir.Endpoint, 0, len(eps)), Sets: make([]ir.AddressSet, 0, len(sets))}
	for _, e := range eps {
		next.Endpoints = append(next.Endpoints, e)
	}
	sort.Slice(next.Endpoints, func(i, j int) bool { return next.Endpoints[i].Name < next.Endpoints[j].Name })
	for _, s := range sets {
		next.Sets = append(next.Sets, s)
	}
	sort.Slice(next.Sets, func(i, j int) bool { return next.Sets[i].Name < next.Sets[j].Name })
	return next, nil
}

// EqualEndpoint reports whether two endpoints are identical.
func EqualEndpoint(a, b *ir.Endpoint) bool {
	return a.Name == b.Name && a.Quarantined == b.Quarantined && a.CutConnections == b.CutConnections &&
		slices.Equal(a.IPs, b.IPs) && equalChain(&a.Ingress, &b.Ingress) && equalChain(&a.Egress, &b.Egress)
}

func equalChain(a, b *ir.Chain) bool {
	return slices.EqualFunc(a.Tiers, b.Tiers, func(x, y ir.Tier) bool {
		return x.Kind == y.Kind && slices.EqualFunc(x.Rules, y.Rules, func(r, s ir.Rule) bool {
			return r.ID == s.ID && r.Peer == s.Peer && r.Action == s.Action && r.Log == s.Log && slices.Equal(r.Ports, s.Ports)
		})
	})
}

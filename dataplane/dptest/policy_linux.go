//go:build linux

package dptest

import (
	"sort"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// Policy returns a NodePolicy with one endpoint per pod (sorted) and the
// given sets; edit the endpoints with Endpoint.
func (t *Topology) Policy(sets ...ir.AddressSet) *ir.NodePolicy {
	np := &ir.NodePolicy{Node: t.NodeNS}
	for _, p := range t.Pods {
		np.Endpoints = append(np.Endpoints, ir.Endpoint{Name: p.Name, IPs: p.IPs()})
	}
	sort.Slice(np.Endpoints, func(i, j int) bool { return np.Endpoints[i].Name < np.Endpoints[j].Name })
	sort.Slice(sets, func(i, j int) bool { return sets[i].Name < sets[j].Name })
	np.Sets = sets
	return np
}

// DenyAToB returns Policy with one admin-tier rule in the ingress of pod
// b (Pods[1]) that denies pod a (Pods[0]): set "sel-a" holds a's
// prefixes, the rule is "ZonePolicy/deny-a". Everything else is allowed.
// The topology needs at least two pods.
func (t *Topology) DenyAToB() *ir.NodePolicy {
	np := t.Policy(Set("sel-a", t.Pods[0].Prefixes()...))
	np.Endpoint(t.Pods[1].Name).Ingress.Tiers = []ir.Tier{Tier(ir.TierAdmin, Rule("ZonePolicy/deny-a", "sel-a", false, ir.Deny))}
	return np
}

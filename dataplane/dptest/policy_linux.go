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

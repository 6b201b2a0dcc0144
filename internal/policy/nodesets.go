package policy

import (
	"net/netip"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// nodeSetList is the address set list (ir.NodePolicy.Sets) of the nodes
// whose endpoints reference the same sets. Nodes that name the same sets
// share one slice, so a change of a set's contents makes one new list
// for all of them instead of one per node. The list is immutable once
// handed out; a newer flush round replaces it (refreshSets).
type nodeSetList struct {
	key   string // the set names, joined
	sets  []ir.AddressSet
	round uint64 // the flush round sets is current for
	nodes int    // nodes whose policy holds this list
}

// currentSets returns the list's sets as of this flush round; false when
// one of its sets no longer exists.
func (e *Engine) currentSets(l *nodeSetList) ([]ir.AddressSet, bool) {
	if l.round == e.c.round {
		return l.sets, true
	}
	sets, ok := e.refreshSets(l.sets)
	if !ok {
		return nil, false
	}
	l.sets, l.round = sets, e.c.round
	return sets, true
}

// nodeSets returns the shared set list for the sorted set names and
// makes node's state hold it.
func (e *Engine) nodeSets(ns *nodeState, names []string) []ir.AddressSet {
	c := &e.c
	key := strings.Join(names, "\x00")
	l := c.setLists[key]
	if l != nil {
		if sets, ok := e.currentSets(l); ok {
			e.holdSets(ns, l)
			return sets
		}
	}
	sets := make([]ir.AddressSet, 0, len(names))
	for _, n := range names {
		p := c.sets[n].prefixes
		if p == nil {
			p = []netip.Prefix{}
		}
		sets = append(sets, ir.AddressSet{Name: n, Prefixes: p})
	}
	if l == nil {
		l = &nodeSetList{key: key}
		c.setLists[key] = l
	}
	l.sets, l.round = sets, c.round
	e.holdSets(ns, l)
	return sets
}

// holdSets moves node state ns to list l, forgetting lists no node holds.
func (e *Engine) holdSets(ns *nodeState, l *nodeSetList) {
	if ns.sets == l {
		return
	}
	if old := ns.sets; old != nil {
		old.nodes--
		if old.nodes == 0 && e.c.setLists[old.key] == old {
			delete(e.c.setLists, old.key)
		}
	}
	l.nodes++
	ns.sets = l
}

package policy

import (
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// anchors returns "key=value" strings of which a pod must carry at least one
// to match the selector, from its most selective equality or In
// requirement; nil when the selector has none (it must be checked against
// every candidate).
func anchors(s labels.Selector) []string {
	reqs, ok := s.Requirements()
	if !ok {
		return nil
	}
	var best []string
	for _, r := range reqs {
		switch r.Operator() {
		case selection.Equals, selection.DoubleEquals, selection.In:
			vals := r.Values().List()
			if len(vals) == 0 {
				continue
			}
			if best == nil || len(vals) < len(best) {
				best = best[:0]
				for _, v := range vals {
					best = append(best, r.Key()+"="+v)
				}
			}
		}
	}
	return best
}

func (e *Engine) indexPod(p *podInfo, add bool) {
	byLabel := e.podsByLabel[p.ns]
	if byLabel == nil {
		if !add {
			return
		}
		byLabel = map[string]map[string]*podInfo{}
		e.podsByLabel[p.ns] = byLabel
	}
	for _, a := range p.kv {
		m := byLabel[a]
		if add {
			if m == nil {
				m = map[string]*podInfo{}
				byLabel[a] = m
			}
			m[p.name] = p
		} else if m != nil && m[p.name] == p {
			delete(m, p.name)
			if len(m) == 0 {
				delete(byLabel, a)
			}
		}
	}
}

// podsFor calls fn for every pod of a namespace that may match the
// selector (a superset, from the label index); fn checks.
func (e *Engine) podsFor(as []string, ns string, fn func(*podInfo)) {
	if as == nil {
		for _, p := range e.podsByNS[ns] {
			fn(p)
		}
		return
	}
	byLabel := e.podsByLabel[ns]
	for _, a := range as {
		for _, p := range byLabel[a] {
			fn(p)
		}
	}
}

// namespacesFor calls fn for every namespace (declared or holding pods)
// whose labels match the selector.
func (e *Engine) namespacesFor(sel labels.Selector, fn func(ns string)) {
	for ns := range e.podsByNS {
		if sel.Matches(e.nsLabels(ns)) {
			fn(ns)
		}
	}
}

func (e *Engine) indexNP(n *npInfo, add bool) {
	as := n.anchors
	if as == nil {
		l := e.npsNoAnchor[n.ns]
		if add {
			e.npsNoAnchor[n.ns] = append(l, n)
		} else {
			for i, x := range l {
				if x == n {
					e.npsNoAnchor[n.ns] = append(l[:i:i], l[i+1:]...)
					break
				}
			}
		}
		return
	}
	m := e.npsByAnchor[n.ns]
	if m == nil {
		m = map[string][]*npInfo{}
		e.npsByAnchor[n.ns] = m
	}
	for _, a := range as {
		l := m[a]
		if add {
			m[a] = append(l, n)
			continue
		}
		for i, x := range l {
			if x == n {
				m[a] = append(l[:i:i], l[i+1:]...)
				break
			}
		}
		if len(m[a]) == 0 {
			delete(m, a)
		}
	}
}

// candidateNPs returns the policies of the pod's namespace that may select
// it, sorted by name.
func (e *Engine) candidateNPs(p *podInfo) []*npInfo {
	out := append([]*npInfo(nil), e.npsNoAnchor[p.ns]...)
	if m := e.npsByAnchor[p.ns]; m != nil {
		for _, a := range p.kv {
			out = append(out, m[a]...)
		}
	}
	if len(out) > 1 {
		slices.SortFunc(out, func(a, b *npInfo) int { return strings.Compare(a.name, b.name) })
	}
	return out
}

package attrib

import (
	"net/netip"
	"sort"
	"sync"
	"time"
)

// OwnerRef is a controller owner reference of an object.
type OwnerRef struct {
	Kind string
	Name string
}

// Pod is what attribution needs of a pod.
type Pod struct {
	Namespace string
	Name      string
	Labels    map[string]string
	// Owner is the pod's controller owner; zero when it has none.
	Owner OwnerRef
	// Zone is the pod's zone, empty when it is in none.
	Zone string
	// Node is the pod's node, empty when not yet scheduled.
	Node string
}

type span struct {
	from, to time.Time // to is zero while the pod still holds the address
	pod      Pod
}

// History records which pod held each IP over time. It is safe for
// concurrent use. The zero value is not usable; call NewHistory.
type History struct {
	mu   sync.RWMutex
	byIP map[netip.Addr][]span
}

// NewHistory returns an empty history.
func NewHistory() *History { return &History{byIP: map[netip.Addr][]span{}} }

// Assign records that pod holds ip from at on. A different pod that held
// ip until then is released at at. Assigning the same pod again updates
// its labels and zone without starting a new span.
func (h *History) Assign(ip netip.Addr, pod Pod, at time.Time) {
	ip = ip.Unmap()
	h.mu.Lock()
	defer h.mu.Unlock()
	spans := h.byIP[ip]
	if n := len(spans); n > 0 && spans[n-1].to.IsZero() {
		last := &spans[n-1]
		if last.pod.Namespace == pod.Namespace && last.pod.Name == pod.Name {
			last.pod = pod
			return
		}
		last.to = at
	}
	h.byIP[ip] = append(spans, span{from: at, pod: pod})
}

// Release records that whatever pod held ip stopped holding it at at.
func (h *History) Release(ip netip.Addr, at time.Time) {
	ip = ip.Unmap()
	h.mu.Lock()
	defer h.mu.Unlock()
	spans := h.byIP[ip]
	if n := len(spans); n > 0 && spans[n-1].to.IsZero() {
		spans[n-1].to = at
	}
}

// Lookup returns the pod that held ip at time at. A flow seen slightly
// before the pod was first observed (informer lag) still matches the
// pod's first span when no earlier span covers it.
func (h *History) Lookup(ip netip.Addr, at time.Time) (Pod, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	spans := h.byIP[ip.Unmap()]
	// Latest span that started at or before at.
	i := sort.Search(len(spans), func(i int) bool { return spans[i].from.After(at) }) - 1
	if i >= 0 {
		s := spans[i]
		if s.to.IsZero() || at.Before(s.to) {
			return s.pod, true
		}
		return Pod{}, false
	}
	if len(spans) > 0 && spans[0].from.Sub(at) < lookupGrace {
		return spans[0].pod, true
	}
	return Pod{}, false
}

// lookupGrace is how long before a pod was first seen a flow from its
// address still attributes to it.
const lookupGrace = 30 * time.Second

// Prune forgets spans that ended before before.
func (h *History) Prune(before time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ip, spans := range h.byIP {
		kept := spans[:0]
		for _, s := range spans {
			if s.to.IsZero() || !s.to.Before(before) {
				kept = append(kept, s)
			}
		}
		if len(kept) == 0 {
			delete(h.byIP, ip)
		} else {
			h.byIP[ip] = kept
		}
	}
}

// Len is the number of addresses with history.
func (h *History) Len() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.byIP)
}

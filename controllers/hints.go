package controllers

import (
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// HintTTL bounds how long an endpoint hint waits for its pod, and how
// long it stands in for the pod's status IPs.
const HintTTL = 2 * time.Minute

// podHint is the address a node's agent reported for one of its pods
// before the pod's status carries it (stream.EndpointHint).
type podHint struct {
	node string
	ips  []netip.Addr
	at   time.Time
}

// Hint records the addresses the agent of node assigned to pod
// namespace/name, as its CNI call told it. The engine uses them for the
// pod while the Pod object is bound to that node (spec.nodeName) and its
// status has no IPs yet; a pod bound to another node ignores the hint,
// so an agent can only speak for its own pods. Status IPs, once written,
// always win and drop the hint.
func (m *Model) Hint(node, namespace, name string, ips []netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := namespace + "/" + name
	now := m.now()
	for k, h := range m.hints {
		if now.Sub(h.at) > HintTTL {
			delete(m.hints, k)
		}
	}
	m.hints[key] = podHint{node: node, ips: append([]netip.Addr(nil), ips...), at: now}
	if p := m.bare[key]; p != nil {
		if hp := m.hintedLocked(p); hp != p {
			m.log.V(1).Info("pod compiled from an endpoint hint", "pod", key, "node", node, "ips", ips)
			m.eng.SetPod(hp)
			m.changed()
		} else {
			m.log.Info("ignored endpoint hint for a pod bound to another node", "pod", key, "node", node, "podNode", p.Spec.NodeName)
		}
	}
}

// hintedLocked returns p, or a copy of p carrying its node's hinted
// addresses when p has no status IPs. It records pods without IPs so a
// later hint can find them.
func (m *Model) hintedLocked(p *corev1.Pod) *corev1.Pod {
	key := p.Namespace + "/" + p.Name
	if p.Status.PodIP != "" || len(p.Status.PodIPs) > 0 {
		delete(m.bare, key)
		delete(m.hints, key)
		return p
	}
	m.bare[key] = p
	h, ok := m.hints[key]
	if !ok || p.Spec.NodeName == "" || h.node != p.Spec.NodeName || m.now().Sub(h.at) > HintTTL {
		return p
	}
	cp := p.DeepCopy()
	for _, ip := range h.ips {
		cp.Status.PodIPs = append(cp.Status.PodIPs, corev1.PodIP{IP: ip.String()})
	}
	cp.Status.PodIP = cp.Status.PodIPs[0].IP
	return cp
}

func (m *Model) forgetHintLocked(namespace, name string) {
	key := namespace + "/" + name
	delete(m.bare, key)
	delete(m.hints, key)
}

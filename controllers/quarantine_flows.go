package controllers

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// BlockedFlows collects the flow records that quarantines refused (verdict
// DROPPED, deciding rule "Quarantine/<namespace>/<name>"), per quarantine,
// until the status reconciler merges them into the Quarantine's
// status.blockedFlows. Every replica collects what its agents report;
// only the leader's reconciler writes, so records reaching a non-leader
// replica are not kept (as for FlowEdgeSets). Pending records are
// bounded by v1alpha1.MaxBlockedFlows per quarantine (the newest win).
type BlockedFlows struct {
	// Notify, when set, is told which quarantine has new records.
	Notify func(policy.ObjectRef)

	mu      sync.Mutex
	pending map[policy.ObjectRef]*blockedPending
}

type blockedPending struct {
	flows []v1alpha1.QuarantineFlow // oldest first
	total int64
}

// quarantineRef returns the quarantine a rule ID names: exactly
// "Quarantine/<namespace>/<name>" (the deny rule; allow-list entries carry
// longer IDs and never drop).
func quarantineRef(ruleID string) (policy.ObjectRef, bool) {
	rest, ok := strings.CutPrefix(ruleID, "Quarantine/")
	if !ok {
		return policy.ObjectRef{}, false
	}
	ns, name, ok := strings.Cut(rest, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return policy.ObjectRef{}, false
	}
	return policy.ObjectRef{Kind: KindQuarantine, Namespace: ns, Name: name}, true
}

// Add records rec if a quarantine refused it, and reports whether it did.
func (b *BlockedFlows) Add(rec dataplane.FlowRecord) bool {
	if rec.Verdict != dataplane.VerdictDropped {
		return false
	}
	ref, ok := quarantineRef(rec.RuleID)
	if !ok {
		return false
	}
	f := v1alpha1.QuarantineFlow{
		Time: metav1.NewMicroTime(rec.Time.UTC().Truncate(1000)), Node: rec.Node, Direction: rec.Direction,
		Protocol: protoName(rec.Protocol), Source: hostPort(rec.Src, rec.SrcPort), Destination: hostPort(rec.Dst, rec.DstPort),
		SourcePod: podOf(rec.Source), DestinationPod: podOf(rec.Destination),
	}
	b.mu.Lock()
	if b.pending == nil {
		b.pending = map[policy.ObjectRef]*blockedPending{}
	}
	p := b.pending[ref]
	if p == nil {
		p = &blockedPending{}
		b.pending[ref] = p
	}
	p.flows = append(p.flows, f)
	p.total++
	if over := len(p.flows) - v1alpha1.MaxBlockedFlows; over > 0 {
		p.flows = slices.Delete(p.flows, 0, over)
	}
	notify := b.Notify
	b.mu.Unlock()
	if notify != nil {
		notify(ref)
	}
	return true
}

// Take removes and returns the pending records of one quarantine (oldest
// first) and how many were recorded in all.
func (b *BlockedFlows) Take(ref policy.ObjectRef) ([]v1alpha1.QuarantineFlow, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.pending[ref]
	if p == nil {
		return nil, 0
	}
	delete(b.pending, ref)
	return p.flows, p.total
}

// Return puts records taken but not written back in front of newer ones.
func (b *BlockedFlows) Return(ref policy.ObjectRef, flows []v1alpha1.QuarantineFlow, total int64) {
	if total == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending == nil {
		b.pending = map[policy.ObjectRef]*blockedPending{}
	}
	p := b.pending[ref]
	if p == nil {
		p = &blockedPending{}
		b.pending[ref] = p
	}
	p.flows = append(slices.Clone(flows), p.flows...)
	p.total += total
	if over := len(p.flows) - v1alpha1.MaxBlockedFlows; over > 0 {
		p.flows = slices.Delete(p.flows, 0, over)
	}
}

// Forget drops the pending records of a deleted quarantine.
func (b *BlockedFlows) Forget(ref policy.ObjectRef) {
	b.mu.Lock()
	delete(b.pending, ref)
	b.mu.Unlock()
}

// mergeBlocked merges newer records (oldest first) into a status list
// (newest first), keeping at most MaxBlockedFlows.
func mergeBlocked(status []v1alpha1.QuarantineFlow, newer []v1alpha1.QuarantineFlow) []v1alpha1.QuarantineFlow {
	out := make([]v1alpha1.QuarantineFlow, 0, len(status)+len(newer))
	for i := len(newer) - 1; i >= 0; i-- {
		out = append(out, newer[i])
	}
	out = append(out, status...)
	slices.SortStableFunc(out, func(a, b v1alpha1.QuarantineFlow) int { return b.Time.Compare(a.Time.Time) })
	if len(out) > v1alpha1.MaxBlockedFlows {
		out = out[:v1alpha1.MaxBlockedFlows]
	}
	return out
}

func protoName(p uint8) string {
	switch p {
	case 6:
		return "TCP"
	case 17:
		return "UDP"
	case 132:
		return "SCTP"
	case 1:
		return "ICMP"
	case 58:
		return "ICMPv6"
	}
	return strconv.Itoa(int(p))
}

func hostPort(ip netip.Addr, port uint16) string {
	if !ip.IsValid() {
		return "-"
	}
	if port == 0 {
		return ip.String()
	}
	return netip.AddrPortFrom(ip, port).String()
}

func podOf(ep *dataplane.FlowEndpoint) string {
	if ep == nil || ep.Pod == "" {
		return ""
	}
	return ep.Namespace + "/" + ep.Pod
}

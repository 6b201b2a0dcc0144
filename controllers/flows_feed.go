package controllers

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/attrib"
	"github.com/bulkhead-dev/bulkhead/internal/stream"
	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
)

// FlowFeeder keeps attribution inputs current from the informer cache
// (pod IP history, zone modes, Services) and handles agents' FlowReports:
// edges go to Edges, records are enriched and published on Bus. It runs
// on every replica; only the leader's Edges persists.
type FlowFeeder struct {
	Cache cache.Cache
	Edges *FlowEdges
	Bus   *stream.FlowBus
	// History is shared with Edges.Attributor.
	History *attrib.History
	// Blocked, when set, collects the records quarantines refused.
	Blocked *BlockedFlows

	// svcMu serializes Service table rebuilds, so a report that arrives
	// during a rebuild waits for the new table instead of using the old.
	svcMu      sync.Mutex
	svcRefresh time.Time
	// svcFresh is cleared by Service and EndpointSlice events.
	svcFresh atomic.Bool
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (f *FlowFeeder) NeedLeaderElection() bool { return false }

// OwnerLookup returns an attrib.OwnerLookup reading ReplicaSets and Jobs
// from r; Deployments, StatefulSets, DaemonSets and CronJobs are tops.
func OwnerLookup(ctx context.Context, r client.Reader) attrib.OwnerLookup {
	return func(ns, kind, name string) (attrib.OwnerRef, bool) {
		var obj client.Object
		switch kind {
		case "ReplicaSet":
			obj = &appsv1.ReplicaSet{}
		case "Job":
			obj = &batchv1.Job{}
		default:
			return attrib.OwnerRef{}, true
		}
		gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := r.Get(gctx, client.ObjectKey{Namespace: ns, Name: name}, obj); err != nil {
			return attrib.OwnerRef{}, false
		}
		return controllerOf(obj), true
	}
}

func controllerOf(obj metav1.Object) attrib.OwnerRef {
	if c := metav1.GetControllerOf(obj); c != nil {
		return attrib.OwnerRef{Kind: c.Kind, Name: c.Name}
	}
	return attrib.OwnerRef{}
}

// Start registers the pod and zone handlers and refreshes zone modes
// until ctx ends.
func (f *FlowFeeder) Start(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx).WithName("flows")
	inf, err := f.Cache.GetInformer(ctx, &corev1.Pod{})
	if err != nil {
		return fmt.Errorf("getting pod informer: %w", err)
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { f.pod(ctx, o, false) },
		UpdateFunc: func(_, o any) { f.pod(ctx, o, false) },
		DeleteFunc: func(o any) {
			if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			f.pod(ctx, o, true)
		},
	}); err != nil {
		return fmt.Errorf("adding pod handler: %w", err)
	}
	stale := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { f.svcFresh.Store(false) },
		UpdateFunc: func(any, any) { f.svcFresh.Store(false) },
		DeleteFunc: func(any) { f.svcFresh.Store(false) },
	}
	for _, obj := range []client.Object{&corev1.Service{}, &discoveryv1.EndpointSlice{}} {
		si, err := f.Cache.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("getting %T informer: %w", obj, err)
		}
		if _, err := si.AddEventHandler(stale); err != nil {
			return fmt.Errorf("adding %T handler: %w", obj, err)
		}
	}
	if !f.Cache.WaitForCacheSync(ctx) {
		return fmt.Errorf("caches did not sync")
	}
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		f.refreshZones(ctx, log)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			f.History.Prune(time.Now().Add(-time.Hour))
		}
	}
}

func (f *FlowFeeder) pod(ctx context.Context, o any, deleted bool) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	now := time.Now()
	var ips []netip.Addr
	for _, pip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(pip.IP); err == nil {
			ips = append(ips, a)
		}
	}
	done := deleted || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	if p.Spec.HostNetwork {
		return // host-network pods share the node's address
	}
	if done {
		for _, ip := range ips {
			if cur, ok := f.History.Lookup(ip, now); ok && cur.Namespace == p.Namespace && cur.Name == p.Name {
				f.History.Release(ip, now)
			}
		}
		return
	}
	ap := attrib.Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, Owner: controllerOf(p), Zone: f.zoneOf(ctx, p), Node: p.Spec.NodeName}
	for _, ip := range ips {
		f.History.Assign(ip, ap, now)
	}
}

// zoneOf returns the first zone (by name) whose pod selectors match p.
func (f *FlowFeeder) zoneOf(ctx context.Context, p *corev1.Pod) string {
	var zones v1alpha1.ZoneList
	if err := f.Cache.List(ctx, &zones); err != nil {
		return ""
	}
	var ns corev1.Namespace
	nsLabels := labels.Set{}
	if err := f.Cache.Get(ctx, client.ObjectKey{Name: p.Namespace}, &ns); err == nil {
		nsLabels = ns.Labels
	}
	sort.Slice(zones.Items, func(i, j int) bool { return zones.Items[i].Name < zones.Items[j].Name })
	for _, z := range zones.Items {
		zp := z.Spec.Pods
		if zp == nil {
			continue
		}
		if !selects(zp.NamespaceSelector, nsLabels) || !selects(zp.PodSelector, p.Labels) {
			continue
		}
		return z.Name
	}
	return ""
}

func selects(sel *metav1.LabelSelector, l map[string]string) bool {
	if sel == nil {
		return true
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false
	}
	return s.Matches(labels.Set(l))
}

func (f *FlowFeeder) refreshZones(ctx context.Context, log logr.Logger) {
	var zones v1alpha1.ZoneList
	if err := f.Cache.List(ctx, &zones); err != nil {
		log.Error(err, "listing zones for flow persistence")
		return
	}
	m := attrib.ZoneModes{}
	for _, z := range zones.Items {
		mode := z.Spec.Mode
		if mode == "" {
			mode = v1alpha1.ZoneModeEnforce
		}
		m[z.Name] = mode
	}
	f.Edges.SetZoneModes(m)
	// Zone membership changes with zones and namespace labels, not only
	// with pod events: re-attribute every pod (the same pod keeps its
	// span; only labels and zone are updated).
	var pods corev1.PodList
	if err := f.Cache.List(ctx, &pods); err != nil {
		log.Error(err, "listing pods for flow attribution")
		return
	}
	for i := range pods.Items {
		f.pod(ctx, &pods.Items[i], false)
	}
}

// refreshServices rebuilds the Service table when a Service or
// EndpointSlice changed since the last build (and at least every 30
// seconds, in case events were missed). It holds svcMu for the rebuild:
// a concurrent report waits and then attributes with the new table.
// The flag is set before listing, so an event that lands during the
// list marks the table stale again and the next report rebuilds it.
func (f *FlowFeeder) refreshServices(ctx context.Context) {
	f.svcMu.Lock()
	defer f.svcMu.Unlock()
	if f.svcFresh.Load() && time.Since(f.svcRefresh) < 30*time.Second {
		return
	}
	f.svcFresh.Store(true)
	f.svcRefresh = time.Now()
	var svcs corev1.ServiceList
	var slices discoveryv1.EndpointSliceList
	if f.Cache.List(ctx, &svcs) != nil || f.Cache.List(ctx, &slices) != nil {
		f.svcFresh.Store(false)
		return
	}
	bySvc := map[string][]discoveryv1.EndpointSlice{}
	for _, s := range slices.Items {
		if n := s.Labels[discoveryv1.LabelServiceName]; n != "" {
			bySvc[s.Namespace+"/"+n] = append(bySvc[s.Namespace+"/"+n], s)
		}
	}
	t := &attrib.Services{}
	for _, svc := range svcs.Items {
		for _, cip := range svc.Spec.ClusterIPs {
			ip, err := netip.ParseAddr(cip)
			if err != nil {
				continue
			}
			for _, sp := range svc.Spec.Ports {
				out := attrib.ServicePort{Namespace: svc.Namespace, Name: svc.Name, Protocol: protoNumber(sp.Protocol), Port: uint16(sp.Port)}
				for _, es := range bySvc[svc.Namespace+"/"+svc.Name] {
					var port uint16
					for _, ep := range es.Ports {
						if ep.Port != nil && (ep.Name == nil && sp.Name == "" || ep.Name != nil && *ep.Name == sp.Name) {
							port = uint16(*ep.Port)
						}
					}
					for _, e := range es.Endpoints {
						if e.Conditions.Ready != nil && !*e.Conditions.Ready {
							continue
						}
						for _, a := range e.Addresses {
							if bip, err := netip.ParseAddr(a); err == nil {
								out.Backends = append(out.Backends, attrib.Backend{IP: bip, Port: port})
							}
						}
					}
				}
				t.Set(ip, out)
			}
		}
	}
	f.Edges.SetServices(t)
}

func protoNumber(p corev1.Protocol) uint8 {
	switch p {
	case corev1.ProtocolUDP:
		return 17
	case corev1.ProtocolSCTP:
		return 132
	}
	return 6
}

var verdicts = map[string]v1alpha1.FlowVerdict{
	dataplane.VerdictForwarded: v1alpha1.VerdictForwarded,
	dataplane.VerdictDropped:   v1alpha1.VerdictDropped,
	dataplane.VerdictAudit:     v1alpha1.VerdictAudit,
}

// OnFlows handles one agent's FlowReport (stream.Server.OnFlows).
func (f *FlowFeeder) OnFlows(node string, r *pb.FlowReport) {
	ctx := context.Background()
	f.refreshServices(ctx)
	var edges []attrib.AddrEdge
	for _, e := range r.GetEdges() {
		src, ok1 := netip.AddrFromSlice(e.GetSrc())
		dst, ok2 := netip.AddrFromSlice(e.GetDst())
		v, ok3 := verdicts[e.GetVerdict()]
		if !ok1 || !ok2 || !ok3 || e.GetProtocol() > 255 || e.GetPort() > 65535 {
			continue
		}
		// A forwarded flow between pods on two nodes is seen by both
		// agents; it counts at the source pod's node only.
		if v == v1alpha1.VerdictForwarded {
			if p, ok := f.History.Lookup(src, time.Unix(0, e.GetLastSeenUnixNano())); ok && p.Node != "" && p.Node != node {
				continue
			}
		}
		edges = append(edges, attrib.AddrEdge{
			Src: src.Unmap(), Dst: dst.Unmap(), Protocol: uint8(e.GetProtocol()), Port: uint16(e.GetPort()), Verdict: v,
			Connections: int64(e.GetConnections()), Packets: int64(e.GetPackets()), Bytes: int64(e.GetBytes()),
			FirstSeen: time.Unix(0, e.GetFirstSeenUnixNano()), LastSeen: time.Unix(0, e.GetLastSeenUnixNano()),
		})
	}
	f.Edges.Report(edges)
	publish := f.Bus != nil && f.Bus.Subscribers() > 0
	if !publish && f.Blocked == nil {
		return
	}
	for _, fl := range r.GetRecords() {
		// Without subscribers only quarantine drops are decoded.
		if !publish && !strings.Contains(fl.GetJson(), `"Quarantine/`) {
			continue
		}
		rec, err := stream.DecodeFlow(fl)
		if err != nil {
			continue
		}
		rec.Node = node
		rec.Source = f.enrich(rec.Source, rec.Src, rec.Time)
		rec.Destination = f.enrich(rec.Destination, rec.Dst, rec.Time)
		if f.Blocked != nil {
			f.Blocked.Add(rec)
		}
		if publish {
			f.Bus.Publish(rec)
		}
	}
}

func (f *FlowFeeder) enrich(ep *dataplane.FlowEndpoint, ip netip.Addr, at time.Time) *dataplane.FlowEndpoint {
	p, ok := f.History.Lookup(ip, at)
	if !ok {
		return ep
	}
	if ep == nil {
		ep = &dataplane.FlowEndpoint{}
	}
	ep.Namespace, ep.Pod, ep.Labels, ep.Zone = p.Namespace, p.Name, p.Labels, p.Zone
	return ep
}

// setupFlows adds the flow pipeline to mgr and connects it to srv: a
// FlowFeeder on every replica and, on the leader, FlowEdges persisting
// every persistEvery.
func setupFlows(ctx context.Context, mgr manager.Manager, srv *stream.Server, persistEvery time.Duration, blocked *BlockedFlows) error {
	h := attrib.NewHistory()
	edges := &FlowEdges{Client: mgr.GetClient(), Interval: persistEvery,
		Attributor: &attrib.Attributor{History: h, Owners: OwnerLookup(ctx, mgr.GetCache()), Services: &attrib.Services{}}}
	feeder := &FlowFeeder{Cache: mgr.GetCache(), Edges: edges, Bus: &stream.FlowBus{}, History: h, Blocked: blocked}
	srv.OnFlows, srv.FlowBus = feeder.OnFlows, feeder.Bus
	if err := mgr.Add(feeder); err != nil {
		return err
	}
	return mgr.Add(edges)
}

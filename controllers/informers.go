package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// +kubebuilder:rbac:groups="",resources=pods;namespaces;nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=segmentation.bulkhead.dev,resources=zones;zonepolicies;quarantines,verbs=get;list;watch

// Feeder connects informers to the model. It runs on every replica (it
// needs no leader): it registers handlers, waits for the caches to sync,
// publishes the first full view, marks the hub ready, and then runs the
// model's debounced publisher.
type Feeder struct {
	Cache cache.Cache
	Model *Model
	// Upstream are the upstream admin policy kinds to watch as well (see
	// DiscoverUpstream); empty when their CRDs are not installed.
	Upstream []client.Object
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every
// replica serves agents.
func (f *Feeder) NeedLeaderElection() bool { return false }

// watched lists the objects fed to the engine.
func watched() []client.Object {
	return []client.Object{
		&corev1.Namespace{}, &corev1.Pod{}, &corev1.Node{}, &networkingv1.NetworkPolicy{},
		&v1alpha1.Zone{}, &v1alpha1.ZonePolicy{}, &v1alpha1.Quarantine{},
	}
}

// Start implements manager.Runnable.
func (f *Feeder) Start(ctx context.Context) error {
	for _, obj := range append(watched(), f.Upstream...) {
		inf, err := f.Cache.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("getting informer for %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc: f.Model.Upsert,
			UpdateFunc: func(old, cur any) {
				if unchangedForEngine(old, cur) {
					return
				}
				f.Model.Upsert(cur)
			},
			DeleteFunc: func(obj any) {
				if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
					obj = d.Obj
				}
				f.Model.Delete(obj)
			},
		}); err != nil {
			return fmt.Errorf("adding handler for %T: %w", obj, err)
		}
	}
	if !f.Cache.WaitForCacheSync(ctx) {
		return fmt.Errorf("caches did not sync")
	}
	f.Model.Publish()
	f.Model.Hub().MarkReady()
	f.Model.log.Info("initial view published; serving agents", "epoch", f.Model.Hub().Epoch())
	return f.Model.Run(ctx)
}

// unchangedForEngine drops updates the engine cannot see: status-only
// writes to our own objects (a Quarantine's phase excepted) and resyncs
// with the same resourceVersion.
func unchangedForEngine(old, cur any) bool {
	o, ok1 := old.(client.Object)
	c, ok2 := cur.(client.Object)
	if !ok1 || !ok2 {
		return false
	}
	if o.GetResourceVersion() == c.GetResourceVersion() {
		return true
	}
	switch cq := cur.(type) {
	case *v1alpha1.Zone, *v1alpha1.ZonePolicy:
		return o.GetGeneration() == c.GetGeneration()
	case *v1alpha1.Quarantine:
		oq := old.(*v1alpha1.Quarantine)
		return o.GetGeneration() == c.GetGeneration() && oq.Status.Phase == cq.Status.Phase
	case *corev1.Node:
		// existence, labels and addresses matter (upstream nodes peers)
		on := old.(*corev1.Node)
		return labelsEqual(on.Labels, cq.Labels) && addressesEqual(on.Status.Addresses, cq.Status.Addresses)
	}
	return false
}

func labelsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func addressesEqual(a, b []corev1.NodeAddress) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/attrib"
)

// +kubebuilder:rbac:groups=segmentation.bulkhead.dev,resources=flowedgesets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apps,resources=replicasets;deployments;statefulsets;daemonsets,verbs=get;list;watch
// +kubebuilder:rbac:groups=batch,resources=jobs;cronjobs,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch

// FlowEdges merges the address-level edges agents report into
// workload-level edges and persists them in FlowEdgeSets.
//
// Persistence rule: every Audit and Dropped edge, and Forwarded edges with
// an endpoint in a zone in Learn or Audit mode (attrib.ZoneModes.Persisted).
// Sets are named attrib.SetName(i) and sharded by attrib.Shard; Persist
// writes only shards whose content changed and deletes shards beyond the
// current count. Run persists at most every Interval and only runs on the
// leader (a manager Runnable that needs leader election).
type FlowEdges struct {
	Client     client.Client
	Attributor *attrib.Attributor
	// Interval is the least time between two writes (default 10s).
	Interval time.Duration
	// MaxEdges caps the merged edges kept in memory (default 20000).
	MaxEdges int

	mu      sync.Mutex
	store   *attrib.Store
	modes   attrib.ZoneModes
	written map[string]v1alpha1.FlowEdgeSetSpec
}

func (f *FlowEdges) init() {
	if f.store == nil {
		max := f.MaxEdges
		if max == 0 {
			max = 20000
		}
		f.store = attrib.NewStore(max)
		f.written = map[string]v1alpha1.FlowEdgeSetSpec{}
	}
}

// SetZoneModes replaces the zone modes the persistence rule reads.
func (f *FlowEdges) SetZoneModes(m attrib.ZoneModes) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.modes = m
}

// SetServices replaces the Service table attribution reads.
func (f *FlowEdges) SetServices(s *attrib.Services) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Attributor.Services = s
}

// Load merges the persisted FlowEdgeSets into memory, as after a restart.
func (f *FlowEdges) Load(ctx context.Context) error {
	var list v1alpha1.FlowEdgeSetList
	if err := f.Client.List(ctx, &list); err != nil {
		return fmt.Errorf("listing flow edge sets: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	f.store.Load(list.Items)
	for _, s := range list.Items {
		if strings.HasPrefix(s.Name, attrib.SetNamePrefix) {
			f.written[s.Name] = *s.Spec.DeepCopy()
		}
	}
	return nil
}

// Report attributes and merges edges from one agent. It returns how many
// were kept.
func (f *FlowEdges) Report(edges []attrib.AddrEdge) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	kept := 0
	for _, e := range edges {
		fe, ok := f.Attributor.Attribute(e)
		if !ok || !f.modes.Persisted(&fe) {
			continue
		}
		if f.store.Merge(fe) {
			kept++
		}
	}
	return kept
}

// Edges returns the merged edges.
func (f *FlowEdges) Edges() []v1alpha1.FlowEdge {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	return f.store.Edges()
}

// Dropped is the number of edges refused because memory was full.
func (f *FlowEdges) Dropped() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	return f.store.Dropped()
}

// Persist writes the shards that changed since the last write and deletes
// stale ones.
func (f *FlowEdges) Persist(ctx context.Context) error {
	f.mu.Lock()
	f.init()
	if !f.store.Dirty() {
		f.mu.Unlock()
		return nil
	}
	sets := attrib.Shard(f.store.Edges())
	f.store.MarkClean()
	written := make(map[string]v1alpha1.FlowEdgeSetSpec, len(f.written))
	for k, v := range f.written {
		written[k] = v
	}
	f.mu.Unlock()

	var errs []error
	keep := map[string]bool{}
	for i := range sets {
		s := &sets[i]
		keep[s.Name] = true
		if old, ok := written[s.Name]; ok && equality.Semantic.DeepEqual(old, s.Spec) {
			continue
		}
		if err := f.write(ctx, s); err != nil {
			errs = append(errs, err)
			continue
		}
		written[s.Name] = s.Spec
	}
	var list v1alpha1.FlowEdgeSetList
	if err := f.Client.List(ctx, &list); err != nil {
		errs = append(errs, fmt.Errorf("listing flow edge sets: %w", err))
	}
	for i := range list.Items {
		s := &list.Items[i]
		if !strings.HasPrefix(s.Name, attrib.SetNamePrefix) || keep[s.Name] {
			continue
		}
		if err := f.Client.Delete(ctx, s); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting flow edge set %s: %w", s.Name, err))
			continue
		}
		delete(written, s.Name)
	}
	f.mu.Lock()
	f.written = written
	if len(errs) > 0 {
		f.store.MarkDirty() // retry on the next round
	}
	f.mu.Unlock()
	return errors.Join(errs...)
}

func (f *FlowEdges) write(ctx context.Context, s *v1alpha1.FlowEdgeSet) error {
	var cur v1alpha1.FlowEdgeSet
	err := f.Client.Get(ctx, client.ObjectKey{Name: s.Name}, &cur)
	switch {
	case apierrors.IsNotFound(err):
		obj := &v1alpha1.FlowEdgeSet{Spec: s.Spec}
		obj.Name = s.Name
		obj.Labels = map[string]string{"app.kubernetes.io/managed-by": "bulkhead"}
		if err := f.Client.Create(ctx, obj); err != nil {
			return fmt.Errorf("creating flow edge set %s: %w", s.Name, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("reading flow edge set %s: %w", s.Name, err)
	}
	cur.Spec = s.Spec
	if err := f.Client.Update(ctx, &cur); err != nil {
		return fmt.Errorf("updating flow edge set %s: %w", s.Name, err)
	}
	return nil
}

// Start loads the persisted sets, then persists every Interval until ctx
// ends, and once more at the end. It implements manager.Runnable; the
// manager runs it only on the leader.
func (f *FlowEdges) Start(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx).WithName("flowedges")
	if err := f.Load(ctx); err != nil {
		return err
	}
	iv := f.Interval
	if iv <= 0 {
		iv = 10 * time.Second
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := f.Persist(fctx); err != nil {
				log.Error(err, "persisting flow edges at shutdown")
			}
			return nil
		case <-t.C:
			if err := f.Persist(ctx); err != nil {
				log.Error(err, "persisting flow edges")
			}
		}
	}
}

package controllers

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/stream"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// zoneWorld feeds m one node, one namespace, one pod on the node and a
// zone "pci" selecting the pod's namespace.
func zoneWorld(m *Model) *v1alpha1.Zone {
	m.Upsert(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	m.Upsert(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "pay", Labels: map[string]string{"tier": "pci"}}})
	m.Upsert(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "pay", Name: "api", Labels: map[string]string{"app": "api"}},
		Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Image: "x"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.2", PodIPs: []corev1.PodIP{{IP: "10.244.1.2"}}},
	})
	z := &v1alpha1.Zone{ObjectMeta: metav1.ObjectMeta{Name: "pci", Generation: 1}, Spec: v1alpha1.ZoneSpec{
		Mode: v1alpha1.ZoneModeEnforce,
		Pods: &v1alpha1.ZonePods{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "pci"}}},
	}}
	m.Upsert(z)
	return z
}

func TestAChangedObjectIsNotEnforcedUntilItsNewFormIsPublishedAndAcked(t *testing.T) {
	hub := stream.NewHub()
	m := NewModel(hub, 0, nil, logr.Discard())
	z := zoneWorld(m)
	ref := policy.ObjectRef{Kind: KindZone, Name: "pci"}
	m.Publish()
	if !hub.Ack("n1", hub.Epoch(), hub.Generation("n1"), "") {
		t.Fatal("ack refused")
	}
	if s := summarize(m.Realization(ref)); !s.enforced || len(s.real.Desired) != 1 {
		t.Fatalf("after publish and ack: %q, want enforced on 1/1", s.message)
	}

	z = z.DeepCopy()
	z.Generation = 2
	z.Spec.IntraZone = v1alpha1.IntraZoneDeny
	m.Upsert(z)
	s := summarize(m.Realization(ref))
	if s.enforced {
		t.Fatalf("a zone changed but not yet published reads %q; the nodes hold its old form", s.message)
	}
	m.Publish()
	if s := summarize(m.Realization(ref)); s.enforced {
		t.Fatalf("published but not acked: %q", s.message)
	}
	if !hub.Ack("n1", hub.Epoch(), hub.Generation("n1"), "") {
		t.Fatal("ack refused")
	}
	if s := summarize(m.Realization(ref)); !s.enforced {
		t.Fatalf("after the new generation's ack: %q, want enforced", s.message)
	}
}

// frozenZones returns a client whose Get of a Zone always answers the
// first copy it read, like an informer cache that never sees the
// controller's own status writes; everything else goes to c.
func frozenZones(c client.WithWatch) client.Client {
	var mu sync.Mutex
	seen := map[client.ObjectKey]*v1alpha1.Zone{}
	return interceptor.NewClient(c, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			z, ok := obj.(*v1alpha1.Zone)
			if !ok {
				return c.Get(ctx, key, obj, opts...)
			}
			mu.Lock()
			defer mu.Unlock()
			if old, ok := seen[key]; ok {
				old.DeepCopyInto(z)
				return nil
			}
			if err := c.Get(ctx, key, z, opts...); err != nil {
				return err
			}
			seen[key] = z.DeepCopy()
			return nil
		},
	})
}

func TestZoneStatusIsWrittenWhenTheCacheLagsBehindTheControllersOwnWrites(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: Scheme(), Metrics: metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	direct, err := client.NewWithWatch(env.Config, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	hub := stream.NewHub()
	metrics := NewMetrics(prometheus.NewRegistry())
	m := NewModel(hub, 0, metrics, logr.Discard())
	z := zoneWorld(m)
	m.Publish()
	r := &StatusReconciler{Client: frozenZones(direct), Reader: mgr.GetAPIReader(), Model: m, Metrics: metrics}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	go func() { _ = mgr.Start(ctx) }()

	created := &v1alpha1.Zone{ObjectMeta: metav1.ObjectMeta{Name: z.Name}, Spec: z.Spec}
	if err := env.Client.Create(ctx, created); err != nil {
		t.Fatal(err)
	}
	// The first write (nothing acked yet) matches the frozen copy's
	// resourceVersion; every later one conflicts against it.
	waitZoneCondition(ctx, t, env.Client, "pci", metav1.ConditionFalse, "Pending")
	if !hub.Ack("n1", hub.Epoch(), hub.Generation("n1"), "") {
		t.Fatal("ack refused")
	}
	waitZoneCondition(ctx, t, env.Client, "pci", metav1.ConditionTrue, "Enforced")
	if n := testutil.ToFloat64(metrics.StatusConflicts); n < 1 {
		t.Fatalf("status_conflicts_total = %v: the cache never lagged, so the test proved nothing", n)
	}
}

func waitZoneCondition(ctx context.Context, t *testing.T, c client.Client, name string, status metav1.ConditionStatus, reason string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		var z v1alpha1.Zone
		if err := c.Get(ctx, client.ObjectKey{Name: name}, &z); err == nil {
			if cnd := meta.FindStatusCondition(z.Status.Conditions, v1alpha1.ConditionEnforced); cnd != nil {
				if cnd.Status == status && cnd.Reason == reason {
					return
				}
				last = string(cnd.Status) + " " + cnd.Reason + ": " + cnd.Message
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("zone %s: Enforced=%s %s not reached in 10s; last condition: %q", name, status, reason, last)
}

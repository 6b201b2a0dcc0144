package lab

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// FieldManager is the server-side apply field manager of `lab apply`.
const FieldManager = "bulkhead-lab"

// ApplyResult is one applied object.
type ApplyResult struct {
	Where string
	Kind  string
	Name  string // ns/name or name
	// Generation is metadata.generation after the apply.
	Generation int64
	obj        *unstructured.Unstructured
}

// Apply server-side-applies every object (force ownership, field manager
// bulkhead-lab), in order. Namespaced objects without a namespace go to
// "default". Every failure is reported, naming the file and document.
func Apply(ctx context.Context, c client.Client, objs []SourcedObject) ([]ApplyResult, error) {
	var out []ApplyResult
	var errs []error
	for _, so := range objs {
		u := so.Obj.DeepCopy()
		namespaced, err := c.IsObjectNamespaced(u)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s is not served by the API server: %w", so.Where, u.GroupVersionKind(), err))
			continue
		}
		if namespaced && u.GetNamespace() == "" {
			u.SetNamespace("default")
		}
		if !namespaced {
			u.SetNamespace("")
		}
		u.SetResourceVersion("")
		u.SetManagedFields(nil)
		delete(u.Object, "status")
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
			errs = append(errs, fmt.Errorf("%s: applying: %w", so.Where, err))
			continue
		}
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(u.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKeyFromObject(u), got); err != nil {
			errs = append(errs, fmt.Errorf("%s: reading back: %w", so.Where, err))
			continue
		}
		out = append(out, ApplyResult{Where: so.Where, Kind: u.GetKind(), Name: objName(u), Generation: got.GetGeneration(), obj: got})
	}
	return out, errors.Join(errs...)
}

// NeedsEnforcement reports whether the controller reports an Enforced
// condition for this kind.
func (r ApplyResult) NeedsEnforcement() bool {
	return r.obj.GroupVersionKind().Group == v1alpha1.GroupVersion.Group &&
		(r.Kind == "Zone" || r.Kind == "ZonePolicy" || r.Kind == "Quarantine")
}

// WaitEnforced polls until every Zone, ZonePolicy and Quarantine among
// results has condition Enforced=True for its current generation (the
// condition's observedGeneration, when set, must be at least the applied
// generation), or until timeout. The error names every object still
// waiting, with its current condition.
func WaitEnforced(ctx context.Context, c client.Client, results []ApplyResult, timeout time.Duration, progress func(string)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pending := map[int]string{}
	for i, r := range results {
		if r.NeedsEnforcement() {
			pending[i] = "no Enforced condition yet"
		}
	}
	readErr := map[int]string{} // the condition seen before a failed read
	lastReport := time.Time{}
	for len(pending) > 0 {
		for i := range pending {
			r := results[i]
			got := &unstructured.Unstructured{}
			got.SetGroupVersionKind(r.obj.GroupVersionKind())
			if err := c.Get(ctx, types.NamespacedName{Namespace: r.obj.GetNamespace(), Name: r.obj.GetName()}, got); err != nil {
				if ctx.Err() != nil {
					break
				}
				// Keep the last condition seen: a read that fails near
				// the deadline must not hide why the object waited.
				if _, ok := readErr[i]; !ok {
					readErr[i] = pending[i]
				}
				pending[i] = readErr[i] + " (last read failed: " + err.Error() + ")"
				continue
			}
			delete(readErr, i)
			ok, why := enforced(got, r.Generation)
			if ok {
				delete(pending, i)
				progress(fmt.Sprintf("%s %s: enforced", r.Kind, r.Name))
			} else {
				pending[i] = why
			}
		}
		if len(pending) == 0 {
			break
		}
		if time.Since(lastReport) > 5*time.Second {
			progress(fmt.Sprintf("waiting for %d objects to be enforced: %s", len(pending), pendingSummary(results, pending)))
			lastReport = time.Now()
		}
		select {
		case <-ctx.Done():
			var lines []string
			for i, why := range pending {
				lines = append(lines, fmt.Sprintf("  %s %s (%s): %s", results[i].Kind, results[i].Name, results[i].Where, why))
			}
			return fmt.Errorf("not enforced after %s:\n%s", timeout, strings.Join(lines, "\n"))
		case <-time.After(200 * time.Millisecond): // within the client's default 5 QPS
		}
	}
	return nil
}

// pendingSummary names the waiting objects and why, sorted by input order.
func pendingSummary(results []ApplyResult, pending map[int]string) string {
	idx := make([]int, 0, len(pending))
	for i := range pending {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	parts := make([]string, 0, len(idx))
	for _, i := range idx {
		parts = append(parts, fmt.Sprintf("%s %s (%s)", results[i].Kind, results[i].Name, pending[i]))
	}
	return strings.Join(parts, "; ")
}

func enforced(u *unstructured.Unstructured, gen int64) (bool, string) {
	raw, found, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	if !found {
		return false, "no status conditions yet"
	}
	for _, rc := range raw {
		m, ok := rc.(map[string]any)
		if !ok || m["type"] != v1alpha1.ConditionEnforced {
			continue
		}
		var cnd metav1.Condition
		if err := runtimeFromMap(m, &cnd); err != nil {
			return false, "malformed Enforced condition: " + err.Error()
		}
		if cnd.ObservedGeneration != 0 && cnd.ObservedGeneration < gen {
			return false, fmt.Sprintf("Enforced condition is for generation %d, want %d", cnd.ObservedGeneration, gen)
		}
		if cnd.Status != metav1.ConditionTrue {
			return false, fmt.Sprintf("Enforced=%s: %s: %s", cnd.Status, cnd.Reason, cnd.Message)
		}
		return true, ""
	}
	return false, "no Enforced condition yet"
}

func runtimeFromMap(m map[string]any, into any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructured(m, into)
}

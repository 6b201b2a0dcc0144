package crd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

func TestSamplesAreAccepted(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	createNamespaces(ctx, t, env.Client, "web", "api")

	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "samples", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 5 {
		t.Fatalf("expected the samples in config/samples, found %d files", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			obj := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(data, &obj.Object); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if err := env.Client.Create(ctx, obj); err != nil {
				t.Fatalf("%s: creating %s %s: %v", f, obj.GetKind(), obj.GetName(), err)
			}
		})
	}
}

// TestDefaults checks the defaults the schema applies, which the engine
// relies on.
func TestDefaults(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	createNamespaces(ctx, t, env.Client, "ns1")
	for i, tc := range []struct {
		name string
		doc  string
		path []string
		want any
	}{
		{"zone mode defaults to Enforce", zoneDoc(`pods: {}`), []string{"spec", "mode"}, "Enforce"},
		{"zone intraZone defaults to Allow", zoneDoc(`pods: {}`), []string{"spec", "intraZone"}, "Allow"},
		{"quarantine cuts connections by default", quarantineDoc(`podName: p
  reason: r`), []string{"spec", "cutConnections"}, true},
		{"port protocol defaults to TCP", zonePolicyDoc(`ports: [{port: 80}]`), nil, "TCP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := decode(t, tc.doc)
			obj.SetName(fmt.Sprintf("%s-%d", obj.GetName(), i))
			if err := env.Client.Create(ctx, obj); err != nil {
				t.Fatalf("create: %v", err)
			}
			got := &unstructured.Unstructured{}
			got.SetGroupVersionKind(obj.GroupVersionKind())
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), got); err != nil {
				t.Fatal(err)
			}
			var v any
			var found bool
			if tc.path == nil {
				ports, _, _ := unstructured.NestedSlice(got.Object, "spec", "ports")
				if len(ports) == 1 {
					v, found = ports[0].(map[string]any)["protocol"]
				}
			} else {
				v, found, _ = unstructured.NestedFieldNoCopy(got.Object, tc.path...)
			}
			if !found || v != tc.want {
				t.Fatalf("got %v (found=%v), want %v", v, found, tc.want)
			}
		})
	}
}

// TestInvalidObjectsAreRejected applies objects that break one rule each
// and requires the API server to refuse them with a message naming the
// field.
func TestInvalidObjectsAreRejected(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	createNamespaces(ctx, t, env.Client, "ns1")

	cases := []struct {
		name      string
		doc       string
		wantField string // must appear in the error
		wantMsg   string // must appear in the error
	}{
		{"zone with both pods and networks", zoneDoc("pods: {}\n  networks: [{cidr: 10.0.0.0/8}]"), "spec", "exactly one of pods or networks"},
		{"zone with neither pods nor networks", zoneDoc("mode: Enforce"), "spec", "exactly one of pods or networks"},
		{"zone network with a bad CIDR", zoneDoc("networks: [{cidr: 10.0.0/8}]"), "spec.networks[0].cidr", "valid CIDR"},
		{"zone network except outside the CIDR", zoneDoc("networks: [{cidr: 10.0.0.0/8, except: [192.168.0.0/16]}]"), "spec.networks[0].except", "inside cidr"},
		{"zone with an unknown mode", zoneDoc("pods: {}\n  mode: Block"), "spec.mode", "Unsupported value"},
		{"zone with an unknown intraZone posture", zoneDoc("pods: {}\n  intraZone: Maybe"), "spec.intraZone", "Unsupported value"},
		{"zone named after a reserved peer", strings.Replace(zoneDoc("pods: {}"), "name: z", "name: world", 1), "metadata.name", "reserved"},
		{"zone policy priority above 1000", zonePolicyDoc("priority: 1001"), "spec.priority", "1000"},
		{"zone policy priority below 0", zonePolicyDoc("priority: -1"), "spec.priority", "0"},
		{"zone policy with an unknown action", strings.Replace(zonePolicyDoc(""), "action: Accept", "action: Allow", 1), "spec.action", "Unsupported value"},
		{"zone policy port 0", zonePolicyDoc("ports: [{port: 0}]"), "spec.ports[0].port", "between 1 and 65535"},
		{"zone policy port 70000", zonePolicyDoc("ports: [{port: 70000}]"), "spec.ports[0].port", "between 1 and 65535"},
		{"zone policy endPort below port", zonePolicyDoc("ports: [{port: 8080, endPort: 80}]"), "spec.ports[0].endPort", "must not be below port"},
		{"zone policy endPort with a named port", zonePolicyDoc("ports: [{port: http, endPort: 90}]"), "spec.ports[0].endPort", "numeric port"},
		{"zone policy named port that is no IANA_SVC_NAME", zonePolicyDoc("ports: [{port: a-very-long-port-name}]"), "spec.ports[0].port", "IANA_SVC_NAME"},
		{"zone policy with an unknown protocol", zonePolicyDoc("ports: [{protocol: ICMP, port: 1}]"), "spec.ports[0].protocol", "Unsupported value"},
		{"zone policy with no source zones", strings.Replace(zonePolicyDoc(""), "from: [a]", "from: []", 1), "spec.from", "at least 1"},
		{"zone policy auditOnly on an Accept", zonePolicyDoc("auditOnly: true"), "spec.auditOnly", "only meaningful with action Deny"},
		{"zone policy peer that is not a DNS label", strings.Replace(zonePolicyDoc(""), "to: [b]", "to: [Bad_Zone]", 1), "spec.to[0]", "should match"},
		{"quarantine without a reason", quarantineDoc("podName: p"), "spec.reason", "Required value"},
		{"quarantine with a blank reason", quarantineDoc("podName: p\n  reason: '   '"), "spec.reason", "must not be blank"},
		{"quarantine with both podName and podSelector", quarantineDoc("podName: p\n  podSelector: {}\n  reason: r"), "spec", "exactly one of podName or podSelector"},
		{"quarantine with both expireAfter and expireAt", quarantineDoc("podName: p\n  reason: r\n  expireAfter: 1h\n  expireAt: '2030-01-01T00:00:00Z'"), "spec", "at most one of expireAfter or expireAt"},
		{"quarantine forensics peer with two kinds", quarantineDoc("podName: p\n  reason: r\n  allow: {ingress: [{zone: a, cidr: 10.0.0.1/32}]}"), "spec.allow.ingress[0]", "exactly one of zone, cidr or pods"},
		{"quarantine forensics peer with a bad CIDR", quarantineDoc("podName: p\n  reason: r\n  allow: {egress: [{cidr: 300.0.0.1/32}]}"), "spec.allow.egress[0].cidr", "valid CIDR"},
		{"quarantine forensics port 70000", quarantineDoc("podName: p\n  reason: r\n  allow: {egress: [{cidr: 10.0.0.1/32, ports: [{port: 70000}]}]}"), "spec.allow.egress[0].ports[0].port", "between 1 and 65535"},
		{"suggestion with both zone and namespace scope", `apiVersion: segmentation.bulkhead.dev/v1alpha1
kind: PolicySuggestion
metadata: {name: s}
spec:
  scope: {zone: a, namespace: b}`, "spec.scope", "exactly one of zone or namespace"},
		{"suggestion with an unknown state", `apiVersion: segmentation.bulkhead.dev/v1alpha1
kind: PolicySuggestion
metadata: {name: s}
spec:
  scope: {zone: a}
  state: Done`, "spec.state", "Unsupported value"},
	}
	if len(cases) < 15 {
		t.Fatalf("the table must hold at least 15 invalid objects, has %d", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := decode(t, tc.doc)
			err := env.Client.Create(ctx, obj)
			if err == nil {
				t.Fatalf("the API server accepted an invalid object:\n%s", tc.doc)
			}
			if !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) {
				t.Fatalf("want an Invalid error, got %v", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.wantField) {
				t.Errorf("error does not name the field %q:\n%s", tc.wantField, msg)
			}
			if !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("error does not say %q:\n%s", tc.wantMsg, msg)
			}
		})
	}
}

// TestQuarantineReasonIsImmutable checks the transition rules on update.
func TestQuarantineTransitions(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	createNamespaces(ctx, t, env.Client, "ns1")
	obj := decode(t, quarantineDoc("podName: p\n  reason: original"))
	if err := env.Client.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	update := func(t *testing.T, path []string, v any) error {
		t.Helper()
		cur := &unstructured.Unstructured{}
		cur.SetGroupVersionKind(obj.GroupVersionKind())
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), cur); err != nil {
			t.Fatal(err)
		}
		if err := unstructured.SetNestedField(cur.Object, v, path...); err != nil {
			t.Fatal(err)
		}
		return env.Client.Update(ctx, cur)
	}
	if err := update(t, []string{"spec", "reason"}, "rewritten"); err == nil || !strings.Contains(err.Error(), "reason is immutable") {
		t.Fatalf("changing the reason: want 'reason is immutable', got %v", err)
	}
	if err := update(t, []string{"spec", "released"}, true); err != nil {
		t.Fatalf("releasing: %v", err)
	}
	if err := update(t, []string{"spec", "released"}, false); err == nil || !strings.Contains(err.Error(), "cannot be re-armed") {
		t.Fatalf("re-arming: want 'cannot be re-armed', got %v", err)
	}
}

func decode(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
		t.Fatalf("test document does not parse: %v\n%s", err, doc)
	}
	return obj
}

func zoneDoc(spec string) string {
	return "apiVersion: segmentation.bulkhead.dev/v1alpha1\nkind: Zone\nmetadata: {name: z}\nspec:\n  " + spec + "\n"
}

func zonePolicyDoc(extra string) string {
	d := "apiVersion: segmentation.bulkhead.dev/v1alpha1\nkind: ZonePolicy\nmetadata: {name: zp}\nspec:\n  from: [a]\n  to: [b]\n  action: Accept\n"
	if !strings.HasPrefix(extra, "priority:") {
		d += "  priority: 100\n"
	}
	if extra != "" {
		d += "  " + extra + "\n"
	}
	return d
}

func quarantineDoc(spec string) string {
	return "apiVersion: segmentation.bulkhead.dev/v1alpha1\nkind: Quarantine\nmetadata: {name: q, namespace: ns1}\nspec:\n  " + spec + "\n"
}

func createNamespaces(ctx context.Context, t *testing.T, c client.Client, names ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, n := range names {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil {
			t.Fatalf("creating namespace %s: %v", n, err)
		}
	}
}

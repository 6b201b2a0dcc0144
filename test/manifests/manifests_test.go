package manifests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/controllers"
	"github.com/bulkhead-dev/bulkhead/internal/stream"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// Kustomize is the kustomize the rendered copies are made with.
const Kustomize = "sigs.k8s.io/kustomize/kustomize/v5@v5.8.2"

// renders maps each committed rendering to the kustomization it comes
// from, relative to the repository root.
var renders = map[string]string{
	"test/manifests/testdata/bulkhead.yaml":      "config/default",
	"test/manifests/testdata/bulkhead-ebpf.yaml": "test/manifests/testdata/ebpf",
}

const namespace = "bulkhead-system"

func root(t *testing.T) string {
	t.Helper()
	r := testenv.RepoRoot()
	if r == "" {
		t.Fatal("no Bulkhead checkout found (set BULKHEAD_REPO)")
	}
	return r
}

// TestRenderedCopiesAreFresh renders every kustomization again and
// compares the output with the committed copy, so the copies the other
// tests check are the manifests users install.
func TestRenderedCopiesAreFresh(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: building kustomize takes up to a minute")
	}
	r := root(t)
	for file, dir := range renders {
		t.Run(dir, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "go", "run", Kustomize, "build", dir)
			cmd.Dir = r
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			got, err := cmd.Output()
			if err != nil {
				t.Fatalf("go run %s build %s: %v\n%s", Kustomize, dir, err, stderr.String())
			}
			want, err := os.ReadFile(filepath.Join(r, file))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("%s is stale; refresh it with\n  go run %s build %s > %s\n(-committed +rendered):\n%s", file, Kustomize, dir, file, diff)
			}
		})
	}
}

// load decodes a multi-document YAML file into objects.
func load(t *testing.T, file string) []*unstructured.Unstructured {
	t.Helper()
	f, err := os.Open(filepath.Join(root(t), file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	var objs []*unstructured.Unstructured
	for i := 1; ; i++ {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("%s: document %d: %v", file, i, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		objs = append(objs, u)
	}
	if len(objs) == 0 {
		t.Fatalf("%s: no objects", file)
	}
	return objs
}

func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s in the rendered manifests", kind, name)
	return nil
}

func convert[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, out, true); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return out
}

// TestRenderedShape checks the properties of the workloads that the code
// and docs/operations.md rely on.
func TestRenderedShape(t *testing.T) {
	objs := load(t, "test/manifests/testdata/bulkhead.yaml")

	for _, o := range objs {
		if o.GetKind() == "Namespace" || o.GetKind() == "CustomResourceDefinition" || strings.HasPrefix(o.GetKind(), "Cluster") {
			continue
		}
		if strings.HasSuffix(o.GetKind(), "AdmissionPolicy") || strings.HasSuffix(o.GetKind(), "AdmissionPolicyBinding") {
			// Cluster-scoped, and kustomize does not know it: a
			// namespace here means config/admission slipped under
			// config/install's namespace transformer.
			if o.GetNamespace() != "" {
				t.Errorf("%s %s is in namespace %q, want none (cluster-scoped)", o.GetKind(), o.GetName(), o.GetNamespace())
			}
			continue
		}
		if o.GetNamespace() != namespace {
			t.Errorf("%s %s is in namespace %q, want %q", o.GetKind(), o.GetName(), o.GetNamespace(), namespace)
		}
	}

	dep := convert[appsv1.Deployment](t, find(t, objs, "Deployment", "bulkhead-controller"))
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
		t.Errorf("controller replicas = %v, want 2", dep.Spec.Replicas)
	}
	cc := dep.Spec.Template.Spec.Containers[0]
	if !slices.Contains(cc.Args, "--leader-elect") {
		t.Errorf("controller args %v lack --leader-elect", cc.Args)
	}
	checkImage(t, "controller", cc.Image, "ghcr.io/bulkhead-dev/bulkhead-controller:")
	ps := dep.Spec.Template.Spec.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser == 0 {
		t.Errorf("controller pod must run as a non-root uid: %+v", ps)
	}
	checkHardened(t, "controller", cc.SecurityContext, nil)
	checkProbes(t, "controller", cc, "--health-addr=:")
	if cc.Resources.Requests.Cpu().IsZero() || cc.Resources.Requests.Memory().IsZero() {
		t.Errorf("controller has no cpu/memory requests: %v", cc.Resources.Requests)
	}
	for _, p := range []string{"stream", "metrics"} {
		if !hasPort(cc.Ports, p) {
			t.Errorf("controller container has no port %q", p)
		}
	}

	svc := convert[corev1.Service](t, find(t, objs, "Service", "bulkhead-controller"))
	ports := map[string]int32{}
	for _, p := range svc.Spec.Ports {
		ports[p.Name] = p.Port
	}
	if diff := cmp.Diff(map[string]int32{"stream": 9443, "metrics": 8080}, ports); diff != "" {
		t.Errorf("controller Service ports (-want +got):\n%s", diff)
	}

	ds := convert[appsv1.DaemonSet](t, find(t, objs, "DaemonSet", "bulkhead-agent"))
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("agent: hostNetwork=%v dnsPolicy=%q, want true and ClusterFirstWithHostNet", spec.HostNetwork, spec.DNSPolicy)
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Operator == corev1.TolerationOpExists && tl.Key == "" && tl.Effect == ""
	}) {
		t.Errorf("agent does not tolerate every taint: %+v", spec.Tolerations)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("agent must not automount an API token")
	}
	ac := spec.Containers[0]
	checkImage(t, "agent", ac.Image, "ghcr.io/bulkhead-dev/bulkhead-agent:")
	checkHardened(t, "agent", ac.SecurityContext, []corev1.Capability{"NET_ADMIN"})
	checkProbes(t, "agent", ac, "--health-addr=:")
	if !slices.Contains(ac.Args, "--controller=bulkhead-controller.$(POD_NAMESPACE).svc:9443") {
		t.Errorf("agent args %v do not name the controller Service's stream port", ac.Args)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	mounts := map[string]string{}
	for _, m := range ac.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	if v := vols["ca"]; v.ConfigMap == nil || v.ConfigMap.Name != controllers.CAConfigMap {
		t.Errorf("agent CA volume is not ConfigMap %s: %+v", controllers.CAConfigMap, v)
	} else if want := mounts["ca"] + "/" + controllers.CAKey; !slices.Contains(ac.Args, "--ca-file="+want) {
		t.Errorf("agent --ca-file is not %s: %v", want, ac.Args)
	}
	if v := vols["token"]; v.Projected == nil || len(v.Projected.Sources) != 1 || v.Projected.Sources[0].ServiceAccountToken == nil ||
		v.Projected.Sources[0].ServiceAccountToken.Audience != stream.Audience {
		t.Errorf("agent token volume is not a projected token for audience %q: %+v", stream.Audience, v)
	} else if want := mounts["token"] + "/" + v.Projected.Sources[0].ServiceAccountToken.Path; !slices.Contains(ac.Args, "--token-file="+want) {
		t.Errorf("agent --token-file is not %s: %v", want, ac.Args)
	}
	if v := vols["state"]; v.HostPath == nil || !slices.Contains(ac.Args, "--state-dir="+mounts["state"]) {
		t.Errorf("agent state dir is not a hostPath mounted at --state-dir: %+v %v", v, ac.Args)
	}

	ebpf := load(t, "test/manifests/testdata/bulkhead-ebpf.yaml")
	eds := convert[appsv1.DaemonSet](t, find(t, ebpf, "DaemonSet", "bulkhead-agent"))
	ec := eds.Spec.Template.Spec.Containers[0]
	checkHardened(t, "ebpf agent", ec.SecurityContext, []corev1.Capability{"NET_ADMIN", "BPF", "PERFMON"})
	if !slices.Contains(ec.Args, "--backend=ebpf") || slices.Contains(ec.Args, "--backend=nftables") {
		t.Errorf("ebpf agent args %v do not select only the ebpf backend", ec.Args)
	}
	if !slices.ContainsFunc(ec.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == "/sys/fs/bpf" }) {
		t.Error("ebpf agent does not mount the bpffs")
	}
}

func checkImage(t *testing.T, what, image, prefix string) {
	t.Helper()
	tag, ok := strings.CutPrefix(image, prefix)
	if !ok || tag == "" || tag == "latest" {
		t.Errorf("%s image %q is not %s<pinned tag>", what, image, prefix)
	}
}

func checkHardened(t *testing.T, what string, sc *corev1.SecurityContext, caps []corev1.Capability) {
	t.Helper()
	if sc == nil {
		t.Fatalf("%s container has no securityContext", what)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation must be false", what)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s must not be privileged", what)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: root filesystem must be read-only", what)
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("%s must drop ALL capabilities: %+v", what, sc.Capabilities)
		return
	}
	got := slices.Clone(sc.Capabilities.Add)
	want := slices.Clone(caps)
	slices.Sort(got)
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s added capabilities (-want +got):\n%s", what, diff)
	}
}

// checkProbes checks that liveness and readiness probe /healthz and
// /readyz on the port the binary's --health-addr flag opens.
func checkProbes(t *testing.T, what string, c corev1.Container, flag string) {
	t.Helper()
	var port int32
	for _, p := range c.Ports {
		if p.Name == "health" {
			port = p.ContainerPort
		}
	}
	if !slices.Contains(c.Args, fmt.Sprintf("%s%d", flag, port)) {
		t.Errorf("%s: health port %d is not the one in args %v", what, port, c.Args)
	}
	for name, pr := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Path != name || pr.HTTPGet.Port.String() != "health" {
			t.Errorf("%s: no %s probe on port health: %+v", what, name, pr)
		}
	}
}

func hasPort(ports []corev1.ContainerPort, name string) bool {
	return slices.ContainsFunc(ports, func(p corev1.ContainerPort) bool { return p.Name == name })
}

// realKinds are created for real, in this order, so that the namespaced
// objects have their namespace, the custom resources their CRD, and the
// SubjectAccessReviews their roles; everything else is dry-run.
var realKinds = []string{"Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding"}

// TestManifestsApplyAndRBAC applies every rendered object to a real API
// server and checks what the ServiceAccounts may do.
func TestManifestsApplyAndRBAC(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	c := env.Client

	objs := load(t, "test/manifests/testdata/bulkhead.yaml")
	apply := func(t *testing.T, o *unstructured.Unstructured, opts ...client.ApplyOption) {
		t.Helper()
		opts = append(opts, client.FieldOwner("bulkhead-manifests-test"), client.ForceOwnership)
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o.DeepCopy()), opts...); err != nil {
			t.Errorf("applying %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
	for _, kind := range realKinds {
		for _, o := range objs {
			if o.GetKind() == kind {
				apply(t, o)
			}
		}
	}
	seen := map[string]bool{}
	for _, o := range objs {
		seen[o.GetKind()] = true
		if !slices.Contains(realKinds, o.GetKind()) {
			apply(t, o, client.DryRunAll)
		}
	}
	for _, k := range []string{"Deployment", "DaemonSet", "Service", "PodDisruptionBudget", "CustomResourceDefinition"} {
		if !seen[k] {
			t.Errorf("the rendered manifests hold no %s", k)
		}
	}
	for _, o := range load(t, "test/manifests/testdata/bulkhead-ebpf.yaml") {
		if o.GetKind() == "DaemonSet" {
			apply(t, o, client.DryRunAll)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	sa := func(name string) (string, []string) {
		return "system:serviceaccount:" + namespace + ":" + name,
			[]string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}
	}
	type attrs = authzv1.ResourceAttributes
	for _, tc := range []struct {
		name    string
		account string
		attrs   attrs
		allowed bool
	}{
		{"the agent cannot list Secrets in its namespace", "bulkhead-agent", attrs{Namespace: namespace, Verb: "list", Resource: "secrets"}, false},
		{"the agent cannot get the controller's TLS Secret", "bulkhead-agent", attrs{Namespace: namespace, Verb: "get", Resource: "secrets", Name: controllers.TLSSecretName}, false},
		{"the agent cannot list Secrets cluster-wide", "bulkhead-agent", attrs{Verb: "list", Resource: "secrets"}, false},
		{"the agent can get ConfigMap bulkhead-ca", "bulkhead-agent", attrs{Namespace: namespace, Verb: "get", Resource: "configmaps", Name: controllers.CAConfigMap}, true},
		{"the agent cannot get another ConfigMap", "bulkhead-agent", attrs{Namespace: namespace, Verb: "get", Resource: "configmaps", Name: "other"}, false},
		{"the agent cannot update ConfigMap bulkhead-ca", "bulkhead-agent", attrs{Namespace: namespace, Verb: "update", Resource: "configmaps", Name: controllers.CAConfigMap}, false},
		{"the agent cannot list ConfigMaps", "bulkhead-agent", attrs{Namespace: namespace, Verb: "list", Resource: "configmaps"}, false},
		{"the agent cannot list pods", "bulkhead-agent", attrs{Verb: "list", Resource: "pods"}, false},
		{"the agent cannot read zones", "bulkhead-agent", attrs{Group: "segmentation.bulkhead.dev", Verb: "list", Resource: "zones"}, false},
		{"the agent cannot create TokenReviews", "bulkhead-agent", attrs{Group: "authentication.k8s.io", Verb: "create", Resource: "tokenreviews"}, false},

		{"the controller cannot delete pods", "bulkhead-controller", attrs{Namespace: "default", Verb: "delete", Resource: "pods"}, false},
		{"the controller cannot delete pods in its namespace", "bulkhead-controller", attrs{Namespace: namespace, Verb: "delete", Resource: "pods"}, false},
		{"the controller can watch pods", "bulkhead-controller", attrs{Verb: "watch", Resource: "pods"}, true},
		{"the controller can create TokenReviews", "bulkhead-controller", attrs{Group: "authentication.k8s.io", Verb: "create", Resource: "tokenreviews"}, true},
		{"the controller can create SubjectAccessReviews", "bulkhead-controller", attrs{Group: "authorization.k8s.io", Verb: "create", Resource: "subjectaccessreviews"}, true},
		{"the controller can update zones/status", "bulkhead-controller", attrs{Group: "segmentation.bulkhead.dev", Verb: "update", Resource: "zones", Subresource: "status"}, true},
		{"the controller can patch quarantines/status", "bulkhead-controller", attrs{Group: "segmentation.bulkhead.dev", Verb: "patch", Resource: "quarantines", Subresource: "status"}, true},
		{"the controller cannot update a zone's spec", "bulkhead-controller", attrs{Group: "segmentation.bulkhead.dev", Verb: "update", Resource: "zones"}, false},
		{"the controller can update its TLS Secret", "bulkhead-controller", attrs{Namespace: namespace, Verb: "update", Resource: "secrets", Name: controllers.TLSSecretName}, true},
		{"the controller cannot read Secrets in other namespaces", "bulkhead-controller", attrs{Namespace: "kube-system", Verb: "get", Resource: "secrets"}, false},
		{"the controller can update its leader Lease", "bulkhead-controller", attrs{Namespace: namespace, Group: "coordination.k8s.io", Verb: "update", Resource: "leases", Name: "bulkhead-controller"}, true},
		{"the controller cannot write NetworkPolicies", "bulkhead-controller", attrs{Namespace: "default", Group: "networking.k8s.io", Verb: "create", Resource: "networkpolicies"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user, groups := sa(tc.account)
			a := tc.attrs
			sar, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
				User: user, Groups: groups, ResourceAttributes: &a,
			}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if sar.Status.Allowed != tc.allowed {
				t.Errorf("%s %+v: allowed=%v (reason %q, error %q), want %v", user, a, sar.Status.Allowed, sar.Status.Reason, sar.Status.EvaluationError, tc.allowed)
			}
		})
	}
}

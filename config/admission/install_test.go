package admission_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/config/admission"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

func kindNames(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, u := range objs {
		out = append(out, u.GetAPIVersion()+" "+u.GetKind()+" "+u.GetName())
	}
	return out
}

// The embedded files decode to the two policies of the Quarantine audit
// trail and their bindings, in the order kustomization.yaml lists them.
func TestObjectsAreThePoliciesAndBindingsOfTheKustomization(t *testing.T) {
	objs, err := admission.Objects()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"admissionregistration.k8s.io/v1 MutatingAdmissionPolicy bulkhead-quarantine-requester",
		"admissionregistration.k8s.io/v1 MutatingAdmissionPolicyBinding bulkhead-quarantine-requester",
		"admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy bulkhead-quarantine-requester",
		"admissionregistration.k8s.io/v1 ValidatingAdmissionPolicyBinding bulkhead-quarantine-requester",
	}
	if d := cmp.Diff(want, kindNames(objs)); d != "" {
		t.Errorf("objects (-want +got):\n%s", d)
	}
}

// Install against a real API server creates every object, a second
// Install (a restarted lab, a re-applied install) succeeds and leaves
// them as they are, and a client that may not create them gets an error
// naming the first object refused.
func TestInstallCreatesEveryObjectOnceAndNamesTheObjectRefused(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	c, err := client.New(env.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := admission.Install(ctx, c); err != nil {
		t.Fatalf("first Install: %v", err)
	}
	objs, err := admission.Objects()
	if err != nil {
		t.Fatal(err)
	}
	versions := map[string]string{}
	for _, want := range objs {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(want.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKeyFromObject(want), got); err != nil {
			t.Fatalf("after Install, %s %s: %v", want.GetKind(), want.GetName(), err)
		}
		versions[want.GetKind()] = got.GetResourceVersion()
	}
	if err := admission.Install(ctx, c); err != nil {
		t.Fatalf("second Install: %v", err)
	}
	for _, want := range objs {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(want.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKeyFromObject(want), got); err != nil {
			t.Fatalf("after the second Install, %s %s: %v", want.GetKind(), want.GetName(), err)
		}
		if got.GetResourceVersion() != versions[want.GetKind()] {
			t.Errorf("second Install changed %s %s: resourceVersion %s -> %s", want.GetKind(), want.GetName(), versions[want.GetKind()], got.GetResourceVersion())
		}
	}

	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "mallory", Groups: []string{"system:authenticated"}}
	nobody, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = admission.Install(ctx, nobody)
	if err == nil {
		t.Fatal("Install as a user without RBAC succeeded")
	}
	if want := "creating MutatingAdmissionPolicy bulkhead-quarantine-requester"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
}

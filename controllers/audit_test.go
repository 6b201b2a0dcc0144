package controllers_test

import (
	"fmt"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/config/admission"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// TestQuarantineAuditTrailNamesTheAuthenticatedUser installs the
// admission policies of config/admission in a real API server and has
// two users create quarantines: each one's status names the user the API
// server authenticated, whatever the client wrote in spec.requestedBy or
// in the annotation, and nobody can rewrite the annotation later.
func TestQuarantineAuditTrailNamesTheAuthenticatedUser(t *testing.T) {
	k := startCluster(t)
	k.must(admission.Install(k.ctx, k.c))
	k.namespace("shop", nil)
	k.must(k.c.Create(k.ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "quarantine-editor"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"quarantines"}, Verbs: []string{"get", "create", "update", "patch"}}}}))
	as := map[string]client.Client{}
	for _, user := range []string{"alice", "bob"} {
		k.must(k.c.Create(k.ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "quarantine-editor-" + user},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "quarantine-editor"},
			Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: user}}}))
		cfg := rest.CopyConfig(k.env.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:authenticated"}}
		c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
		k.must(err)
		as[user] = c
	}
	k.startController("127.0.0.1:0")

	// The admission policies take effect asynchronously after creation.
	eventually(t, "the mutating policy to take effect", func() error {
		q := &v1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", GenerateName: "warmup-"},
			Spec: v1alpha1.QuarantineSpec{PodName: "nobody", Reason: "warm-up"}}
		if err := as["alice"].Create(k.ctx, q); err != nil {
			return err
		}
		if got := q.Annotations[v1alpha1.AuthenticatedRequesterAnnotation]; got != "alice" {
			return fmt.Errorf("annotation = %q", got)
		}
		return nil
	})

	for _, tc := range []struct {
		name, user, claimed, forged string
	}{
		{"alice claiming to be mallory is recorded as alice", "alice", "mallory", ""},
		{"bob forging the annotation is recorded as bob", "bob", "bob", "root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := &v1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "q-" + tc.user},
				Spec: v1alpha1.QuarantineSpec{PodName: "db-1", Reason: "audit", RequestedBy: tc.claimed}}
			if tc.forged != "" {
				q.Annotations = map[string]string{v1alpha1.AuthenticatedRequesterAnnotation: tc.forged}
			}
			k.must(as[tc.user].Create(k.ctx, q))
			eventually(t, "status.authenticatedRequester", func() error {
				k.must(k.c.Get(k.ctx, client.ObjectKeyFromObject(q), q))
				if q.Status.AuthenticatedRequester != tc.user {
					return fmt.Errorf("status.authenticatedRequester = %q, want %q", q.Status.AuthenticatedRequester, tc.user)
				}
				return nil
			})
			if q.Spec.RequestedBy != tc.claimed {
				t.Errorf("spec.requestedBy = %q, want the client's claim %q kept", q.Spec.RequestedBy, tc.claimed)
			}
		})
	}

	t.Run("nobody can rewrite or remove the recorded requester", func(t *testing.T) {
		for _, value := range []string{"bob", ""} {
			var q v1alpha1.Quarantine
			k.must(k.c.Get(k.ctx, client.ObjectKey{Namespace: "shop", Name: "q-alice"}, &q))
			if value == "" {
				delete(q.Annotations, v1alpha1.AuthenticatedRequesterAnnotation)
			} else {
				q.Annotations[v1alpha1.AuthenticatedRequesterAnnotation] = value
			}
			err := as["bob"].Update(k.ctx, &q)
			if err == nil || !strings.Contains(err.Error(), "immutable") {
				t.Errorf("setting the annotation to %q: error = %v, want a refusal saying it is immutable", value, err)
			}
		}
		// Other updates still pass.
		var q v1alpha1.Quarantine
		k.must(k.c.Get(k.ctx, client.ObjectKey{Namespace: "shop", Name: "q-alice"}, &q))
		q.Spec.Released = true
		if err := as["bob"].Update(k.ctx, &q); err != nil {
			t.Errorf("releasing: %v", err)
		}
	})
}

package controllers_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"
	crclient "sigs.k8s.io/controller-runtime/pkg/client"
	anpv1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/bulkhead-dev/bulkhead/controllers"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// The controller discovers the upstream CRDs that testenv installs, watches
// AdminNetworkPolicies and ClusterNetworkPolicies, and the agents receive
// their rules; a delete takes them away again.
func TestControllerEnforcesUpstreamAdminPolicies(t *testing.T) {
	k := startCluster(t)
	nodeA := k.node("node-a")
	k.namespace("shop", nil)
	k.namespace("other", nil)
	k.pod("shop", "web", "node-a", "10.244.1.10", map[string]string{"app": "web"})
	k.pod("other", "client", "node-a", "10.244.1.20", nil)
	create := func(doc string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		k.must(yaml.Unmarshal([]byte(doc), &u.Object))
		k.must(k.c.Create(k.ctx, u))
		return u
	}
	anp := create(`
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: web-no-other}
spec:
  priority: 5
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: shop}}}
  ingress:
  - {action: Deny, from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: other}}}], ports: [{portNumber: {protocol: TCP, port: 80}}]}
`)
	ctl := k.startController("127.0.0.1:0")
	a := k.agent("node-a", k.token("bulkhead-agent", nodeA), ctl.StreamAddr())
	client := netip.MustParseAddr("10.244.1.20")
	verdict := func(port uint16) (ir.Verdict, error) {
		np := a.be.Current()
		if np == nil {
			return ir.Verdict{}, fmt.Errorf("no policy yet")
		}
		ep := np.Endpoint("shop/web")
		if ep == nil {
			return ir.Verdict{}, fmt.Errorf("no endpoint shop/web")
		}
		return np.Evaluate(&ep.Ingress, client, ir.TCP, port), nil
	}
	eventually(t, "the AdminNetworkPolicy's deny on node-a", func() error {
		v, err := verdict(80)
		if err != nil {
			return err
		}
		if v.Allowed || v.RuleID != "AdminNetworkPolicy/web-no-other/ingress/0" {
			return fmt.Errorf("TCP/80 from other/client: %+v", v)
		}
		return nil
	})
	// Status: Bulkhead's prefixed conditions, next to another
	// implementation's condition, which stays; and an event.
	uc, err := crclient.New(k.env.Config, crclient.Options{Scheme: controllers.Scheme()})
	k.must(err)
	other := metav1.Condition{Type: "example.net/Ready", Status: metav1.ConditionTrue, Reason: "Programmed", Message: "another implementation", LastTransitionTime: metav1.Now()}
	k.must(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var p anpv1alpha1.AdminNetworkPolicy
		if err := uc.Get(k.ctx, crclient.ObjectKey{Name: "web-no-other"}, &p); err != nil {
			return err
		}
		meta.SetStatusCondition(&p.Status.Conditions, other)
		return uc.Status().Update(k.ctx, &p)
	}))
	eventually(t, "the AdminNetworkPolicy's status enforced on 1/1 nodes", func() error {
		var p anpv1alpha1.AdminNetworkPolicy
		if err := uc.Get(k.ctx, crclient.ObjectKey{Name: "web-no-other"}, &p); err != nil {
			return err
		}
		acc := meta.FindStatusCondition(p.Status.Conditions, controllers.UpstreamConditionAccepted)
		enf := meta.FindStatusCondition(p.Status.Conditions, controllers.UpstreamConditionEnforced)
		if acc == nil || acc.Status != metav1.ConditionTrue || enf == nil || enf.Status != metav1.ConditionTrue || !strings.Contains(enf.Message, "enforced on 1/1 nodes") {
			return fmt.Errorf("conditions %+v", p.Status.Conditions)
		}
		if meta.FindStatusCondition(p.Status.Conditions, other.Type) == nil {
			return fmt.Errorf("the other implementation's condition is gone: %+v", p.Status.Conditions)
		}
		return findEvent(k, "web-no-other", "Enforced", "enforced on 1/1 nodes")
	})
	create(`
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {matchExpressions: [{key: team, operator: Sometimes, values: [a]}]}}
  ingress:
  - {action: Deny, from: [{namespaces: {}}]}
`)
	eventually(t, "the invalid BaselineAdminNetworkPolicy not accepted, naming the field", func() error {
		var p anpv1alpha1.BaselineAdminNetworkPolicy
		if err := uc.Get(k.ctx, crclient.ObjectKey{Name: "default"}, &p); err != nil {
			return err
		}
		acc := meta.FindStatusCondition(p.Status.Conditions, controllers.UpstreamConditionAccepted)
		if acc == nil || acc.Status != metav1.ConditionFalse || acc.Reason != "Invalid" || !strings.Contains(acc.Message, "spec.subject") {
			return fmt.Errorf("conditions %+v", p.Status.Conditions)
		}
		return findEvent(k, "default", "Invalid", "spec.subject")
	})
	create(`
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: web-accept-first}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: shop}}}
  ingress:
  - {action: Accept, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {number: 80}}}]}
`)
	eventually(t, "the ClusterNetworkPolicy's accept ahead of the deny", func() error {
		v, err := verdict(80)
		if err != nil {
			return err
		}
		if !v.Allowed || v.RuleID != "ClusterNetworkPolicy/web-accept-first/ingress/0" {
			return fmt.Errorf("TCP/80 from other/client: %+v", v)
		}
		return nil
	})
	k.must(k.c.Delete(k.ctx, anp))
	eventually(t, "the AdminNetworkPolicy gone", func() error {
		np := a.be.Current()
		for _, ep := range np.Endpoints {
			for _, tr := range ep.Ingress.Tiers {
				for _, r := range tr.Rules {
					if r.ID == "AdminNetworkPolicy/web-no-other/ingress/0" {
						return fmt.Errorf("rule still present on %s", ep.Name)
					}
				}
			}
		}
		return nil
	})
}

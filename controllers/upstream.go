package controllers

import (
	"fmt"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	anpv1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	cnpv1beta1 "sigs.k8s.io/network-policy-api/apis/v1beta1"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// +kubebuilder:rbac:groups=policy.networking.k8s.io,resources=clusternetworkpolicies;adminnetworkpolicies;baselineadminnetworkpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=policy.networking.k8s.io,resources=clusternetworkpolicies/status;adminnetworkpolicies/status;baselineadminnetworkpolicies/status,verbs=get;update;patch

// Condition types on upstream admin policies. The objects' status is shared
// by every implementation in the cluster, so Bulkhead's conditions carry
// its API group as a prefix and leave the others' conditions alone.
const (
	UpstreamConditionAccepted = "segmentation.bulkhead.dev/Accepted"
	UpstreamConditionEnforced = "segmentation.bulkhead.dev/Enforced"
)

const upstreamGroup = "policy.networking.k8s.io"

func addUpstreamSchemes(s *runtime.Scheme) error {
	for _, add := range []func(*runtime.Scheme) error{anpv1alpha1.AddToScheme, cnpv1alpha2.AddToScheme, cnpv1beta1.AddToScheme} {
		if err := add(s); err != nil {
			return err
		}
	}
	return nil
}

// DiscoverUpstream asks the API server which upstream admin policy kinds
// it serves and returns one object per kind to watch: ClusterNetworkPolicy
// in its newest served version (v1beta1, else v1alpha2), and
// AdminNetworkPolicy and BaselineAdminNetworkPolicy (v1alpha1). Kinds whose
// CRDs are absent are skipped; the result is logged.
func DiscoverUpstream(cfg *rest.Config, log logr.Logger) ([]client.Object, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating discovery client: %w", err)
	}
	served := func(version, resource string) bool {
		l, err := dc.ServerResourcesForGroupVersion(upstreamGroup + "/" + version)
		if err != nil || l == nil {
			return false
		}
		for _, r := range l.APIResources {
			if r.Name == resource {
				return true
			}
		}
		return false
	}
	var out []client.Object
	var found []string
	switch {
	case served("v1beta1", "clusternetworkpolicies"):
		out = append(out, &cnpv1beta1.ClusterNetworkPolicy{})
		found = append(found, "ClusterNetworkPolicy/v1beta1")
	case served("v1alpha2", "clusternetworkpolicies"):
		out = append(out, &cnpv1alpha2.ClusterNetworkPolicy{})
		found = append(found, "ClusterNetworkPolicy/v1alpha2")
	}
	if served("v1alpha1", "adminnetworkpolicies") {
		out = append(out, &anpv1alpha1.AdminNetworkPolicy{})
		found = append(found, "AdminNetworkPolicy/v1alpha1")
	}
	if served("v1alpha1", "baselineadminnetworkpolicies") {
		out = append(out, &anpv1alpha1.BaselineAdminNetworkPolicy{})
		found = append(found, "BaselineAdminNetworkPolicy/v1alpha1")
	}
	log.Info("upstream admin policy kinds", "served", found)
	return out, nil
}

// upstreamConditions returns the kind of an upstream admin policy and its
// status conditions; ok is false for other objects.
func upstreamConditions(obj any) (kind string, conds *[]metav1.Condition, ok bool) {
	switch o := obj.(type) {
	case *cnpv1beta1.ClusterNetworkPolicy:
		return policy.KindClusterNetworkPolicy, &o.Status.Conditions, true
	case *cnpv1alpha2.ClusterNetworkPolicy:
		return policy.KindClusterNetworkPolicy, &o.Status.Conditions, true
	case *anpv1alpha1.AdminNetworkPolicy:
		return policy.KindAdminNetworkPolicy, &o.Status.Conditions, true
	case *anpv1alpha1.BaselineAdminNetworkPolicy:
		return policy.KindBaselineAdminNetworkPolicy, &o.Status.Conditions, true
	}
	return "", nil, false
}

// upsertUpstream feeds an upstream admin policy into the engine; it
// reports false for other types. The engine's verdict on the object is
// tracked like a ZonePolicy's, for its status conditions and events.
func (m *Model) upsertUpstream(obj any) bool {
	var err error
	var kind, name string
	switch o := obj.(type) {
	case *cnpv1beta1.ClusterNetworkPolicy:
		kind, name, err = "ClusterNetworkPolicy", o.Name, m.eng.SetClusterNetworkPolicy(o)
	case *cnpv1alpha2.ClusterNetworkPolicy:
		kind, name, err = "ClusterNetworkPolicy", o.Name, m.eng.SetClusterNetworkPolicyV1alpha2(o)
	case *anpv1alpha1.AdminNetworkPolicy:
		kind, name, err = "AdminNetworkPolicy", o.Name, m.eng.SetAdminNetworkPolicy(o)
	case *anpv1alpha1.BaselineAdminNetworkPolicy:
		kind, name, err = "BaselineAdminNetworkPolicy", o.Name, m.eng.SetBaselineAdminNetworkPolicy(o)
	default:
		return false
	}
	if err != nil {
		m.log.Error(err, "rejected upstream admin policy", "kind", kind, "name", name)
	}
	m.track(policy.ObjectRef{Kind: kind, Name: name}, err)
	return true
}

func (m *Model) deleteUpstream(obj any) bool {
	var kind, name string
	switch o := obj.(type) {
	case *cnpv1beta1.ClusterNetworkPolicy:
		kind, name = policy.KindClusterNetworkPolicy, o.Name
		m.eng.DeleteClusterNetworkPolicy(o.Name)
	case *cnpv1alpha2.ClusterNetworkPolicy:
		kind, name = policy.KindClusterNetworkPolicy, o.Name
		m.eng.DeleteClusterNetworkPolicy(o.Name)
	case *anpv1alpha1.AdminNetworkPolicy:
		kind, name = policy.KindAdminNetworkPolicy, o.Name
		m.eng.DeleteAdminNetworkPolicy(o.Name)
	case *anpv1alpha1.BaselineAdminNetworkPolicy:
		kind, name = policy.KindBaselineAdminNetworkPolicy, o.Name
		m.eng.DeleteBaselineAdminNetworkPolicy(o.Name)
	default:
		return false
	}
	delete(m.objs, policy.ObjectRef{Kind: kind, Name: name})
	return true
}

package scenario

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	anpv1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	cnpv1beta1 "sigs.k8s.io/network-policy-api/apis/v1beta1"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// LoadLive reads Namespaces, Pods, NetworkPolicies, Zones, ZonePolicies
// and Quarantines from the cluster of a kubeconfig file ("" uses the
// default loading rules: $KUBECONFIG, ~/.kube/config).
func LoadLive(ctx context.Context, kubeconfig string) (*Scenario, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	return LoadLiveConfig(ctx, cfg)
}

// LoadLiveConfig is LoadLive with a ready client configuration. Bulkhead
// kinds whose CRDs are not installed are skipped with a warning.
func LoadLiveConfig(ctx context.Context, cfg *rest.Config) (*Scenario, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating dynamic client: %w", err)
	}
	s := &Scenario{}
	nss, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing namespaces: %w", err)
	}
	for i := range nss.Items {
		s.Objects = append(s.Objects, Object{Kind: "Namespace", Obj: &nss.Items[i]})
	}
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	for i := range pods.Items {
		s.Objects = append(s.Objects, Object{Kind: "Pod", Obj: &pods.Items[i]})
	}
	nps, err := cs.NetworkingV1().NetworkPolicies("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing networkpolicies: %w", err)
	}
	for i := range nps.Items {
		s.Objects = append(s.Objects, Object{Kind: "NetworkPolicy", Obj: &nps.Items[i]})
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	for i := range nodes.Items {
		s.Objects = append(s.Objects, Object{Kind: "Node", Obj: &nodes.Items[i]})
	}
	// upstream ClusterNetworkPolicy: the newest served version only
	cnpVersion := ""
	if _, err := cs.Discovery().ServerResourcesForGroupVersion("policy.networking.k8s.io/v1beta1"); err == nil {
		cnpVersion = "v1beta1"
	} else if _, err := cs.Discovery().ServerResourcesForGroupVersion("policy.networking.k8s.io/v1alpha2"); err == nil {
		cnpVersion = "v1alpha2"
	}
	const upGroup = "policy.networking.k8s.io"
	kinds := []struct {
		kind, group, version, resource string
		newObj                         func() any
	}{
		{"Zone", v1alpha1.GroupVersion.Group, v1alpha1.GroupVersion.Version, "zones", func() any { return &v1alpha1.Zone{} }},
		{"ZonePolicy", v1alpha1.GroupVersion.Group, v1alpha1.GroupVersion.Version, "zonepolicies", func() any { return &v1alpha1.ZonePolicy{} }},
		{"Quarantine", v1alpha1.GroupVersion.Group, v1alpha1.GroupVersion.Version, "quarantines", func() any { return &v1alpha1.Quarantine{} }},
		{"AdminNetworkPolicy", upGroup, "v1alpha1", "adminnetworkpolicies", func() any { return &anpv1alpha1.AdminNetworkPolicy{} }},
		{"BaselineAdminNetworkPolicy", upGroup, "v1alpha1", "baselineadminnetworkpolicies", func() any { return &anpv1alpha1.BaselineAdminNetworkPolicy{} }},
	}
	switch cnpVersion {
	case "v1beta1":
		kinds = append(kinds, struct {
			kind, group, version, resource string
			newObj                         func() any
		}{"ClusterNetworkPolicy", upGroup, "v1beta1", "clusternetworkpolicies", func() any { return &cnpv1beta1.ClusterNetworkPolicy{} }})
	case "v1alpha2":
		kinds = append(kinds, struct {
			kind, group, version, resource string
			newObj                         func() any
		}{"ClusterNetworkPolicy", upGroup, "v1alpha2", "clusternetworkpolicies", func() any { return &cnpv1alpha2.ClusterNetworkPolicy{} }})
	}
	for _, k := range kinds {
		gvr := schema.GroupVersionResource{Group: k.group, Version: k.version, Resource: k.resource}
		list, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{})
		if apierrors.IsNotFound(err) {
			s.Warnings = append(s.Warnings, fmt.Sprintf("%s: the CRD is not installed; skipping", k.resource))
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", k.resource, err)
		}
		for _, u := range list.Items {
			obj := k.newObj()
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, obj); err != nil {
				return nil, fmt.Errorf("decoding %s %s: %w", k.kind, u.GetName(), err)
			}
			s.Objects = append(s.Objects, Object{Kind: k.kind, Obj: obj})
		}
	}
	return s, nil
}

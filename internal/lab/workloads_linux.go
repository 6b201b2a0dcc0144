package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
)

// PodTemplateHash is the pod-template-hash of a template, computed as the
// Deployment controller does (FNV-32a of the template, safe-encoded).
func PodTemplateHash(t corev1.PodTemplateSpec) string {
	b, _ := json.Marshal(t)
	h := fnv.New32a()
	_, _ = h.Write(b)
	return utilrand.SafeEncodeString(strconv.FormatUint(uint64(h.Sum32()), 10))
}

func labClientset(dir string) (kubernetes.Interface, error) {
	cfg, err := RESTConfig(dir)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("lab client: %w", err)
	}
	return cs, nil
}

func controllerRef(apiVersion, kind string, m metav1.ObjectMeta) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: m.Name, UID: m.UID,
		Controller: ptrTo(true), BlockOwnerDeletion: ptrTo(true)}
}

// ApplyDeployment plays the Deployment and ReplicaSet controllers for one
// Deployment of the running lab: it creates or updates the Deployment,
// makes sure a ReplicaSet for the current template exists (named
// "<deploy>-<pod-template-hash>", owned by the Deployment), scales it to
// replicas with pods owned by it (labels plus pod-template-hash, placed by
// AddPod), and deletes the pods and ReplicaSets of older templates. A
// changed template is therefore a rollout; a changed replica count a scale.
// Services and EndpointSlices are then resynced (SyncServices).
func ApplyDeployment(ctx context.Context, dir string, d *appsv1.Deployment) (*appsv1.Deployment, error) {
	key := d.Namespace + "/" + d.Name
	if d.Spec.Selector == nil || len(d.Spec.Selector.MatchLabels) == 0 {
		return nil, fmt.Errorf("deployment %s: spec.selector.matchLabels is required", key)
	}
	if !labels.SelectorFromSet(d.Spec.Selector.MatchLabels).Matches(labels.Set(d.Spec.Template.Labels)) {
		return nil, fmt.Errorf("deployment %s: spec.template.metadata.labels do not match spec.selector", key)
	}
	replicas := int32(1)
	if d.Spec.Replicas != nil {
		replicas = *d.Spec.Replicas
	}
	if replicas < 0 {
		return nil, fmt.Errorf("deployment %s: spec.replicas %d is negative", key, replicas)
	}
	cs, err := labClientset(dir)
	if err != nil {
		return nil, err
	}
	if err := ensureNamespace(ctx, cs, d.Namespace, nil); err != nil {
		return nil, fmt.Errorf("deployment %s: namespace: %w", key, err)
	}
	cur, err := cs.AppsV1().Deployments(d.Namespace).Get(ctx, d.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cur, err = cs.AppsV1().Deployments(d.Namespace).Create(ctx, d, metav1.CreateOptions{})
	case err == nil:
		cur.Spec = d.Spec
		cur.Labels = d.Labels
		cur, err = cs.AppsV1().Deployments(d.Namespace).Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("deployment %s: %w", key, err)
	}
	hash := PodTemplateHash(cur.Spec.Template)
	rsName := cur.Name + "-" + hash
	tmpl := *cur.Spec.Template.DeepCopy()
	tmpl.Labels = copyLabels(tmpl.Labels)
	if tmpl.Labels == nil {
		tmpl.Labels = map[string]string{}
	}
	tmpl.Labels[appsv1.DefaultDeploymentUniqueLabelKey] = hash
	sel := cur.Spec.Selector.DeepCopy()
	sel.MatchLabels = copyLabels(sel.MatchLabels)
	sel.MatchLabels[appsv1.DefaultDeploymentUniqueLabelKey] = hash
	rs, err := cs.AppsV1().ReplicaSets(cur.Namespace).Get(ctx, rsName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		rs, err = cs.AppsV1().ReplicaSets(cur.Namespace).Create(ctx, &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Namespace: cur.Namespace, Name: rsName, Labels: tmpl.Labels,
				OwnerReferences: []metav1.OwnerReference{controllerRef("apps/v1", "Deployment", cur.ObjectMeta)}},
			Spec: appsv1.ReplicaSetSpec{Replicas: &replicas, Selector: sel, Template: tmpl},
		}, metav1.CreateOptions{})
	} else if err == nil && (rs.Spec.Replicas == nil || *rs.Spec.Replicas != replicas) {
		rs.Spec.Replicas = &replicas
		rs, err = cs.AppsV1().ReplicaSets(cur.Namespace).Update(ctx, rs, metav1.UpdateOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("deployment %s: replicaset %s: %w", key, rsName, err)
	}

	st, err := LoadState(dir)
	if err != nil {
		return nil, err
	}
	rsList, err := cs.AppsV1().ReplicaSets(cur.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("deployment %s: listing replicasets: %w", key, err)
	}
	oldRS := map[types.UID]string{}
	for _, r := range rsList.Items {
		if ref := metav1.GetControllerOf(&r); ref != nil && ref.UID == cur.UID && r.UID != rs.UID {
			oldRS[r.UID] = r.Name
		}
	}
	var mine, old []PodPlan
	for _, pp := range st.Plan.Pods {
		if pp.Namespace != cur.Namespace || len(pp.Owners) == 0 {
			continue
		}
		if pp.Owners[0].UID == rs.UID {
			mine = append(mine, pp)
		} else if _, ok := oldRS[pp.Owners[0].UID]; ok {
			old = append(old, pp)
		}
	}
	sort.Slice(mine, func(a, b int) bool { return mine[a].Name < mine[b].Name })
	var errs []error
	for i := len(mine); i < int(replicas); i++ {
		name := rsName + "-" + utilrand.String(5)
		_, err := AddPod(ctx, dir, PodInput{Namespace: cur.Namespace, Name: name, Labels: tmpl.Labels, Spec: tmpl.Spec}, 0,
			[]metav1.OwnerReference{controllerRef("apps/v1", "ReplicaSet", rs.ObjectMeta)})
		if err != nil {
			errs = append(errs, err)
		}
	}
	for i := int(replicas); i < len(mine); i++ {
		errs = append(errs, RemovePod(ctx, dir, mine[i].Key()))
	}
	for _, pp := range old {
		errs = append(errs, RemovePod(ctx, dir, pp.Key()))
	}
	for _, n := range oldRS {
		if err := cs.AppsV1().ReplicaSets(cur.Namespace).Delete(ctx, n, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting old replicaset %s: %w", n, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return cur, fmt.Errorf("deployment %s: %w", key, err)
	}
	return cur, SyncServices(ctx, dir)
}

// ApplyService creates or updates a Service of the running lab (the API
// server allocates its ClusterIP from ServiceCIDR unless spec.clusterIP is
// set) and resyncs EndpointSlices and the service proxy.
func ApplyService(ctx context.Context, dir string, svc *corev1.Service) (*corev1.Service, error) {
	key := svc.Namespace + "/" + svc.Name
	cs, err := labClientset(dir)
	if err != nil {
		return nil, err
	}
	if err := ensureNamespace(ctx, cs, svc.Namespace, nil); err != nil {
		return nil, fmt.Errorf("service %s: namespace: %w", key, err)
	}
	cur, err := cs.CoreV1().Services(svc.Namespace).Get(ctx, svc.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cur, err = cs.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{})
	case err == nil:
		ip := cur.Spec.ClusterIP
		cur.Spec = svc.Spec
		cur.Spec.ClusterIP, cur.Spec.ClusterIPs = ip, []string{ip}
		cur, err = cs.CoreV1().Services(svc.Namespace).Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", key, err)
	}
	return cur, SyncServices(ctx, dir)
}

// SyncServices plays the EndpointSlice controller and kube-proxy for the
// whole lab: it rewrites the lab-managed EndpointSlices of every Service
// with a selector from the current pods, deletes stale ones, and loads the
// resulting proxy ruleset into every node namespace (one nft transaction
// per node).
func SyncServices(ctx context.Context, dir string) error {
	cs, err := labClientset(dir)
	if err != nil {
		return err
	}
	st, err := LoadState(dir)
	if err != nil {
		return err
	}
	svcs, err := cs.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing services: %w", err)
	}
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing pods: %w", err)
	}
	existing, err := cs.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelManagedBy + "=" + EndpointSliceManagedBy})
	if err != nil {
		return fmt.Errorf("listing endpointslices: %w", err)
	}
	have := map[string]discoveryv1.EndpointSlice{}
	for _, s := range existing.Items {
		have[s.Namespace+"/"+s.Name] = s
	}
	var all []discoveryv1.EndpointSlice
	var errs []error
	for i := range svcs.Items {
		svc := &svcs.Items[i]
		want, err := EndpointSlicesFor(svc, pods.Items)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, s := range want {
			k := s.Namespace + "/" + s.Name
			if old, ok := have[k]; ok {
				old.Endpoints, old.Ports, old.Labels = s.Endpoints, s.Ports, s.Labels
				_, err = cs.DiscoveryV1().EndpointSlices(s.Namespace).Update(ctx, &old, metav1.UpdateOptions{})
				delete(have, k)
			} else {
				_, err = cs.DiscoveryV1().EndpointSlices(s.Namespace).Create(ctx, &s, metav1.CreateOptions{})
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("endpointslice %s: %w", k, err))
			}
			all = append(all, s)
		}
	}
	for k, s := range have {
		if err := cs.DiscoveryV1().EndpointSlices(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting stale endpointslice %s: %w", k, err))
		}
	}
	rules, err := ProxyRules(svcs.Items, all)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	script := ProxyRuleset(rules)
	for _, n := range st.Plan.Nodes {
		if err := ApplyProxy(ctx, n.Name, script); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

package lab

import (
	"context"
	"fmt"
	"os"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// Agent identity, as the controller expects it.
const (
	SystemNamespace     = "bulkhead-system"
	AgentServiceAccount = "bulkhead-agent"
	TokenAudience       = "bulkhead"
	// TokenLifetime is how long minted agent tokens are valid.
	TokenLifetime = 48 * time.Hour
)

// Register does the lab kubelet's job: it creates the plan's Namespaces
// (with their labels) and a "default" ServiceAccount in each, the Node
// objects (pod CIDRs, InternalIP, Ready), and the Pods (nodeName, labels,
// container ports), then sets each pod's status (podIP(s), hostIP,
// phase Running, Ready) through the status subresource. Existing objects
// are updated, so Register can run again.
func Register(ctx context.Context, cs kubernetes.Interface, p *Plan, progress func(string)) error {
	for _, ns := range p.Namespaces {
		if err := ensureNamespace(ctx, cs, ns.Name, ns.Labels); err != nil {
			return err
		}
	}
	now := metav1.Now()
	for _, n := range p.Nodes {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{
				"kubernetes.io/hostname": n.Name,
				"kubernetes.io/os":       "linux",
				"bulkhead.dev/lab":       p.Name,
			}},
			Spec: corev1.NodeSpec{PodCIDR: n.PodCIDR.String(), PodCIDRs: []string{n.PodCIDR.String(), n.PodCIDR6.String()}},
		}
		got, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			got, err = cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		}
		if err != nil {
			return fmt.Errorf("registering node %s: %w", n.Name, err)
		}
		got.Status.Addresses = []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: n.IP.String()},
			{Type: corev1.NodeHostName, Address: n.Name},
		}
		got.Status.Conditions = []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "LabKubeletReady",
			Message: "bulkhead lab node", LastHeartbeatTime: now, LastTransitionTime: now,
		}}
		if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("setting status of node %s: %w", n.Name, err)
		}
	}
	for i, pp := range p.Pods {
		if i%10 == 0 || i == len(p.Pods)-1 {
			progress(fmt.Sprintf("pods: %d/%d", i+1, len(p.Pods)))
		}
		if err := registerPod(ctx, cs, p, pp, now); err != nil {
			return fmt.Errorf("registering pod %s: %w", pp.Key(), err)
		}
	}
	return nil
}

func ensureNamespace(ctx context.Context, cs kubernetes.Interface, name string, labels map[string]string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	_, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, gerr := cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if gerr != nil {
			return fmt.Errorf("reading namespace %s: %w", name, gerr)
		}
		if got.Labels == nil {
			got.Labels = map[string]string{}
		}
		for k, v := range labels {
			got.Labels[k] = v
		}
		_, err = cs.CoreV1().Namespaces().Update(ctx, got, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: name}}
	if _, err := cs.CoreV1().ServiceAccounts(name).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating service account %s/default: %w", name, err)
	}
	return nil
}

func registerPod(ctx context.Context, cs kubernetes.Interface, p *Plan, pp PodPlan, now metav1.Time) error {
	got, err := createPodObject(ctx, cs, pp)
	if err != nil {
		return err
	}
	return setPodRunning(ctx, cs, p, pp, got, now)
}

// createPodObject creates the pod bound to its node (or reads the one
// that exists), as the scheduler and the API server leave it: status
// Pending, no IPs yet.
func createPodObject(ctx context.Context, cs kubernetes.Interface, pp PodPlan) (*corev1.Pod, error) {
	spec := *pp.Spec.DeepCopy()
	spec.NodeName = pp.NodeName
	spec.AutomountServiceAccountToken = ptr.To(false)
	for i := range spec.Containers {
		if spec.Containers[i].Image == "" {
			spec.Containers[i].Image = ProbeImage
		}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: pp.Name, Namespace: pp.Namespace, Labels: pp.Labels, OwnerReferences: pp.Owners,
			Annotations: map[string]string{"bulkhead.dev/lab-netns": pp.Netns}},
		Spec: spec,
	}
	got, err := cs.CoreV1().Pods(pp.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = cs.CoreV1().Pods(pp.Namespace).Get(ctx, pp.Name, metav1.GetOptions{})
	}
	return got, err
}

// setPodRunning writes the status a kubelet writes once the sandbox and
// containers run: podIP(s), hostIP, phase Running, Ready.
func setPodRunning(ctx context.Context, cs kubernetes.Interface, p *Plan, pp PodPlan, got *corev1.Pod, now metav1.Time) error {
	var node NodePlan
	for _, n := range p.Nodes {
		if n.Index == pp.Node {
			node = n
		}
	}
	cond := func(t corev1.PodConditionType) corev1.PodCondition {
		return corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now}
	}
	got.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		HostIP:    node.IP.String(),
		HostIPs:   []corev1.HostIP{{IP: node.IP.String()}},
		PodIP:     pp.IP.String(),
		PodIPs:    []corev1.PodIP{{IP: pp.IP.String()}, {IP: pp.IP6.String()}},
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			cond(corev1.PodScheduled), cond(corev1.PodInitialized),
			cond(corev1.ContainersReady), cond(corev1.PodReady),
		},
	}
	for _, c := range got.Spec.Containers {
		got.Status.ContainerStatuses = append(got.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: true, Started: ptr.To(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	if _, err := cs.CoreV1().Pods(pp.Namespace).UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting status: %w", err)
	}
	return nil
}

// EnsureAgentIdentity creates the bulkhead-system namespace and the
// bulkhead-agent ServiceAccount, and mints one token per node with the
// TokenRequest API, bound to the Node object and with audience
// "bulkhead", written to DIR/tokens/<node> (mode 0600).
func EnsureAgentIdentity(ctx context.Context, cs kubernetes.Interface, p *Plan, dir string) error {
	if err := ensureNamespace(ctx, cs, SystemNamespace, nil); err != nil {
		return err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: AgentServiceAccount, Namespace: SystemNamespace}}
	if _, err := cs.CoreV1().ServiceAccounts(SystemNamespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating service account %s/%s: %w", SystemNamespace, AgentServiceAccount, err)
	}
	if err := os.MkdirAll(Layout{dir}.Tokens(), 0o700); err != nil {
		return fmt.Errorf("creating token directory: %w", err)
	}
	for _, n := range p.Nodes {
		node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading node %s: %w", n.Name, err)
		}
		tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			Audiences:         []string{TokenAudience},
			ExpirationSeconds: ptr.To(int64(TokenLifetime / time.Second)),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Node", APIVersion: "v1", Name: node.Name, UID: node.UID},
		}}
		got, err := cs.CoreV1().ServiceAccounts(SystemNamespace).CreateToken(ctx, AgentServiceAccount, tr, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("minting token for node %s: %w", n.Name, err)
		}
		if err := writeFileAtomic(Layout{dir}.Token(n.Name), []byte(got.Status.Token), 0o600); err != nil {
			return err
		}
	}
	return nil
}

package lab

import (
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AddPod places one more pod into an existing plan: on node (1-based) if
// node > 0, else on the node with the fewest pods (lowest index on a tie),
// in the lowest free host slot of that node, so addresses and veth names
// of removed pods are reused. The plan is changed only on success.
func (p *Plan) AddPod(in PodInput, node int, owners []metav1.OwnerReference) (PodPlan, error) {
	key := in.Namespace + "/" + in.Name
	if in.Namespace == "" || in.Name == "" {
		return PodPlan{}, fmt.Errorf("pod %q: namespace and name are required", key)
	}
	if _, ok := p.Pod(key); ok {
		return PodPlan{}, fmt.Errorf("pod %s already exists in lab %s", key, p.Name)
	}
	count := map[int]int{}
	used := map[int]map[int]bool{}
	for _, pp := range p.Pods {
		count[pp.Node]++
		if used[pp.Node] == nil {
			used[pp.Node] = map[int]bool{}
		}
		used[pp.Node][int(pp.IP.As4()[3])-2] = true
	}
	if node > 0 {
		if node > len(p.Nodes) {
			return PodPlan{}, fmt.Errorf("pod %s: node %d does not exist (the lab has %d nodes)", key, node, len(p.Nodes))
		}
	} else {
		node = 1
		for _, n := range p.Nodes {
			if count[n.Index] < count[node] {
				node = n.Index
			}
		}
	}
	k := 0
	for used[node][k] {
		k++
	}
	if k >= MaxPodsPerNode {
		return PodPlan{}, fmt.Errorf("pod %s: node %d is full (%d pods)", key, node, MaxPodsPerNode)
	}
	netnsName := podNetns(p.Name, in.Namespace, in.Name, len(p.Pods))
	for _, pp := range p.Pods {
		if pp.Netns == netnsName {
			netnsName = NetnsPrefix(p.Name) + "pod" + strconv.Itoa(len(p.Pods)) + "x" + strconv.Itoa(k)
		}
	}
	spec := *in.Spec.DeepCopy()
	spec.NodeName = NodeName(p.Name, node)
	if len(spec.Containers) == 0 {
		spec.Containers = []corev1.Container{{Name: "main", Image: ProbeImage}}
	}
	pp := PodPlan{
		Namespace: in.Namespace, Name: in.Name, Labels: copyLabels(in.Labels),
		Node: node, NodeName: spec.NodeName,
		IP: PodIP(node, k), IP6: PodIP6(node, k),
		Netns: netnsName, HostVeth: "bhpod" + strconv.Itoa(k),
		Spec: spec, Owners: owners,
	}
	found := false
	for _, ns := range p.Namespaces {
		found = found || ns.Name == in.Namespace
	}
	if !found {
		p.Namespaces = append(p.Namespaces, NamespacePlan{Name: in.Namespace})
	}
	p.Pods = append(p.Pods, pp)
	return pp, nil
}

// RemovePod drops a pod from the plan and returns it.
func (p *Plan) RemovePod(key string) (PodPlan, error) {
	for i, pp := range p.Pods {
		if pp.Key() == key {
			p.Pods = append(p.Pods[:i:i], p.Pods[i+1:]...)
			return pp, nil
		}
	}
	return PodPlan{}, fmt.Errorf("pod %s is not in lab %s", key, p.Name)
}

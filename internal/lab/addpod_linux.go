package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// lockState serializes changes to DIR/state.json between processes.
func lockState(dir string) (unlock func(), err error) {
	path := filepath.Join(dir, "state.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking lab state: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking lab state %s: %w", path, err)
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

// AddPod adds a pod to the running lab in dir, as a kubelet and CNI would
// after the scheduler placed it: it is recorded in the plan (node > 0
// pins it to that node), gets its namespace, veth and addresses, its Pod
// object is created with owners as ownerReferences and marked Running and
// Ready with status.podIPs, and AddPod returns once the lab's probe server
// listens in it (when the lab serves TCP ports). The controller and agents
// see it through the API server like any other pod.
func AddPod(ctx context.Context, dir string, in PodInput, node int, owners []metav1.OwnerReference) (PodPlan, error) {
	unlock, err := lockState(dir)
	if err != nil {
		return PodPlan{}, err
	}
	defer unlock()
	st, err := LoadState(dir)
	if err != nil {
		return PodPlan{}, err
	}
	pp, err := st.Plan.AddPod(in, node, owners)
	if err != nil {
		return PodPlan{}, err
	}
	cfg, err := RESTConfig(dir)
	if err != nil {
		return PodPlan{}, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return PodPlan{}, fmt.Errorf("lab client: %w", err)
	}
	if err := buildPod(pp); err != nil {
		return PodPlan{}, errors.Join(fmt.Errorf("pod %s: %w", pp.Key(), err), removePodNetwork(pp))
	}
	if err := st.Save(dir); err != nil {
		return PodPlan{}, errors.Join(err, removePodNetwork(pp))
	}
	var nsLabels map[string]string
	for _, ns := range st.Plan.Namespaces {
		if ns.Name == pp.Namespace {
			nsLabels = ns.Labels
		}
	}
	if err := ensureNamespace(ctx, cs, pp.Namespace, nsLabels); err != nil {
		return pp, fmt.Errorf("pod %s: namespace: %w", pp.Key(), err)
	}
	if err := registerPod(ctx, cs, st.Plan, pp, metav1.Now()); err != nil {
		return pp, fmt.Errorf("pod %s: registering: %w", pp.Key(), err)
	}
	if err := waitProbeServer(ctx, st, pp, 10*time.Second); err != nil {
		return pp, err
	}
	return pp, nil
}

// waitProbeServer waits until the probe server daemon listens on the
// lab's first served TCP port inside the new pod.
func waitProbeServer(ctx context.Context, st *State, pp PodPlan, timeout time.Duration) error {
	port := 0
	for _, p := range st.ServedPorts {
		if p.Protocol == "TCP" {
			port = p.Port
			break
		}
	}
	isDNS := pp.Namespace == "kube-system" && pp.Labels[KubeDNSLabel] == "kube-dns"
	if port == 0 || st.Processes["probes"].PID == 0 || isDNS {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for {
		var up bool
		_ = netns.Do(netns.Path(pp.Netns), func() error {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 200*time.Millisecond)
			if err == nil {
				up = true
				c.Close()
			}
			return nil
		})
		if up {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pod %s: the probe server did not listen on TCP/%d within %s", pp.Key(), port, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// RemovePod deletes a pod of the running lab: its Pod object (at once, as
// a kubelet does after the containers stopped), its veth and namespace,
// and its place in the plan.
func RemovePod(ctx context.Context, dir, key string) error {
	unlock, err := lockState(dir)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := LoadState(dir)
	if err != nil {
		return err
	}
	pp, err := st.Plan.RemovePod(key)
	if err != nil {
		return err
	}
	cfg, err := RESTConfig(dir)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("lab client: %w", err)
	}
	err = cs.CoreV1().Pods(pp.Namespace).Delete(ctx, pp.Name, metav1.DeleteOptions{GracePeriodSeconds: ptrTo(int64(0))})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("pod %s: deleting: %w", key, err)
	}
	if err := st.Save(dir); err != nil {
		return err
	}
	return removePodNetwork(pp)
}

// removePodNetwork deletes the node-side veth (which destroys its peer
// even while probe sockets still pin the pod namespace) and the namespace.
func removePodNetwork(pp PodPlan) error {
	var errs []error
	if h, err := handleAt(pp.NodeName); err == nil {
		if l, err := h.LinkByName(pp.HostVeth); err == nil {
			if err := h.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("deleting veth %s in %s: %w", pp.HostVeth, pp.NodeName, err))
			}
		}
		h.Close()
	}
	if netns.Exists(pp.Netns) {
		if err := netns.Delete(pp.Netns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/bulkhead-dev/bulkhead/dataplane/agent/endpointapi"
	"github.com/bulkhead-dev/bulkhead/internal/cni"
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

// AdmitTimeout bounds how long AddPod waits for the node's agent to
// program a new pod's policy.
var AdmitTimeout = 10 * time.Second

// AddPod adds a pod to the running lab in dir, as a scheduler, kubelet
// and CNI would: it is recorded in the plan (node > 0 pins it to that
// node), gets its namespace, veth and addresses with its eth0 held down,
// and its Pod object is created bound to the node (Pending, no IPs, with
// owners as ownerReferences). Then, as a CNI ADD does, it asks the node's
// agent over the agent's local endpoint socket to admit the endpoint and
// waits until the agent reports that policy including the pod's
// addresses is enforced (at most AdmitTimeout). Only then is eth0 brought
// up, the pod marked Running and Ready with status.podIPs, and AddPod
// returns once the lab's probe server listens in it (when the lab serves
// TCP ports). If the agent cannot admit the pod (controller unreachable,
// dataplane failure, timeout) AddPod fails closed: the pod stays Pending
// with its network down and the error names the pod and the reason.
// A lab without enforcement skips the admission.
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
	if err := holdPodNetwork(pp); err != nil {
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
	pod, err := createPodObject(ctx, cs, pp)
	if err != nil {
		return pp, fmt.Errorf("pod %s: registering: %w", pp.Key(), err)
	}
	if err := admitPod(ctx, dir, st, pp); err != nil {
		return pp, err
	}
	if err := releasePodNetwork(pp); err != nil {
		return pp, fmt.Errorf("pod %s: %w", pp.Key(), err)
	}
	if err := setPodRunning(ctx, cs, st.Plan, pp, pod, metav1.Now()); err != nil {
		return pp, fmt.Errorf("pod %s: registering: %w", pp.Key(), err)
	}
	if err := waitProbeServer(ctx, st, pp, 10*time.Second); err != nil {
		return pp, err
	}
	return pp, nil
}

// OnAdmitted, when set, is told how long the node agent took to admit
// each pod AddPod adds (benchmarks use it).
var OnAdmitted func(pod string, took time.Duration)

// AgentEndpointSocket is the local endpoint API socket of node's agent.
func AgentEndpointSocket(dir, node string) string {
	return filepath.Join(Layout{dir}.AgentState(node), endpointapi.SocketName)
}

// admitPod is the CNI's call to the node agent: the lab runs the
// bulkhead-cni plugin's ADD (package cni) in process, with the CNI
// environment and a prevResult holding the pod's addresses, as a runtime
// runs the chained plugin after the interface and IPAM plugins.
func admitPod(ctx context.Context, dir string, st *State, pp PodPlan) error {
	if st.NoEnforcement != "" {
		return nil
	}
	if p, ok := st.Processes["agent-"+pp.NodeName]; !ok || p.PID == 0 {
		return nil // the lab runs no agents
	}
	start := time.Now()
	conf, err := json.Marshal(map[string]any{
		"cniVersion": "1.1.0", "name": "lab", "type": cni.PluginType,
		"socket": AgentEndpointSocket(dir, pp.NodeName), "timeoutSeconds": AdmitTimeout.Seconds(),
		"prevResult": map[string]any{
			"cniVersion": "1.1.0",
			"interfaces": []map[string]any{{"name": "eth0", "sandbox": pp.Netns}},
			"ips": []map[string]any{
				{"address": netip.PrefixFrom(pp.IP, 32).String(), "interface": 0},
				{"address": netip.PrefixFrom(pp.IP6, 128).String(), "interface": 0},
			},
		},
	})
	if err != nil {
		return fmt.Errorf("pod %s: encoding the CNI configuration: %w", pp.Key(), err)
	}
	env := cni.Env{Command: "ADD", ContainerID: pp.Namespace + "_" + pp.Name, Netns: pp.Netns, IfName: "eth0",
		Args: "K8S_POD_NAMESPACE=" + pp.Namespace + ";K8S_POD_NAME=" + pp.Name}
	if err := cni.Run(ctx, env, bytes.NewReader(conf), io.Discard); err != nil {
		return fmt.Errorf("CNI ADD (fail closed): %w", err)
	}
	if OnAdmitted != nil {
		OnAdmitted(pp.Key(), time.Since(start))
	}
	return nil
}

// holdPodNetwork sets the pod's eth0 down (keeping its addresses), so
// nothing passes between the pod and its node until releasePodNetwork.
// The node side keeps its host routes, which the eBPF backend needs to
// find the pod's interface.
func holdPodNetwork(pp PodPlan) error {
	if err := writeSysctls(pp.Netns, map[string]string{"net/ipv6/conf/eth0/keep_addr_on_down": "1"}); err != nil {
		return err
	}
	return withPodLink(pp, func(h *netlink.Handle, eth0 netlink.Link) error {
		if err := h.LinkSetDown(eth0); err != nil {
			return fmt.Errorf("holding eth0 down: %w", err)
		}
		return nil
	})
}

// releasePodNetwork brings eth0 up and restores the routes the kernel
// dropped with the link: the gateway and both default routes.
func releasePodNetwork(pp PodPlan) error {
	if err := withPodLink(pp, func(h *netlink.Handle, eth0 netlink.Link) error {
		if err := h.LinkSetUp(eth0); err != nil {
			return fmt.Errorf("setting eth0 up: %w", err)
		}
		idx := eth0.Attrs().Index
		for _, r := range []*netlink.Route{
			{LinkIndex: idx, Dst: ipNet(netip.PrefixFrom(GatewayIP, 32)), Scope: netlink.SCOPE_LINK},
			{LinkIndex: idx, Dst: ipNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: GatewayIP.AsSlice(), Flags: int(netlink.FLAG_ONLINK)},
			{LinkIndex: idx, Dst: ipNet(netip.MustParsePrefix("::/0")), Gw: GatewayIP6.AsSlice()},
		} {
			if err := h.RouteReplace(r); err != nil {
				return fmt.Errorf("restoring route %s on eth0: %w", r.Dst, err)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	return waitOperUp(pp, 3*time.Second)
}

// waitOperUp waits until both ends of the pod's veth are operationally
// up. The kernel's link watcher activates a device's queue only when it
// marks the device up, which it may defer by up to a second after a
// carrier change; until then packets are dropped.
func waitOperUp(pp PodPlan, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		podUp, hostUp := false, false
		_ = withPodLink(pp, func(h *netlink.Handle, eth0 netlink.Link) error {
			podUp = eth0.Attrs().OperState == netlink.OperUp
			return nil
		})
		if h, err := handleAt(pp.NodeName); err == nil {
			if l, err := h.LinkByName(pp.HostVeth); err == nil {
				hostUp = l.Attrs().OperState == netlink.OperUp
			}
			h.Close()
		}
		if podUp && hostUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the veth of %s is not operationally up after %s (eth0 up: %t, %s up: %t)", pp.Key(), timeout, podUp, pp.HostVeth, hostUp)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func withPodLink(pp PodPlan, fn func(*netlink.Handle, netlink.Link) error) error {
	podNS, err := netns.Open(netns.Path(pp.Netns))
	if err != nil {
		return err
	}
	defer podNS.Close()
	h, err := netlink.NewHandleAt(podNS)
	if err != nil {
		return fmt.Errorf("netlink handle in %s: %w", pp.Netns, err)
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("finding eth0 in %s: %w", pp.Netns, err)
	}
	return fn(h, eth0)
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

package main

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/bulkhead-dev/bulkhead/internal/lab"
)

func init() {
	labSubcommands = append(labSubcommands, newLabDeployCmd, newLabScaleCmd, newLabServiceCmd, newLabConnectCmd)
}

func parseLabels(kvs []string, flag string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageError{fmt.Errorf("--%s %q: want KEY=VALUE", flag, kv)}
		}
		out[k] = v
	}
	return out, nil
}

func newLabDeployCmd(f *labFlags) *cobra.Command {
	var ns string
	var replicas int32
	var lbls, ports []string
	cmd := &cobra.Command{
		Use:   "deploy NAME",
		Short: "Create or update a Deployment in the running lab (a changed template rolls it out)",
		Long: `Create or update a Deployment: the lab plays the Deployment and ReplicaSet
controllers, creating a ReplicaSet "<name>-<pod-template-hash>" and pods owned
by it with new namespaces, veths and addresses; pods of an older template are
removed. --label sets the pod labels (app=NAME if none; the selector is the
app label); --port NAME=PORT declares a named container port.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := parseLabels(lbls, "label")
			if err != nil {
				return err
			}
			if len(l) == 0 {
				l["app"] = args[0]
			}
			if l["app"] == "" {
				return usageError{fmt.Errorf("--label: an app label is required (it is the selector)")}
			}
			var cps []corev1.ContainerPort
			for _, p := range ports {
				n, v, ok := strings.Cut(p, "=")
				port, err := strconv.Atoi(v)
				if !ok || err != nil || port < 1 || port > 65535 {
					return usageError{fmt.Errorf("--port %q: want NAME=PORT", p)}
				}
				cps = append(cps, corev1.ContainerPort{Name: n, ContainerPort: int32(port)})
			}
			d := &appsv1.Deployment{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: args[0]},
				Spec: appsv1.DeploymentSpec{
					Replicas: &replicas,
					Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": l["app"]}},
					Template: corev1.PodTemplateSpec{
						ObjectMeta: metav1.ObjectMeta{Labels: l},
						Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: lab.ProbeImage, Ports: cps}}},
					},
				},
			}
			start := time.Now()
			if _, err := lab.ApplyDeployment(cmd.Context(), f.stateDir, d); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deployment %s/%s: %d replicas (%s)\n", ns, args[0], replicas, time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	cmd.Flags().StringVarP(&ns, "namespace", "n", "default", "namespace")
	cmd.Flags().Int32Var(&replicas, "replicas", 1, "number of pods")
	cmd.Flags().StringArrayVar(&lbls, "label", nil, "pod label KEY=VALUE (repeatable)")
	cmd.Flags().StringArrayVar(&ports, "port", nil, "named container port NAME=PORT (repeatable)")
	return cmd
}

func newLabScaleCmd(f *labFlags) *cobra.Command {
	var ns string
	var replicas int32
	cmd := &cobra.Command{
		Use:   "scale NAME --replicas N",
		Short: "Scale a Deployment of the running lab",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if replicas < 0 {
				return usageError{fmt.Errorf("--replicas %d: must not be negative", replicas)}
			}
			cfg, err := lab.RESTConfig(f.stateDir)
			if err != nil {
				return err
			}
			cs, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				return fmt.Errorf("lab client: %w", err)
			}
			d, err := cs.AppsV1().Deployments(ns).Get(cmd.Context(), args[0], metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("deployment %s/%s: %w", ns, args[0], err)
			}
			d.Spec.Replicas = &replicas
			if _, err := lab.ApplyDeployment(cmd.Context(), f.stateDir, d); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deployment %s/%s: %d replicas\n", ns, args[0], replicas)
			return nil
		},
	}
	cmd.Flags().StringVarP(&ns, "namespace", "n", "default", "namespace")
	cmd.Flags().Int32Var(&replicas, "replicas", 1, "number of pods")
	return cmd
}

func newLabServiceCmd(f *labFlags) *cobra.Command {
	var ns, clusterIP string
	var sel, ports []string
	cmd := &cobra.Command{
		Use:   "service NAME --selector KEY=VALUE --port PORT[:TARGET][/PROTO]",
		Short: "Create or update a Service; the lab writes its EndpointSlices and proxy rules",
		Long: `Create or update a Service of the running lab. Its ClusterIP comes from
` + lab.ServiceCIDR + ` (or --cluster-ip). TARGET is a number or a named container
port (resolved per pod). The lab writes the EndpointSlices from the ready
pods and loads the DNAT rules into the "ip ` + lab.SvcProxyTable + `" table of every node.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := parseLabels(sel, "selector")
			if err != nil {
				return err
			}
			if len(ports) == 0 {
				return usageError{fmt.Errorf("--port is required")}
			}
			svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: args[0]},
				Spec: corev1.ServiceSpec{Selector: s, ClusterIP: clusterIP}}
			for i, p := range ports {
				sp, err := parseServicePort(p)
				if err != nil {
					return usageError{err}
				}
				if len(ports) > 1 {
					sp.Name = "p" + strconv.Itoa(i)
				}
				svc.Spec.Ports = append(svc.Spec.Ports, sp)
			}
			got, err := lab.ApplyService(cmd.Context(), f.stateDir, svc)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "service %s/%s: clusterIP %s\n", ns, args[0], got.Spec.ClusterIP)
			return nil
		},
	}
	cmd.Flags().StringVarP(&ns, "namespace", "n", "default", "namespace")
	cmd.Flags().StringVar(&clusterIP, "cluster-ip", "", "fixed ClusterIP inside "+lab.ServiceCIDR)
	cmd.Flags().StringArrayVar(&sel, "selector", nil, "selector KEY=VALUE (repeatable)")
	cmd.Flags().StringArrayVar(&ports, "port", nil, "PORT[:TARGET][/TCP|UDP|SCTP] (repeatable)")
	return cmd
}

// parseServicePort reads PORT[:TARGET][/PROTO].
func parseServicePort(s string) (corev1.ServicePort, error) {
	var sp corev1.ServicePort
	rest, proto, hasProto := strings.Cut(s, "/")
	sp.Protocol = corev1.ProtocolTCP
	if hasProto {
		switch p := corev1.Protocol(strings.ToUpper(proto)); p {
		case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
			sp.Protocol = p
		default:
			return sp, fmt.Errorf("--port %q: protocol %q is not TCP, UDP or SCTP", s, proto)
		}
	}
	port, target, hasTarget := strings.Cut(rest, ":")
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return sp, fmt.Errorf("--port %q: port %q is not 1-65535", s, port)
	}
	sp.Port = int32(n)
	if hasTarget {
		if tn, err := strconv.Atoi(target); err == nil {
			if tn < 1 || tn > 65535 {
				return sp, fmt.Errorf("--port %q: target port %d is not 1-65535", s, tn)
			}
			sp.TargetPort = intstr.FromInt32(int32(tn))
		} else if target != "" {
			sp.TargetPort = intstr.FromString(target)
		}
	}
	return sp, nil
}

func newLabConnectCmd(f *labFlags) *cobra.Command {
	var from, dns string
	var n int
	var hold, timeout time.Duration
	cmd := &cobra.Command{
		Use:   "connect --from NS/POD TARGET:PORT",
		Short: "Probe a Service name, ClusterIP or pod IP from a pod; or open N connections and hold them",
		Long: `TARGET is an IPv4 address (pod IP or ClusterIP) or a name resolved through
the lab's kube-dns (` + lab.KubeDNSIP.String() + `:53, or --dns) with the pod's search path,
e.g. "api" or "api.shop.svc.cluster.local". With -c 1 it prints the pod that
answered. With -c N (N>1) it opens N TCP connections and holds them for --hold.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := lab.LoadState(f.stateDir)
			if err != nil {
				return fmt.Errorf("no lab in %s: %w", f.stateDir, err)
			}
			src, ok := st.Plan.Pod(from)
			if !ok {
				return usageError{fmt.Errorf("--from %q: no such pod in the lab", from)}
			}
			host, portS, ok := strings.Cut(args[0], ":")
			port, err := strconv.Atoi(portS)
			if !ok || err != nil || port < 1 || port > 65535 {
				return usageError{fmt.Errorf("target %q: want HOST:PORT", args[0])}
			}
			server, err := netip.ParseAddrPort(dns)
			if err != nil {
				return usageError{fmt.Errorf("--dns %q: %w", dns, err)}
			}
			addr, err := netip.ParseAddr(host)
			if err != nil {
				addrs, err := lab.Resolve(src.Netns, server, src.Namespace, host, timeout)
				if err != nil {
					return err
				}
				if len(addrs) == 0 {
					return fmt.Errorf("%s: no IPv4 address", host)
				}
				addr = addrs[0]
			}
			target := netip.AddrPortFrom(addr, uint16(port))
			if n <= 1 {
				id, err := lab.ProbeAddr(src.Netns, target, timeout)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s -> %s (%s): answered by %s\n", from, args[0], target, id)
				return nil
			}
			start := time.Now()
			closeAll, err := lab.OpenConnections(src.Netns, target, n, timeout)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s -> %s: %d connections open in %s, holding %s\n", from, target, n, time.Since(start).Round(time.Millisecond), hold)
			select {
			case <-time.After(hold):
			case <-cmd.Context().Done():
			}
			return closeAll()
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "source pod NS/NAME")
	cmd.Flags().StringVar(&dns, "dns", netip.AddrPortFrom(lab.KubeDNSIP, 53).String(), "DNS server for names")
	cmd.Flags().IntVarP(&n, "connections", "c", 1, "number of TCP connections to open and hold")
	cmd.Flags().DurationVar(&hold, "hold", 10*time.Second, "how long to hold -c connections")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Second, "per-connection and per-query timeout")
	return cmd
}

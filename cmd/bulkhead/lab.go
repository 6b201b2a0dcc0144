package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/bulkhead-dev/bulkhead/internal/lab"
)

func init() { addCommand(newLabCmd) }

// labSubcommands are lab subcommands registered from other lab_*.go files.
var labSubcommands []func(*labFlags) *cobra.Command

type labFlags struct {
	stateDir string
}

func newLabCmd() *cobra.Command {
	f := &labFlags{}
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run the whole product locally: control plane, namespaces as nodes and pods, probes",
		Long: `The lab runs a real kube-apiserver and etcd, node and pod network namespaces
joined by routed veths, a lab kubelet that registers Nodes and Pods, a probe
server in every pod namespace, and the real bulkhead-controller and one
bulkhead-agent per node. State lives in --state-dir (default ` + lab.DefaultStateDir + `,
or $BULKHEAD_LAB_DIR). See docs/lab.md.`,
	}
	// controller-runtime's client logs through a global logger; the lab
	// reports errors itself.
	cmd.PersistentPreRun = func(*cobra.Command, []string) { ctrllog.SetLogger(logr.Discard()) }
	cmd.PersistentFlags().StringVar(&f.stateDir, "state-dir", lab.StateDirFromEnv(), "lab state directory (PIDs, logs, kubeconfig, tokens, CA)")
	cmd.AddCommand(
		newLabUpCmd(f), newLabDownCmd(f), newLabStatusCmd(f), newLabApplyCmd(f),
		newLabKubeconfigCmd(f), newLabProbeCmd(f),
		newLabServeCmd(f, lab.DaemonControlPlane), newLabServeCmd(f, lab.DaemonProbes),
	)
	for _, sc := range labSubcommands {
		cmd.AddCommand(sc(f))
	}
	return cmd
}

func newLabUpCmd(f *labFlags) *cobra.Command {
	o := lab.Options{}
	var probes string
	var internet []string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Bring a lab up",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.StateDir = f.stateDir
			o.Progress = cmd.ErrOrStderr()
			if probes != "" {
				ps, err := lab.ParseProbes(probes)
				if err != nil {
					return usageError{fmt.Errorf("--probes: %w", err)}
				}
				o.ExtraProbes = ps
			}
			for _, h := range internet {
				a, err := netip.ParseAddr(h)
				if err != nil {
					return usageError{fmt.Errorf("--internet: %w", err)}
				}
				o.Internet = append(o.Internet, a)
			}
			check := o
			if check.Name == "" {
				check.Name = "lab"
			}
			if err := check.Validate(); err != nil {
				return usageError{err}
			}
			for _, s := range o.Scenario {
				if _, err := lab.LoadScenario(s); err != nil {
					return usageError{err}
				}
			}
			if os.Geteuid() != 0 {
				return errors.New("lab up needs root (network namespaces, veths, sysctls)")
			}
			st, err := lab.Up(cmd.Context(), o)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "lab %q is up: %d nodes, %d pods\n", st.Plan.Name, len(st.Plan.Nodes), len(st.Plan.Pods))
			if st.NoEnforcement != "" {
				fmt.Fprintf(w, "no enforcement: %s\n", st.NoEnforcement)
			} else {
				fmt.Fprintf(w, "enforcement: %s and %d %s (%s backend)\n", lab.ControllerBinary, len(st.Plan.Nodes), lab.AgentBinary, st.Backend)
			}
			fmt.Fprintf(w, "kubeconfig: %s\nnext: bulkhead lab probe -o table; bulkhead lab apply -f FILE --wait; bulkhead lab down\n", lab.Layout{Dir: f.stateDir}.Kubeconfig())
			return nil
		},
	}
	cmd.Flags().StringVar(&o.Name, "name", "lab", "lab name (1-12 lower-case letters and digits); namespaces are bh-<name>-*")
	cmd.Flags().IntVar(&o.Nodes, "nodes", 3, "number of nodes")
	cmd.Flags().IntVar(&o.PodsPerNode, "pods-per-node", 2, "pods per node in the default set (ignored with --scenario)")
	cmd.Flags().StringVar(&o.Backend, "backend", "nftables", "agent backend: nftables or ebpf")
	cmd.Flags().StringSliceVar(&o.Scenario, "scenario", nil, "scenario YAML file or directory: its Namespaces and Pods make the lab")
	cmd.Flags().StringVar(&probes, "probes", "", "extra ports the probe server listens on, e.g. TCP/8443,UDP/5353")
	cmd.Flags().BoolVar(&o.NoBulkhead, "no-bulkhead", false, "start no controller and no agents")
	cmd.Flags().BoolVar(&o.DNS, "dns", false, "add the kube-dns stand-in (pod kube-system/kube-dns-0, Service kube-system/kube-dns at 10.96.0.10)")
	cmd.Flags().StringSliceVar(&internet, "internet", nil, "add the internet stand-in namespace with these host addresses in 10.251.0.0/24 (a DNS server that is not kube-dns answers on each)")
	cmd.Flags().StringArrayVar(&o.ControllerArgs, "controller-arg", nil, "extra argument for bulkhead-controller (repeatable), e.g. --controller-arg=--suggest")
	cmd.Flags().StringArrayVar(&o.AgentArgs, "agent-arg", nil, "extra argument for every bulkhead-agent (repeatable), e.g. --agent-arg=--flow-interval=1s")
	return cmd
}

func newLabDownCmd(f *labFlags) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Remove the lab: processes, namespaces, pins and state (idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := lab.ValidateName(name); err != nil {
				return usageError{fmt.Errorf("--name: %w", err)}
			}
			return lab.Down(name, f.stateDir, cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVar(&name, "name", "lab", "lab name, used when the state directory is gone")
	return cmd
}

func newLabStatusCmd(f *labFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the lab's processes, API server, nodes and pods",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.WriteStatus(cmd.Context(), cmd.OutOrStdout(), f.stateDir)
		},
	}
}

func newLabKubeconfigCmd(f *labFlags) *cobra.Command {
	var raw bool
	cmd := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print the path of the lab's admin kubeconfig (--raw: its content)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p := lab.Layout{Dir: f.stateDir}.Kubeconfig()
			b, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("no lab kubeconfig (is the lab up?): %w", err)
			}
			if raw {
				_, err = cmd.OutOrStdout().Write(b)
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), p)
			return err
		},
	}
	cmd.Flags().BoolVar(&raw, "raw", false, "print the kubeconfig itself")
	return cmd
}

func newLabApplyCmd(f *labFlags) *cobra.Command {
	var files []string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "apply -f PATH...",
		Short: "Apply a scenario's policies, zones and quarantines to the lab (server-side apply)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return usageError{errors.New("-f: at least one file or directory is required")}
			}
			sc, err := lab.LoadScenario(files...)
			if err != nil {
				return usageError{err}
			}
			w := cmd.OutOrStdout()
			if n := len(sc.Namespaces) + len(sc.Pods); n > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "lab: skipping %d Namespaces and Pods: they come from `lab up --scenario`\n", n)
			}
			st, err := lab.LoadState(f.stateDir)
			if err != nil {
				return fmt.Errorf("no lab in %s: %w", f.stateDir, err)
			}
			c, err := lab.Client(f.stateDir)
			if err != nil {
				return err
			}
			start := time.Now()
			res, err := lab.Apply(cmd.Context(), c, sc.Others)
			for _, r := range res {
				fmt.Fprintf(w, "%s %s applied (generation %d)\n", r.Kind, r.Name, r.Generation)
			}
			if err != nil {
				return err
			}
			if !wait {
				return nil
			}
			if st.NoEnforcement != "" {
				return fmt.Errorf("--wait: no controller runs in this lab, so nothing reports enforcement (no enforcement: %s)", st.NoEnforcement)
			}
			if err := lab.WaitEnforced(cmd.Context(), c, res, timeout, func(s string) { fmt.Fprintln(cmd.ErrOrStderr(), "lab:", s) }); err != nil {
				return err
			}
			fmt.Fprintf(w, "enforced %s after the apply started (Enforced=True observed, polled every 50ms)\n", time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "YAML/JSON file or directory (repeatable)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until every Zone, ZonePolicy and Quarantine reports Enforced=True")
	cmd.Flags().DurationVar(&timeout, "timeout", 60*time.Second, "how long --wait waits")
	return cmd
}

func newLabProbeCmd(f *labFlags) *cobra.Command {
	var probes, output string
	var opts lab.ProbeOptions
	cmd := &cobra.Command{
		Use:   "probe",
		Short: "Measure the reachability matrix with real packets between pod namespaces",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "json" && output != "table" {
				return usageError{fmt.Errorf("-o: %q is not json or table", output)}
			}
			var ps []lab.Probe
			if probes != "" {
				var err error
				if ps, err = lab.ParseProbes(probes); err != nil {
					return usageError{fmt.Errorf("--probes: %w", err)}
				}
			}
			es, err := lab.ProbeLab(cmd.Context(), f.stateDir, ps, opts)
			if err != nil {
				return err
			}
			return writeMatrix(cmd.OutOrStdout(), es, output)
		},
	}
	cmd.Flags().StringVar(&probes, "probes", "", "probes, e.g. TCP/80,UDP/53,SCTP/9000 (default: every declared container port)")
	cmd.Flags().StringVarP(&output, "output", "o", "json", "output format: json or table")
	cmd.Flags().DurationVar(&opts.Timeout, "timeout", 600*time.Millisecond, "timeout of one probe")
	cmd.Flags().IntVar(&opts.Workers, "workers", 32, "concurrent probes")
	cmd.Flags().BoolVar(&opts.IPv6, "ipv6", false, "probe the pods' IPv6 addresses instead of IPv4")
	return cmd
}

func writeMatrix(w io.Writer, es []lab.Entry, output string) error {
	if output == "table" {
		return lab.WriteTable(w, es)
	}
	return lab.WriteJSON(w, es)
}

func newLabServeCmd(f *labFlags, kind string) *cobra.Command {
	return &cobra.Command{
		Use:    "serve-" + kind,
		Short:  "Run a lab daemon (started by lab up)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serveDaemon(cmd.Context(), kind, f.stateDir)
		},
	}
}

func serveDaemon(ctx context.Context, kind, dir string) error {
	switch kind {
	case lab.DaemonControlPlane:
		return lab.ServeControlPlane(ctx, dir)
	case lab.DaemonProbes:
		return lab.ServeProbes(ctx, dir)
	}
	return fmt.Errorf("unknown lab daemon %q", kind)
}

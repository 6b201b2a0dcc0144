package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/stdr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/bulkhead-dev/bulkhead/dataplane/agent/endpointapi"
	"github.com/bulkhead-dev/bulkhead/internal/stream"
)

// Options are the bulkhead-agent command's flags.
type Options struct {
	Node           string
	Controllers    string
	CAFile         string
	TokenFile      string
	NetNS          string
	Backend        string
	StateDir       string
	MetricsAddr    string
	HealthAddr     string
	ResyncInterval time.Duration
	Verbosity      int
	// EndpointSocket is the local endpoint API's unix socket (see
	// package endpointapi); empty means <state-dir>/endpoint.sock,
	// "none" disables it.
	EndpointSocket string
	// Flow pipeline.
	Flows           bool
	FlowInterval    time.Duration
	MaxPendingEdges int
	FlowLog         string
	FlowLogMaxBytes int64
	// ServiceCIDRs and ServiceUplinks go to the backend (BackendConfig).
	ServiceCIDRs   []netip.Prefix
	ServiceUplinks []string
	// Uninstall removes the backend's kernel state and exits.
	Uninstall bool
}

// Bind registers the flags.
func (o *Options) Bind(fs *flag.FlagSet) {
	fs.StringVar(&o.Node, "node", os.Getenv("NODE_NAME"), "name of the node this agent enforces (default $NODE_NAME)")
	fs.StringVar(&o.Controllers, "controller", "", "controller address host:port; a comma-separated list is tried in turn")
	fs.StringVar(&o.CAFile, "ca-file", "", "PEM CA bundle of the controller (ConfigMap bulkhead-ca, key ca.crt)")
	fs.StringVar(&o.TokenFile, "token-file", "", "node-bound ServiceAccount token (audience bulkhead), re-read on every connect")
	fs.StringVar(&o.NetNS, "netns", "", "network namespace to program, e.g. /run/netns/node-1 (default: the agent's own)")
	fs.StringVar(&o.Backend, "backend", "auto", "dataplane backend: "+strings.Join(Backends(), ", ")+" or ebpf")
	fs.StringVar(&o.StateDir, "state-dir", "/var/lib/bulkhead", "directory for the agent's persisted state")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", ":9090", "Prometheus metrics listen address; empty disables")
	fs.StringVar(&o.HealthAddr, "health-addr", ":9091", "/healthz and /readyz listen address; empty disables")
	fs.DurationVar(&o.ResyncInterval, "resync-interval", 30*time.Second, "re-enforce the current policy this often to repair drift; 0 disables")
	fs.IntVar(&o.Verbosity, "v", 0, "log verbosity")
	fs.StringVar(&o.EndpointSocket, "endpoint-socket", "", "unix socket of the local endpoint API a CNI calls before bringing a pod's network up (default <state-dir>/"+endpointapi.SocketName+"; \"none\" disables)")
	fs.BoolVar(&o.Flows, "flows", true, "read flow records from the dataplane and report edge summaries to the controller")
	fs.DurationVar(&o.FlowInterval, "flow-interval", DefaultFlowInterval, "how often flow edge summaries are reported")
	fs.IntVar(&o.MaxPendingEdges, "flow-max-edges", DefaultMaxPendingEdges, "most distinct edges held per interval; further ones are dropped and counted")
	fs.StringVar(&o.FlowLog, "flow-log", "", "append flow records as JSON lines to this file; empty disables")
	fs.Int64Var(&o.FlowLogMaxBytes, "flow-log-max-bytes", 64<<20, "rotate the flow log to <file>.1 when it would grow beyond this size")
	fs.Func("service-cidr", "a Service ClusterIP range the node's netfilter DNATs (kube-proxy), e.g. 10.96.0.0/12; repeat or comma-separate. The eBPF backend judges egress to it after DNAT, against the chosen backend; nftables needs none", func(v string) error {
		for _, s := range strings.Split(v, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("not a CIDR: %w", err)
			}
			o.ServiceCIDRs = append(o.ServiceCIDRs, p.Masked())
		}
		return nil
	})
	fs.Func("service-uplink", "eBPF: a node interface that carries traffic to remote Service backends; repeat or comma-separate (default: every interface that is up and not a pod's)", func(v string) error {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s == "" {
				return errors.New("empty interface name")
			}
			o.ServiceUplinks = append(o.ServiceUplinks, s)
		}
		return nil
	})
	fs.BoolVar(&o.Uninstall, "uninstall", false, "remove the backend's kernel state (nft table, eBPF attachments and pins) from --netns and exit")
}

// Validate returns every problem with the flags at once.
func (o *Options) Validate() error {
	var errs []error
	if o.Uninstall {
		return nil // only --backend and --netns matter
	}
	if o.Node == "" {
		errs = append(errs, errors.New("--node is required"))
	}
	if o.Controllers == "" {
		errs = append(errs, errors.New("--controller is required"))
	}
	for _, a := range o.controllers() {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("--controller %q: %w", a, err))
		}
	}
	for flagName, f := range map[string]string{"--ca-file": o.CAFile, "--token-file": o.TokenFile} {
		if f == "" {
			errs = append(errs, fmt.Errorf("%s is required", flagName))
		} else if _, err := os.Stat(f); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", flagName, err))
		}
	}
	if o.ResyncInterval < 0 {
		errs = append(errs, fmt.Errorf("--resync-interval %s is negative", o.ResyncInterval))
	}
	if o.Flows && o.FlowInterval <= 0 {
		errs = append(errs, fmt.Errorf("--flow-interval %s must be positive", o.FlowInterval))
	}
	if len(o.ServiceUplinks) > 0 && len(o.ServiceCIDRs) == 0 {
		errs = append(errs, errors.New("--service-uplink needs --service-cidr"))
	}
	if o.FlowLog != "" && o.FlowLogMaxBytes <= 0 {
		errs = append(errs, fmt.Errorf("--flow-log-max-bytes %d must be positive", o.FlowLogMaxBytes))
	}
	return errors.Join(errs...)
}

func (o *Options) endpointSocket() string {
	switch o.EndpointSocket {
	case "none":
		return ""
	case "":
		return filepath.Join(o.StateDir, endpointapi.SocketName)
	}
	return o.EndpointSocket
}

func (o *Options) controllers() []string {
	var out []string
	for _, a := range strings.Split(o.Controllers, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// Main runs the agent until ctx ends.
func Main(ctx context.Context, o Options) error {
	stdr.SetVerbosity(o.Verbosity)
	log := stdr.New(nil).WithName("bulkhead-agent")
	ctx = logr.NewContext(ctx, log)
	backend, err := NewBackend(o.Backend, BackendConfig{NetNSPath: o.NetNS, ServiceCIDRs: o.ServiceCIDRs, ServiceUplinks: o.ServiceUplinks}, log)
	if err != nil {
		return err
	}
	if o.Uninstall {
		if err := backend.Uninstall(ctx); err != nil {
			_ = backend.Close()
			return fmt.Errorf("uninstalling backend %s: %w", backend.Name(), err)
		}
		log.Info("uninstalled", "backend", backend.Name(), "netns", o.NetNS)
		return nil
	}
	defer backend.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var flows FlowSource
	var a *Agent // set below, before Run starts the flow source
	if o.Flows {
		if flows, err = NewFlowSource(backend, o.NetNS, func(ip netip.Addr) bool { return a.IsLocal(ip) }); err != nil {
			log.Error(err, "flow observation is off")
			flows = nil
		}
	}
	var flowLog *FlowLog
	if o.FlowLog != "" {
		if flowLog, err = OpenFlowLog(o.FlowLog, o.FlowLogMaxBytes); err != nil {
			return err
		}
		defer flowLog.Close()
	}
	a, err = New(Config{
		Flows:           flows,
		FlowInterval:    o.FlowInterval,
		MaxPendingEdges: o.MaxPendingEdges,
		FlowLog:         flowLog,
		Node:            o.Node,
		Controllers:     o.controllers(),
		Dial: func(addr string) (*grpc.ClientConn, error) {
			return stream.Dial(stream.ClientConfig{Address: addr, CAFile: o.CAFile, TokenFile: o.TokenFile})
		},
		Backend:        backend,
		StateDir:       o.StateDir,
		ResyncInterval: o.ResyncInterval,
		Metrics:        NewMetrics(reg),
		Log:            log,
	})
	if err != nil {
		return err
	}
	if o.MetricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		if err := serveHTTP(ctx, log, "metrics", o.MetricsAddr, mux); err != nil {
			return err
		}
	}
	if o.HealthAddr != "" {
		if err := serveHTTP(ctx, log, "health", o.HealthAddr, HealthHandler(a)); err != nil {
			return err
		}
	}
	if sock := o.endpointSocket(); sock != "" {
		if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
			return fmt.Errorf("creating the endpoint socket directory: %w", err)
		}
		lis, err := endpointapi.Listen(sock)
		if err != nil {
			return fmt.Errorf("--endpoint-socket: %w", err)
		}
		srv := &http.Server{Handler: EndpointHandler(a), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			<-ctx.Done()
			_ = srv.Close()
			_ = os.Remove(sock)
		}()
		go func() {
			if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error(err, "endpoint API stopped")
			}
		}()
		log.Info("endpoint API listening", "socket", sock)
	}
	log.Info("starting", "node", o.Node, "controllers", o.Controllers, "backend", backend.Name(), "netns", o.NetNS)
	return a.Run(ctx)
}

// HealthHandler serves /healthz (always ok while the process runs) and
// /readyz (ok once a snapshot has been enforced).
func HealthHandler(a *Agent) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.Ready() {
			http.Error(w, "no snapshot enforced yet", http.StatusServiceUnavailable)
			return
		}
		s := a.Applied()
		fmt.Fprintf(w, "ok epoch=%s generation=%d\n", s.Epoch, s.Generation)
	})
	return mux
}

func serveHTTP(ctx context.Context, log logr.Logger, what, addr string, h http.Handler) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening for %s on %s: %w", what, addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error(err, "http server stopped", "server", what)
		}
	}()
	return nil
}

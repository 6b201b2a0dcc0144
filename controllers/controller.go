package controllers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/certs"
	"github.com/bulkhead-dev/bulkhead/internal/stream"
	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
)

// Options configure the controller; cmd/bulkhead-controller maps its
// flags onto them.
type Options struct {
	StreamAddr  string
	Namespace   string
	MetricsAddr string
	HealthAddr  string
	LeaderElect bool
	// ServeAgentsWhenFollower lets a replica that is not the leader serve
	// agents. By default (with LeaderElect) followers refuse Watch with
	// Unavailable, so agents move on to the leader: acks (status), flow
	// edges and blocked flows then all reach the replica that writes them.
	ServeAgentsWhenFollower bool
	// TLSCertFile and TLSKeyFile supply the serving certificate; empty
	// generates one (kept in Secret bulkhead-controller-tls).
	TLSCertFile, TLSKeyFile, TLSCAFile string
	// ExtraSANs are added to a generated certificate.
	ExtraSANs []string
	// AgentUsers are the usernames agent tokens may carry; empty means
	// system:serviceaccount:<Namespace>:bulkhead-agent; "*" allows any
	// node-bound token.
	AgentUsers []string
	// Debounce coalesces changes before a publish (default 5ms).
	Debounce time.Duration
	// FlowPersistInterval is the least time between two writes of the
	// FlowEdgeSets (default 10s).
	FlowPersistInterval time.Duration
	// Registry for metrics; default controller-runtime's.
	Registry metrics.RegistererGatherer
	// SkipNameValidation lets tests run several managers in one process.
	SkipNameValidation bool
}

// Validate reports every problem with the options.
func (o *Options) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(o.StreamAddr); err != nil {
		errs = append(errs, fmt.Errorf("--stream-addr %q: %w", o.StreamAddr, err))
	}
	if o.Namespace == "" {
		errs = append(errs, errors.New("--namespace must not be empty"))
	}
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file go together"))
	}
	if o.Debounce < 0 {
		errs = append(errs, errors.New("debounce must not be negative"))
	}
	return errors.Join(errs...)
}

// Controller is a configured controller, ready to Start.
type Controller struct {
	Manager ctrl.Manager
	Model   *Model
	Hub     *stream.Hub
	Bundle  *certs.Bundle

	opts    Options
	lis     net.Listener
	log     logr.Logger
	metrics *Metrics
}

// Scheme returns the scheme the controller uses.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := addUpstreamSchemes(s); err != nil {
		panic(err)
	}
	return s
}

// New builds the manager, the TLS material and the stream listener.
func New(ctx context.Context, cfg *rest.Config, o Options) (*Controller, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("controller options: %w", err)
	}
	if o.Debounce == 0 {
		o.Debounce = 5 * time.Millisecond
	}
	if len(o.AgentUsers) == 0 {
		o.AgentUsers = []string{"system:serviceaccount:" + o.Namespace + ":bulkhead-agent"}
	}
	if o.Registry == nil {
		o.Registry = metrics.Registry
	}
	log := logr.FromContextOrDiscard(ctx).WithName("controller")
	scheme := Scheme()
	direct, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating client: %w", err)
	}
	var bundle *certs.Bundle
	if o.TLSCertFile != "" {
		bundle, err = LoadTLS(ctx, direct, o.Namespace, o.TLSCertFile, o.TLSKeyFile, o.TLSCAFile)
	} else {
		bundle, err = EnsureTLS(ctx, direct, o.Namespace, ServingHosts(o.Namespace, o.ExtraSANs))
	}
	if err != nil {
		return nil, err
	}
	mopts := ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress:  o.HealthAddr,
		LeaderElection:          o.LeaderElect,
		LeaderElectionID:        "bulkhead-controller",
		LeaderElectionNamespace: o.Namespace,
		Cache:                   cache.Options{DefaultTransform: cache.TransformStripManagedFields()},
		Logger:                  log,
	}
	if o.MetricsAddr == "" {
		mopts.Metrics.BindAddress = "0"
	}
	if o.SkipNameValidation {
		t := true
		mopts.Controller.SkipNameValidation = &t
	}
	mgr, err := ctrl.NewManager(cfg, mopts)
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}
	m := NewMetrics(o.Registry)
	hub := stream.NewHub()
	if err := o.Registry.Register(NewNodeLagCollector(hub)); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, fmt.Errorf("registering lag metrics: %w", err)
		}
	}
	model := NewModel(hub, o.Debounce, m, log)
	c := &Controller{Manager: mgr, Model: model, Hub: hub, Bundle: bundle, opts: o, log: log, metrics: m}
	upstream, err := DiscoverUpstream(cfg, log)
	if err != nil {
		return nil, err
	}
	if err := mgr.Add(&Feeder{Cache: mgr.GetCache(), Model: model, Upstream: upstream}); err != nil {
		return nil, err
	}
	blocked := &BlockedFlows{Notify: model.notifyRef}
	sr := &StatusReconciler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Model: model, Recorder: mgr.GetEventRecorder("bulkhead-controller"), Metrics: m, Blocked: blocked, Upstream: upstream}
	if err := sr.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("view", func(*http.Request) error {
		if !hub.Ready() {
			return errors.New("initial view not published yet")
		}
		return nil
	}); err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating clientset: %w", err)
	}
	users := o.AgentUsers
	if len(users) == 1 && users[0] == "*" {
		users = nil
	}
	auth := &stream.TokenReviewAuthenticator{Reviews: cs.AuthenticationV1().TokenReviews(), Access: cs.AuthorizationV1().SubjectAccessReviews(), AgentUsers: users, CacheTTL: 30 * time.Second}
	srv := &stream.Server{Hub: hub, Auth: auth, Log: log.WithName("stream"), StatusFunc: c.status,
		OnSession:      func(_ string, d int) { m.ConnectedAgents.Add(float64(d)) },
		OnEndpointHint: model.Hint, FlowsDropped: func(string) { m.FlowsDropped.Inc() }}
	if o.LeaderElect && !o.ServeAgentsWhenFollower {
		elected := mgr.Elected()
		srv.IsLeader = func() bool {
			select {
			case <-elected:
				return true
			default:
				return false
			}
		}
	}
	if err := setupFlows(ctx, mgr, srv, o.FlowPersistInterval, blocked); err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", o.StreamAddr)
	if err != nil {
		return nil, fmt.Errorf("listening on --stream-addr %s: %w", o.StreamAddr, err)
	}
	c.lis = lis
	if err := mgr.Add(&grpcRunnable{lis: lis, bundle: bundle, srv: srv}); err != nil {
		return nil, err
	}
	return c, nil
}

// StreamAddr is the address the stream listens on.
func (c *Controller) StreamAddr() string { return c.lis.Addr().String() }

// Start runs the manager until ctx ends.
func (c *Controller) Start(ctx context.Context) error {
	c.log.Info("starting", "epoch", c.Hub.Epoch(), "stream", c.StreamAddr(), "namespace", c.opts.Namespace)
	return c.Manager.Start(ctx)
}

func (c *Controller) status(context.Context) (*pb.StatusResponse, error) {
	resp := &pb.StatusResponse{Epoch: c.Hub.Epoch()}
	for _, s := range c.Hub.States() {
		ns := &pb.NodeStatus{Node: s.Node, Connected: s.Sessions > 0, Generation: s.Generation, AckedGeneration: s.Acked, Error: s.Err}
		if !s.AckedAt.IsZero() {
			ns.AckedUnixNano = s.AckedAt.UnixNano()
		}
		resp.Nodes = append(resp.Nodes, ns)
	}
	for _, ref := range c.Model.Objects() {
		r := c.Model.Realization(ref)
		os := &pb.ObjectStatus{Kind: ref.Kind, Namespace: ref.Namespace, Name: ref.Name, NodesDesired: int32(len(r.Desired)),
			NodesEnforced: int32(len(r.Enforced)), LaggingNodes: r.Lagging, AcceptError: r.AcceptErr}
		for _, n := range sortedKeys(r.Failed) {
			os.FailedNodes = append(os.FailedNodes, n+": "+r.Failed[n])
		}
		resp.Objects = append(resp.Objects, os)
	}
	return resp, nil
}

type grpcRunnable struct {
	lis    net.Listener
	bundle *certs.Bundle
	srv    *stream.Server
}

func (g *grpcRunnable) NeedLeaderElection() bool { return false }

func (g *grpcRunnable) Start(ctx context.Context) error {
	tc, err := g.bundle.TLSConfig()
	if err != nil {
		return err
	}
	gs := grpc.NewServer(append([]grpc.ServerOption{grpc.Creds(credentials.NewTLS(tc))}, stream.ServerOptions()...)...)
	pb.RegisterPolicyStreamServer(gs, g.srv)
	go func() {
		<-ctx.Done()
		gs.Stop()
	}()
	if err := gs.Serve(g.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serving stream: %w", err)
	}
	return nil
}

// ParseList splits a comma-separated flag value.
func ParseList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

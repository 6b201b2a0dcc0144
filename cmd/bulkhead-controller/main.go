// Command bulkhead-controller watches the cluster, compiles every node's
// policy and streams it to the agents; the leader writes status.
package main

import (
	"context"
	"flag"
	"fmt"
	stdlog "log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/stdr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/bulkhead-dev/bulkhead/controllers"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bulkhead-controller", flag.ContinueOnError)
	var o controllers.Options
	var kubeconfig, sans, agentUsers string
	fs.StringVar(&kubeconfig, "kubeconfig-file", "", "kubeconfig to use (default: in-cluster, or $KUBECONFIG)")
	fs.StringVar(&o.StreamAddr, "stream-addr", ":9443", "listen address of the agent stream (gRPC over TLS)")
	fs.StringVar(&o.Namespace, "namespace", "bulkhead-system", "namespace of the TLS Secret, the CA ConfigMap and the leader lease")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", ":8080", "Prometheus metrics listen address; empty disables")
	fs.StringVar(&o.HealthAddr, "health-addr", ":8081", "/healthz and /readyz listen address; empty disables")
	fs.DurationVar(&o.FlowPersistInterval, "flow-persist-interval", 10*time.Second, "least time between two writes of the learned FlowEdgeSets")
	fs.BoolVar(&o.LeaderElect, "leader-elect", false, "elect a leader to write status (enable with more than one replica)")
	fs.BoolVar(&o.ServeAgentsWhenFollower, "serve-agents-when-follower", false, "with --leader-elect, let a replica that is not the leader serve agents too (their acks and flows then do not reach the leader)")
	fs.StringVar(&o.TLSCertFile, "tls-cert-file", "", "serving certificate (PEM); default: generate one and keep it in Secret bulkhead-controller-tls")
	fs.StringVar(&o.TLSKeyFile, "tls-key-file", "", "serving key (PEM), with --tls-cert-file")
	fs.StringVar(&o.TLSCAFile, "tls-ca-file", "", "CA bundle of a supplied certificate, published in ConfigMap bulkhead-ca")
	fs.StringVar(&sans, "tls-extra-sans", "", "comma-separated extra DNS names or IPs for a generated certificate")
	fs.StringVar(&agentUsers, "agent-users", "", "comma-separated usernames agent tokens may carry (default system:serviceaccount:<namespace>:bulkhead-agent; * for any node-bound token)")
	var so controllers.SuggestOptions
	enableSuggest := fs.Bool("suggest", false, "run the suggestion controller (leader only): FlowEdgeSets become PolicySuggestions")
	fs.DurationVar(&so.StableAfter, "suggest-stable-after", 10*time.Minute, "a suggestion with no new edge for this long becomes Stable")
	fs.DurationVar(&so.Interval, "suggest-interval", 10*time.Second, "time between two suggestion runs")
	verbosity := fs.Int("v", 0, "log verbosity")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.ExtraSANs = controllers.ParseList(sans)
	o.AgentUsers = controllers.ParseList(agentUsers)
	if err := o.Validate(); err != nil {
		return err
	}
	stdr.SetVerbosity(*verbosity)
	log := stdr.New(stdlog.New(os.Stderr, "", stdlog.LstdFlags|stdlog.Lmicroseconds))
	ctrl.SetLogger(log)
	ctx = ctrl.LoggerInto(ctx, log)
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = ctrl.GetConfig()
	}
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	c, err := controllers.New(ctx, cfg, o)
	if err != nil {
		return err
	}
	if *enableSuggest {
		if err := controllers.SetupSuggest(c.Manager, so); err != nil {
			return err
		}
	}
	return c.Start(ctx)
}

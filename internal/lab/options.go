package lab

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// Binary names of the product's daemons.
const (
	ControllerBinary = "bulkhead-controller"
	AgentBinary      = "bulkhead-agent"
	// CAConfigMap is where the controller publishes its CA bundle.
	CAConfigMap = "bulkhead-ca"
)

// Daemon kinds that a lab runs as detached processes of its own binary.
const (
	DaemonControlPlane = "controlplane"
	DaemonProbes       = "probes"
)

// DaemonCommand builds the command that runs a lab daemon for a state
// directory. The CLI re-executes itself ("bulkhead lab serve-<kind>");
// tests re-execute the test binary.
type DaemonCommand func(kind, dir string) (*exec.Cmd, error)

// SelfDaemon runs "<this executable> lab serve-<kind> --state-dir DIR".
func SelfDaemon(kind, dir string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding own executable: %w", err)
	}
	sub := map[string]string{DaemonControlPlane: "serve-controlplane", DaemonProbes: "serve-probes"}[kind]
	if sub == "" {
		return nil, fmt.Errorf("unknown lab daemon %q", kind)
	}
	return exec.Command(exe, "lab", sub, "--state-dir", dir), nil
}

// Options configure Up.
type Options struct {
	StateDir    string
	Name        string // lab name; default "lab"
	Nodes       int    // default 3
	PodsPerNode int    // default set only; default 2
	Backend     string // nftables (default) or ebpf
	Scenario    []string
	// ExtraProbes are served in addition to the declared container
	// ports (TCP and UDP; SCTP needs no server).
	ExtraProbes []Probe
	// NoBulkhead starts no controller and no agents.
	NoBulkhead bool
	// ControllerArgs and AgentArgs are appended to the controller's and
	// every agent's command line (e.g. "--suggest").
	ControllerArgs []string
	AgentArgs      []string
	// DNS adds the kube-dns stand-in (EnableDNS) once the lab is up.
	DNS bool
	// Internet, when not empty, adds the internet stand-in with these
	// hosts (EnableInternet) once the lab is up.
	Internet []netip.Addr
	Daemon   DaemonCommand
	// Progress receives one line per step; nil discards.
	Progress io.Writer
}

func (o *Options) defaults() {
	if o.StateDir == "" {
		o.StateDir = StateDirFromEnv()
	}
	if o.Name == "" {
		o.Name = "lab"
	}
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.PodsPerNode == 0 {
		o.PodsPerNode = 2
	}
	if o.Backend == "" {
		o.Backend = "nftables"
	}
	if o.Daemon == nil {
		o.Daemon = SelfDaemon
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

// Validate reports every problem with the options at once.
func (o *Options) Validate() error {
	var errs []error
	if err := ValidateName(o.Name); err != nil {
		errs = append(errs, err)
	}
	if o.Nodes < 1 || o.Nodes > MaxNodes {
		errs = append(errs, fmt.Errorf("--nodes: %d is out of range 1..%d", o.Nodes, MaxNodes))
	}
	if o.PodsPerNode < 1 || o.PodsPerNode > MaxPodsPerNode {
		errs = append(errs, fmt.Errorf("--pods-per-node: %d is out of range 1..%d", o.PodsPerNode, MaxPodsPerNode))
	}
	if o.Backend != "nftables" && o.Backend != "ebpf" {
		errs = append(errs, fmt.Errorf("--backend: %q is not nftables or ebpf", o.Backend))
	}
	for _, h := range o.Internet {
		if !InternetPrefix.Contains(h) || h == InternetPrefix.Addr() {
			errs = append(errs, fmt.Errorf("--internet: %s is not a host address in %s", h, InternetPrefix))
		}
	}
	if !filepath.IsAbs(o.StateDir) {
		errs = append(errs, fmt.Errorf("--state-dir: %q must be an absolute path", o.StateDir))
	}
	return errors.Join(errs...)
}

// ErrAlreadyUp is returned by Up when the state directory holds a lab
// whose processes still run.
var ErrAlreadyUp = errors.New("a lab is already up")

// ProbeOptions tune ProbeMatrix.
type ProbeOptions struct {
	// Timeout bounds one probe: TCP connect plus one request and reply,
	// a UDP request and reply, or an SCTP INIT's arrival. Default 600ms.
	Timeout time.Duration
	// Workers bounds concurrent probes. Default 32.
	Workers int
	// IPv6 probes the pods' IPv6 addresses instead of their IPv4 ones.
	IPv6 bool
	// Served are the TCP/UDP ports a probe server already listens on in
	// every pod namespace; ProbeMatrix listens on the others itself for
	// the duration of the run.
	Served []Probe
}

// RESTConfig loads DIR/kubeconfig.
func RESTConfig(dir string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", Layout{dir}.Kubeconfig())
	if err != nil {
		return nil, fmt.Errorf("loading lab kubeconfig: %w", err)
	}
	return cfg, nil
}

// Client returns a controller-runtime client for the lab with
// testenv.Scheme() (built-in types and Bulkhead's API).
func Client(dir string) (client.Client, error) {
	cfg, err := RESTConfig(dir)
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", cfg.Host, err)
	}
	return c, nil
}

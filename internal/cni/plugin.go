package cni

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/dataplane/agent/endpointapi"
)

// PluginType is the plugin's binary name, the "type" of its entry in a
// network configuration list.
const PluginType = "bulkhead-cni"

// DefaultSocket is the endpoint socket of an agent with the default
// --state-dir.
const DefaultSocket = "/var/lib/bulkhead/" + endpointapi.SocketName

// SupportedVersions are the CNI specification versions the plugin speaks.
var SupportedVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// Error codes of the CNI specification used here.
const (
	CodeIncompatibleVersion = 1
	CodeInvalidEnv          = 4
	CodeIOFailure           = 5
	CodeDecodeFailure       = 6
	CodeInvalidConfig       = 7
	CodeTryAgainLater       = 11
	CodeNotAvailable        = 50
)

// Error is a CNI error result; the binary prints it on stdout as JSON and
// exits non-zero.
type Error struct {
	CNIVersion string `json:"cniVersion"`
	Code       int    `json:"code"`
	Msg        string `json:"msg"`
	Details    string `json:"details,omitempty"`
}

func (e *Error) Error() string {
	if e.Details == "" {
		return e.Msg
	}
	return e.Msg + ": " + e.Details
}

// Config is the plugin's network configuration, as the runtime passes it
// on stdin.
type Config struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Type       string `json:"type"`
	// Socket is the agent's endpoint socket; empty means DefaultSocket.
	Socket string `json:"socket,omitempty"`
	// TimeoutSeconds bounds the wait for the agent; 0 means the agent's
	// default (endpointapi.DefaultTimeout).
	TimeoutSeconds float64         `json:"timeoutSeconds,omitempty"`
	PrevResult     json.RawMessage `json:"prevResult,omitempty"`
}

// Env is the CNI_* environment of one invocation.
type Env struct {
	Command     string // CNI_COMMAND
	ContainerID string // CNI_CONTAINERID
	Netns       string // CNI_NETNS
	IfName      string // CNI_IFNAME
	Args        string // CNI_ARGS
}

// EnvFrom reads the invocation's environment through getenv.
func EnvFrom(getenv func(string) string) Env {
	return Env{
		Command: getenv("CNI_COMMAND"), ContainerID: getenv("CNI_CONTAINERID"),
		Netns: getenv("CNI_NETNS"), IfName: getenv("CNI_IFNAME"), Args: getenv("CNI_ARGS"),
	}
}

// Run executes one invocation: it reads the configuration from stdin and
// writes the result to stdout. A returned *Error is the CNI error result.
func Run(ctx context.Context, env Env, stdin io.Reader, stdout io.Writer) error {
	if env.Command == "VERSION" {
		return json.NewEncoder(stdout).Encode(map[string]any{"cniVersion": latest(), "supportedVersions": SupportedVersions})
	}
	raw, err := io.ReadAll(io.LimitReader(stdin, 4<<20))
	if env.Command == "DEL" || env.Command == "GC" {
		// Nothing to release, and a DEL must not fail on what an ADD
		// may never have seen.
		return nil
	}
	if err != nil {
		return &Error{CNIVersion: latest(), Code: CodeIOFailure, Msg: "reading the network configuration from stdin", Details: err.Error()}
	}
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return &Error{CNIVersion: latest(), Code: CodeDecodeFailure, Msg: "decoding the network configuration", Details: err.Error()}
	}
	if cfg.CNIVersion == "" {
		cfg.CNIVersion = latest()
		return cfg.fail(CodeInvalidConfig, "network configuration: cniVersion is missing", "")
	}
	if !slices.Contains(SupportedVersions, cfg.CNIVersion) {
		v := cfg.CNIVersion
		cfg.CNIVersion = latest()
		return cfg.fail(CodeIncompatibleVersion, fmt.Sprintf("network configuration: cniVersion %q is not supported", v), "supported: "+strings.Join(SupportedVersions, ", "))
	}
	if cfg.TimeoutSeconds < 0 {
		return cfg.fail(CodeInvalidConfig, fmt.Sprintf("network configuration %q: timeoutSeconds %v is negative", cfg.Name, cfg.TimeoutSeconds), "")
	}
	if cfg.Socket == "" {
		cfg.Socket = DefaultSocket
	}
	switch env.Command {
	case "ADD", "CHECK":
		return cfg.admit(ctx, env, stdout)
	case "STATUS":
		return cfg.status(ctx)
	case "":
		return cfg.fail(CodeInvalidEnv, "CNI_COMMAND is not set", "")
	default:
		return cfg.fail(CodeInvalidEnv, fmt.Sprintf("CNI_COMMAND %q is not a CNI command", env.Command), "")
	}
}

func latest() string { return SupportedVersions[len(SupportedVersions)-1] }

func (c *Config) fail(code int, msg, details string) *Error {
	return &Error{CNIVersion: c.CNIVersion, Code: code, Msg: msg, Details: details}
}

// prevResult is the part of a CNI result the plugin reads.
type prevResult struct {
	IPs []struct {
		Address string `json:"address"`
	} `json:"ips"`
}

func (c *Config) admit(ctx context.Context, env Env, stdout io.Writer) error {
	ns, name, err := podOf(env.Args)
	if err != nil {
		return c.fail(CodeInvalidEnv, "CNI_ARGS: "+err.Error(), "")
	}
	if len(c.PrevResult) == 0 {
		return c.fail(CodeInvalidConfig, fmt.Sprintf("network configuration %q: prevResult is missing (%s must follow the plugins that assign the pod's addresses)", c.Name, PluginType), "")
	}
	var pr prevResult
	if err := json.Unmarshal(c.PrevResult, &pr); err != nil {
		return c.fail(CodeDecodeFailure, "decoding prevResult", err.Error())
	}
	var ips []string
	for i, a := range pr.IPs {
		p, err := netip.ParsePrefix(a.Address)
		if err != nil {
			return c.fail(CodeInvalidConfig, fmt.Sprintf("prevResult.ips[%d].address %q is not an address with a prefix length", i, a.Address), "")
		}
		ips = append(ips, p.Addr().String())
	}
	if len(ips) == 0 {
		return c.fail(CodeInvalidConfig, "prevResult.ips is empty: the pod has no address to admit", "")
	}
	_, err = endpointapi.Admit(ctx, c.Socket, endpointapi.Request{Namespace: ns, Name: name, IPs: ips, TimeoutSeconds: c.TimeoutSeconds})
	if err != nil {
		// Refused, timed out or unreachable: the pod's network must not
		// come up. The runtime retries the sandbox.
		return c.fail(CodeTryAgainLater, fmt.Sprintf("pod %s/%s is not admitted by the bulkhead agent (its network stays down)", ns, name), err.Error())
	}
	if env.Command == "CHECK" {
		return nil
	}
	out := map[string]json.RawMessage{}
	if err := json.Unmarshal(c.PrevResult, &out); err != nil {
		return c.fail(CodeDecodeFailure, "decoding prevResult", err.Error())
	}
	v, _ := json.Marshal(c.CNIVersion)
	out["cniVersion"] = v
	return json.NewEncoder(stdout).Encode(out)
}

// status reports whether the agent's socket accepts connections.
func (c *Config) status(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := endpointapi.Dial(ctx, c.Socket)
	if err != nil {
		return c.fail(CodeNotAvailable, "the bulkhead agent's endpoint socket does not answer", err.Error())
	}
	return conn.Close()
}

// podOf reads K8S_POD_NAMESPACE and K8S_POD_NAME from CNI_ARGS
// ("KEY=VALUE;KEY=VALUE").
func podOf(args string) (string, string, error) {
	var ns, name string
	for _, kv := range strings.Split(args, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			if strings.TrimSpace(kv) != "" {
				return "", "", fmt.Errorf("%q is not KEY=VALUE", kv)
			}
			continue
		}
		switch k {
		case "K8S_POD_NAMESPACE":
			ns = v
		case "K8S_POD_NAME":
			name = v
		}
	}
	var missing []string
	if ns == "" {
		missing = append(missing, "K8S_POD_NAMESPACE")
	}
	if name == "" {
		missing = append(missing, "K8S_POD_NAME")
	}
	if len(missing) > 0 {
		return "", "", fmt.Errorf("%s missing (the runtime passes them for Kubernetes pods)", strings.Join(missing, " and "))
	}
	return ns, name, nil
}

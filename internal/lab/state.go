package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// DefaultStateDir is where a lab keeps its state unless --state-dir or
// BULKHEAD_LAB_DIR says otherwise.
const DefaultStateDir = "/run/bulkhead/lab"

// StateDirFromEnv returns BULKHEAD_LAB_DIR, or DefaultStateDir.
func StateDirFromEnv() string {
	if d := os.Getenv("BULKHEAD_LAB_DIR"); d != "" {
		return d
	}
	return DefaultStateDir
}

// State is everything a lab records in DIR/state.json. Down needs only
// this file (and survives its absence).
type State struct {
	Plan *Plan `json:"plan"`
	// Backend is the agent backend, nftables or ebpf.
	Backend string `json:"backend"`
	// Processes are the daemons the lab started, by role.
	Processes map[string]Proc `json:"processes"`
	// ServedPorts are the TCP and UDP ports the probe server listens on
	// in every pod namespace.
	ServedPorts []Probe `json:"servedPorts,omitempty"`
	// Enforcement is "" when the controller and agents run, else why not.
	NoEnforcement string `json:"noEnforcement,omitempty"`
	// StreamAddr is the controller's agent stream address.
	StreamAddr string `json:"streamAddr,omitempty"`
	// Controller and Agent are the binaries used, and how they were found.
	Controller string `json:"controller,omitempty"`
	Agent      string `json:"agent,omitempty"`
	// ControllerArgs and AgentArgs are the extra command-line arguments
	// of the controller and the agents (Options).
	ControllerArgs []string `json:"controllerArgs,omitempty"`
	AgentArgs      []string `json:"agentArgs,omitempty"`
	// Internet is the internet stand-in, once EnableInternet made it.
	Internet *InternetPlan `json:"internet,omitempty"`
}

// Proc is one recorded process. StartTime (clock ticks since boot, from
// /proc/PID/stat) guards against killing a recycled PID.
type Proc struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"startTime"`
	Log       string `json:"log,omitempty"`
	// Health is the base URL of its /healthz and /readyz, if any.
	Health string   `json:"health,omitempty"`
	Args   []string `json:"args,omitempty"`
}

// Layout names the files of a state directory.
type Layout struct{ Dir string }

func (l Layout) State() string      { return filepath.Join(l.Dir, "state.json") }
func (l Layout) Kubeconfig() string { return filepath.Join(l.Dir, "kubeconfig") }
func (l Layout) Logs() string       { return filepath.Join(l.Dir, "logs") }
func (l Layout) Log(name string) string {
	return filepath.Join(l.Dir, "logs", name+".log")
}
func (l Layout) Tokens() string                { return filepath.Join(l.Dir, "tokens") }
func (l Layout) Token(node string) string      { return filepath.Join(l.Dir, "tokens", node) }
func (l Layout) CA() string                    { return filepath.Join(l.Dir, "ca.crt") }
func (l Layout) Bin() string                   { return filepath.Join(l.Dir, "bin") }
func (l Layout) Tmp() string                   { return filepath.Join(l.Dir, "tmp") }
func (l Layout) AgentState(node string) string { return filepath.Join(l.Dir, "agents", node) }
func (l Layout) ControlPlaneChildren() string {
	return filepath.Join(l.Dir, "controlplane.children.json")
}
func (l Layout) ProbesReady() string { return filepath.Join(l.Dir, "probes.ready") }

// LoadState reads DIR/state.json. A missing file gives an error wrapping
// os.ErrNotExist.
func LoadState(dir string) (*State, error) {
	b, err := os.ReadFile(Layout{dir}.State())
	if err != nil {
		return nil, fmt.Errorf("reading lab state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("reading lab state %s: %w", Layout{dir}.State(), err)
	}
	if s.Plan == nil {
		return nil, fmt.Errorf("reading lab state %s: no plan", Layout{dir}.State())
	}
	if s.Processes == nil {
		s.Processes = map[string]Proc{}
	}
	return &s, nil
}

// Save writes the state atomically.
func (s *State) Save(dir string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding lab state: %w", err)
	}
	return writeFileAtomic(Layout{dir}.State(), b, 0o600)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(fmt.Errorf("renaming %s: %w", tmp, err), os.Remove(tmp))
	}
	return nil
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

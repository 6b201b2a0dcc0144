package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// Up brings a lab up: network, control plane, lab kubelet, probe server
// and, when they exist, the controller and one agent per node. On failure
// it tears down what it created. It returns the saved state.
func Up(ctx context.Context, o Options) (st *State, err error) {
	o.defaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	progress := func(s string) { fmt.Fprintf(o.Progress, "lab: %s\n", s) }
	began := time.Now()
	dir := o.StateDir
	l := Layout{dir}

	if old, err := LoadState(dir); err == nil {
		for role, p := range old.Processes {
			if p.Alive() {
				return nil, fmt.Errorf("%w in %s (%s is running as pid %d); run `bulkhead lab down` first", ErrAlreadyUp, dir, role, p.PID)
			}
		}
		progress("found the state of a lab that is no longer running; cleaning it up first")
		if err := Down(old.Plan.Name, dir, o.Progress); err != nil {
			return nil, err
		}
	}
	if left, _ := LabNetns(o.Name); len(left) > 0 {
		progress(fmt.Sprintf("removing %d leftover %s* namespaces", len(left), NetnsPrefix(o.Name)))
		if err := Down(o.Name, dir, o.Progress); err != nil {
			return nil, err
		}
	}

	// The plan.
	var nss []NamespacePlan
	var pods []PodInput
	if len(o.Scenario) > 0 {
		sc, err := LoadScenario(o.Scenario...)
		if err != nil {
			return nil, err
		}
		nss, pods = sc.Namespaces, sc.Pods
		if len(pods) == 0 && len(nss) == 0 {
			return nil, fmt.Errorf("scenario %s declares no namespaces and no pods", strings.Join(o.Scenario, ", "))
		}
		if len(sc.Others) > 0 {
			progress(fmt.Sprintf("scenario: %d other objects (policies, zones) are not applied by up; use `bulkhead lab apply -f`", len(sc.Others)))
		}
	} else {
		nss, pods = DefaultSet(o.Nodes, o.PodsPerNode)
	}
	plan, err := NewPlan(o.Name, o.Nodes, nss, pods)
	if err != nil {
		return nil, err
	}
	if m := ControlPlaneAssetsMissing(); m != "" {
		repo := RepoRoot()
		if repo == "" {
			return nil, fmt.Errorf("control plane: %s, and no source tree to build it (set BULKHEAD_REPO)", m)
		}
		progress(fmt.Sprintf("control plane: %s; building it with hack/controlplane.sh (about 12 minutes on a fresh machine)", m))
		cmd := exec.CommandContext(ctx, filepath.Join(repo, "hack", "controlplane.sh"))
		cmd.Dir, cmd.Stdout, cmd.Stderr = repo, o.Progress, o.Progress
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("building the control plane: %w", err)
		}
	}

	for _, d := range []string{dir, l.Logs(), l.Tmp()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("creating state directory: %w", err)
		}
	}
	st = &State{Plan: plan, Backend: o.Backend, Processes: map[string]Proc{},
		ControllerArgs: o.ControllerArgs, AgentArgs: o.AgentArgs}
	served := map[Probe]bool{}
	for _, p := range append(plan.DeclaredProbes(), o.ExtraProbes...) {
		if p.Protocol != "SCTP" && !served[p] {
			served[p] = true
			st.ServedPorts = append(st.ServedPorts, p)
		}
	}
	SortProbes(st.ServedPorts)
	if err := st.Save(dir); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			progress("bring-up failed; tearing down")
			if derr := Down(o.Name, dir, o.Progress); derr != nil {
				err = errors.Join(err, fmt.Errorf("tearing down: %w", derr))
			}
		}
	}()

	progress(fmt.Sprintf("network: %d nodes, %d pods (namespaces %s*)", len(plan.Nodes), len(plan.Pods), NetnsPrefix(o.Name)))
	if err := BuildNetwork(ctx, plan, progress); err != nil {
		return nil, err
	}

	progress("control plane: starting kube-apiserver and etcd from " + testenv.AssetsDir())
	cmd, err := o.Daemon(DaemonControlPlane, dir)
	if err != nil {
		return nil, err
	}
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, "TMPDIR="+l.Tmp())
	p, err := startDetached(cmd, l.Log("controlplane"))
	if err != nil {
		return nil, err
	}
	st.Processes["controlplane"] = p
	if err := st.Save(dir); err != nil {
		return nil, err
	}
	cfg, err := waitAPIServer(ctx, dir, p, 120*time.Second)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", cfg.Host, err)
	}
	progress("control plane: ready at " + cfg.Host)

	progress("kubelet: registering namespaces, nodes and pods")
	if err := Register(ctx, cs, plan, progress); err != nil {
		return nil, err
	}

	progress("probe server: listening in every pod namespace")
	cmd, err = o.Daemon(DaemonProbes, dir)
	if err != nil {
		return nil, err
	}
	p, err = startDetached(cmd, l.Log("probes"))
	if err != nil {
		return nil, err
	}
	st.Processes["probes"] = p
	if err := st.Save(dir); err != nil {
		return nil, err
	}
	if err := waitFile(ctx, l.ProbesReady(), p, 60*time.Second); err != nil {
		return nil, fmt.Errorf("probe server: %w", err)
	}

	if o.NoBulkhead {
		st.NoEnforcement = "started with --no-bulkhead"
	} else {
		bins := FindBinaries(ctx, RepoRoot(), l.Bin(), progress)
		if bins.Missing != "" {
			st.NoEnforcement = bins.Missing
		} else {
			progress(fmt.Sprintf("bulkhead: using %s and %s (%s)", bins.Controller, bins.Agent, bins.How))
			st.Controller, st.Agent = bins.Controller, bins.Agent
			if err := startBulkhead(ctx, cs, st, dir, bins, progress); err != nil {
				return nil, err
			}
		}
	}
	if st.NoEnforcement != "" {
		progress("no enforcement: " + st.NoEnforcement)
	}
	if err := st.Save(dir); err != nil {
		return nil, err
	}
	if o.DNS {
		progress(fmt.Sprintf("dns: kube-system/kube-dns-0 behind Service kube-system/kube-dns (%s)", KubeDNSIP))
		if err := EnableDNS(ctx, dir, nil); err != nil {
			return nil, err
		}
	}
	if len(o.Internet) > 0 {
		progress(fmt.Sprintf("internet: %s with hosts %v (routed from every node via %s)", InternetNetns(o.Name), o.Internet, InternetFabricIP))
		if _, err := EnableInternet(ctx, dir, o.Internet); err != nil {
			return nil, err
		}
	}
	if st, err = LoadState(dir); err != nil {
		return nil, err
	}
	progress(fmt.Sprintf("up in %s: %d nodes, %d pods; kubeconfig %s", time.Since(began).Round(100*time.Millisecond), len(plan.Nodes), len(plan.Pods), l.Kubeconfig()))
	return st, nil
}

func waitAPIServer(ctx context.Context, dir string, p Proc, timeout time.Duration) (*rest.Config, error) {
	if err := waitFile(ctx, Layout{dir}.Kubeconfig(), p, timeout); err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	cfg, err := RESTConfig(dir)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", cfg.Host, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && strings.TrimSpace(string(body)) == "ok" {
			return cfg, nil
		}
		if !p.Alive() {
			return nil, fmt.Errorf("control plane exited; last lines of %s:\n%s", p.Log, tailFile(p.Log, 20))
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("API server at %s not ready within %s: %v", cfg.Host, timeout, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func waitFile(ctx context.Context, path string, p Proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if !p.Alive() {
			return fmt.Errorf("process %d exited before writing %s; last lines of %s:\n%s", p.PID, path, p.Log, tailFile(p.Log, 20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not written within %s; last lines of %s:\n%s", path, timeout, p.Log, tailFile(p.Log, 20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stopOrder stops agents first, then the controller, the probe server and
// the control plane last.
func stopOrder(procs map[string]Proc) []string {
	var roles []string
	for r := range procs {
		roles = append(roles, r)
	}
	rank := func(r string) int {
		switch {
		case strings.HasPrefix(r, "agent-"):
			return 0
		case r == "controller":
			return 1
		case r == "probes":
			return 2
		}
		return 3
	}
	sort.Slice(roles, func(i, j int) bool {
		if rank(roles[i]) != rank(roles[j]) {
			return rank(roles[i]) < rank(roles[j])
		}
		return roles[i] < roles[j]
	})
	return roles
}

// stateEntries are the files and directories Down removes from a state
// directory; the directory itself goes only if it is then empty.
var stateEntries = []string{"state.json", "state.json.tmp", "kubeconfig", "kubeconfig.tmp", "logs", "tokens", "ca.crt", "bin", "tmp", "agents", "controlplane.children.json", "probes.ready"}

// Down removes a lab: the recorded processes (by PID, checked against
// their recorded start time), the control plane's children, every network
// namespace named bh-<lab>-* (recorded or not), BPF pins named after the
// lab's nodes, and the state directory's contents. It works without a
// state file (after a crash) and is idempotent.
func Down(lab, dir string, progressW io.Writer) error {
	if progressW == nil {
		progressW = io.Discard
	}
	progress := func(s string) { fmt.Fprintf(progressW, "lab: %s\n", s) }
	var errs []error
	st, err := LoadState(dir)
	var known []string
	if err == nil {
		lab = st.Plan.Name
		known = st.Plan.Netns()
		for _, role := range stopOrder(st.Processes) {
			p := st.Processes[role]
			if p.Alive() {
				progress(fmt.Sprintf("stopping %s (pid %d)", role, p.PID))
			}
			if err := p.Stop(20 * time.Second); err != nil {
				errs = append(errs, fmt.Errorf("stopping %s: %w", role, err))
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := ValidateName(lab); err != nil {
		return errors.Join(append(errs, err)...)
	}
	if b, err := os.ReadFile(Layout{dir}.ControlPlaneChildren()); err == nil {
		var children []Proc
		if err := jsonUnmarshal(b, &children); err == nil {
			// kube-apiserver before etcd: etcd lingers while clients
			// are connected. Their data is disposable, so the grace is
			// short.
			sort.SliceStable(children, func(i, j int) bool {
				return strings.Contains(firstArg(children[i].Args), "apiserver") && !strings.Contains(firstArg(children[j].Args), "apiserver")
			})
			for _, c := range children {
				if c.Alive() {
					progress(fmt.Sprintf("stopping control-plane child %s (pid %d)", filepath.Base(firstArg(c.Args)), c.PID))
				}
				if err := c.Stop(3 * time.Second); err != nil {
					errs = append(errs, fmt.Errorf("stopping control-plane child: %w", err))
				}
			}
		}
	}
	ns, _ := LabNetns(lab)
	if len(ns) > 0 {
		progress(fmt.Sprintf("deleting %d network namespaces %s*", len(ns), NetnsPrefix(lab)))
	}
	if err := TeardownNetwork(lab, known); err != nil {
		errs = append(errs, err)
	}
	if err := removePins(lab); err != nil {
		errs = append(errs, err)
	}
	for _, e := range stateEntries {
		if err := os.RemoveAll(filepath.Join(dir, e)); err != nil {
			errs = append(errs, fmt.Errorf("removing state: %w", err))
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		progress(fmt.Sprintf("left %s in place: %v", dir, err))
	}
	if len(errs) == 0 {
		progress("down")
	}
	return errors.Join(errs...)
}

func firstArg(a []string) string {
	if len(a) == 0 {
		return "?"
	}
	return a[0]
}

// BPFRoot is where BPF objects are pinned.
const BPFRoot = "/sys/fs/bpf"

// removePins removes pinned BPF objects and directories under BPFRoot (up
// to three levels deep) whose names start with the lab's prefix, which
// every node name (and so every per-node pin directory) carries.
func removePins(lab string) error {
	var errs []error
	var walk func(d string, depth int)
	walk = func(d string, depth int) {
		ents, err := os.ReadDir(d)
		if err != nil {
			return
		}
		for _, e := range ents {
			p := filepath.Join(d, e.Name())
			if strings.HasPrefix(e.Name(), NetnsPrefix(lab)) {
				if err := os.RemoveAll(p); err != nil {
					errs = append(errs, fmt.Errorf("removing pin %s: %w", p, err))
				}
				continue
			}
			if e.IsDir() && depth < 3 {
				walk(p, depth+1)
			}
		}
	}
	walk(BPFRoot, 1)
	// The agents' shared pin root goes with its last pin directory, as
	// the backend's Uninstall does; a root still in use is not empty.
	root := filepath.Join(BPFRoot, "bulkhead")
	if err := os.Remove(root); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		errs = append(errs, fmt.Errorf("removing pin root %s: %w", root, err))
	}
	return errors.Join(errs...)
}

// LabPins lists pins under BPFRoot named after the lab, for checks.
func LabPins(lab string) []string {
	var out []string
	var walk func(d string, depth int)
	walk = func(d string, depth int) {
		ents, err := os.ReadDir(d)
		if err != nil {
			return
		}
		for _, e := range ents {
			p := filepath.Join(d, e.Name())
			if strings.HasPrefix(e.Name(), NetnsPrefix(lab)) {
				out = append(out, p)
			} else if e.IsDir() && depth < 3 {
				walk(p, depth+1)
			}
		}
	}
	walk(BPFRoot, 1)
	return out
}

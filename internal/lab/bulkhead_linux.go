package lab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// RepoRoot finds the Bulkhead source tree: $BULKHEAD_REPO, then the first
// parent of the working directory or of the executable whose go.mod
// declares module github.com/bulkhead-dev/bulkhead, then the tree this
// package was compiled from. It returns "" when none is found.
func RepoRoot() string {
	var starts []string
	if d := os.Getenv("BULKHEAD_REPO"); d != "" {
		starts = append(starts, d)
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	starts = append(starts, testenv.RepoRoot())
	for _, s := range starts {
		for d := s; ; d = filepath.Dir(d) {
			if isRepo(d) {
				return d
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return ""
}

func isRepo(d string) bool {
	f, err := os.Open(filepath.Join(d, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "module github.com/bulkhead-dev/bulkhead" {
			return true
		}
	}
	return false
}

// Binaries are the controller and agent executables a lab runs.
type Binaries struct {
	Controller, Agent string
	// How says where they came from, for the user.
	How string
	// Missing is why there are none; then the lab runs without
	// enforcement.
	Missing string
}

// FindBinaries looks for bulkhead-controller and bulkhead-agent next to
// the running executable, then on PATH, then builds them from the
// repository into binDir with `go build -trimpath`. When the repository
// has no such commands yet, Missing says so.
func FindBinaries(ctx context.Context, repo, binDir string, progress func(string)) Binaries {
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		c, a := filepath.Join(dir, ControllerBinary), filepath.Join(dir, AgentBinary)
		if isExec(c) && isExec(a) {
			return Binaries{Controller: c, Agent: a, How: "next to " + exe}
		}
	}
	c, cerr := exec.LookPath(ControllerBinary)
	a, aerr := exec.LookPath(AgentBinary)
	if cerr == nil && aerr == nil {
		return Binaries{Controller: c, Agent: a, How: "from PATH"}
	}
	if repo == "" {
		return Binaries{Missing: "bulkhead-controller and bulkhead-agent are neither next to this executable nor on PATH, and no source tree was found to build them (set BULKHEAD_REPO)"}
	}
	var absent []string
	for _, b := range []string{ControllerBinary, AgentBinary} {
		if st, err := os.Stat(filepath.Join(repo, "cmd", b)); err != nil || !st.IsDir() {
			absent = append(absent, "cmd/"+b)
		}
	}
	if len(absent) > 0 {
		return Binaries{Missing: fmt.Sprintf("the repository %s has no %s yet", repo, strings.Join(absent, " or "))}
	}
	progress(fmt.Sprintf("building %s and %s from %s (go build -trimpath)", ControllerBinary, AgentBinary, repo))
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return Binaries{Missing: fmt.Sprintf("creating %s: %v", binDir, err)}
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", binDir+"/", "./cmd/"+ControllerBinary, "./cmd/"+AgentBinary)
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{Missing: fmt.Sprintf("building them from %s failed: %v\n%s", repo, err, out)}
	}
	return Binaries{
		Controller: filepath.Join(binDir, ControllerBinary), Agent: filepath.Join(binDir, AgentBinary),
		How: "built from " + repo + " into " + binDir,
	}
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// freeAddrs returns n distinct, currently unused addresses on 127.0.0.1.
func freeAddrs(n int) ([]string, error) {
	// Ports come from below the kernel's ephemeral range: a port in it can
	// be taken as the source port of any outgoing connection between the
	// choice and the daemon's bind, which then fails with EADDRINUSE.
	lo, hi := listenPortRange()
	// Hold every listener until all ports are chosen so none repeats.
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []string
	for tries := 0; len(out) < n; tries++ {
		if tries > 1000 {
			return nil, fmt.Errorf("picking a free port in %d-%d: none free after %d tries", lo, hi, tries)
		}
		port := lo + rand.IntN(hi-lo+1)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		ls = append(ls, l)
		out = append(out, "127.0.0.1:"+strconv.Itoa(port))
	}
	return out, nil
}

// listenPortRange is the range freeAddrs picks from: the 10,000 ports
// below net.ipv4.ip_local_port_range (default 32768-60999), or 20000-29999
// when that cannot be read or leaves too little room.
func listenPortRange() (int, int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if low, err := strconv.Atoi(f[0]); err == nil && low > 11024 {
				return low - 10000, low - 1
			}
		}
	}
	return 20000, 29999
}

// startBulkhead starts the controller, waits for its CA ConfigMap, and
// starts one agent per node. It records every process in st as it goes,
// so Down can stop what started even if a later step fails.
func startBulkhead(ctx context.Context, cs kubernetes.Interface, st *State, dir string, bins Binaries, progress func(string)) error {
	l := Layout{dir}
	if err := EnsureAgentIdentity(ctx, cs, st.Plan, dir); err != nil {
		return err
	}
	addrs, err := freeAddrs(3)
	if err != nil {
		return err
	}
	st.StreamAddr = addrs[0]
	args := []string{
		"--kubeconfig-file", l.Kubeconfig(),
		"--stream-addr", addrs[0],
		"--namespace", SystemNamespace,
		"--metrics-addr", addrs[1],
		"--health-addr", addrs[2],
	}
	args = append(args, st.ControllerArgs...)
	progress(fmt.Sprintf("starting %s (stream %s, log %s)", ControllerBinary, addrs[0], l.Log("controller")))
	p, err := startDetached(exec.Command(bins.Controller, args...), l.Log("controller"))
	if err != nil {
		return err
	}
	p.Health = "http://" + addrs[2]
	st.Processes["controller"] = p
	if err := st.Save(dir); err != nil {
		return err
	}
	progress("waiting for the controller's CA bundle (ConfigMap " + SystemNamespace + "/" + CAConfigMap + ")")
	deadline := time.Now().Add(90 * time.Second)
	for {
		cm, err := cs.CoreV1().ConfigMaps(SystemNamespace).Get(ctx, CAConfigMap, metav1.GetOptions{})
		if err == nil && cm.Data["ca.crt"] != "" {
			if err := writeFileAtomic(l.CA(), []byte(cm.Data["ca.crt"]), 0o644); err != nil {
				return err
			}
			break
		}
		if err != nil && !apierrors.IsNotFound(err) && ctx.Err() != nil {
			return ctx.Err()
		}
		if !p.Alive() {
			return fmt.Errorf("%s exited; last lines of %s:\n%s", ControllerBinary, p.Log, tailFile(p.Log, 20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s published no ConfigMap %s/%s with ca.crt within 90s; see %s", ControllerBinary, SystemNamespace, CAConfigMap, p.Log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	var health []string
	for _, n := range st.Plan.Nodes {
		aa, err := freeAddrs(2)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(l.AgentState(n.Name), 0o700); err != nil {
			return fmt.Errorf("creating agent state dir: %w", err)
		}
		args := []string{
			"--node", n.Name,
			"--controller", st.StreamAddr,
			"--ca-file", l.CA(),
			"--token-file", l.Token(n.Name),
			"--netns", "/run/netns/" + n.Name,
			"--backend", st.Backend,
			"--state-dir", l.AgentState(n.Name),
			"--metrics-addr", aa[0],
			"--health-addr", aa[1],
		}
		if st.Backend == "ebpf" {
			// The lab's service proxy DNATs ClusterIPs in the node's
			// netfilter, after the eBPF from_pod hook: egress to them is
			// judged after DNAT (docs/dataplane-ebpf.md#services). eth0
			// is the node's link to the fabric.
			args = append(args, "--service-cidr", ServiceCIDR, "--service-uplink", "eth0")
		}
		args = append(args, st.AgentArgs...)
		progress(fmt.Sprintf("starting %s for %s (backend %s)", AgentBinary, n.Name, st.Backend))
		p, err := startDetached(exec.Command(bins.Agent, args...), l.Log("agent-"+n.Name))
		if err != nil {
			return err
		}
		p.Health = "http://" + aa[1]
		st.Processes["agent-"+n.Name] = p
		health = append(health, aa[1])
		if err := st.Save(dir); err != nil {
			return err
		}
	}
	progress("waiting for every agent to enforce its first snapshot (/readyz)")
	for i, n := range st.Plan.Nodes {
		p := st.Processes["agent-"+n.Name]
		if err := waitHTTP(ctx, "http://"+health[i]+"/readyz", p, 60*time.Second); err != nil {
			return fmt.Errorf("agent for %s: %w", n.Name, err)
		}
	}
	return nil
}

// waitHTTP waits until url answers 200 OK while p stays alive.
func waitHTTP(ctx context.Context, url string, p Proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if !p.Alive() {
			return fmt.Errorf("process exited; last lines of %s:\n%s", p.Log, tailFile(p.Log, 20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %s; last lines of %s:\n%s", url, timeout, p.Log, tailFile(p.Log, 20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

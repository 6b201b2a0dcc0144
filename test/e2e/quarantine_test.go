package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	crclient "sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/lab"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
	"github.com/bulkhead-dev/bulkhead/test/bench"
)

// quarantineScenario places, on two nodes (round robin in file order):
// app/victim on node 1, app/client on node 2, ops/ir (the forensics
// host) on node 1 and app/other on node 2. No policy applies at first, so
// everything is allowed.
const quarantineScenario = `apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops, labels: {team: sec}}
---
apiVersion: v1
kind: Pod
metadata: {name: victim, namespace: app, labels: {app: victim}}
spec:
  containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 22}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: app, labels: {app: client}}
spec:
  containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 22}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: ir, namespace: ops, labels: {role: ir}}
spec:
  containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 22}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: app, labels: {app: other}}
spec:
  containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 22}]}]
`

// duringQuarantine is applied while the victim is quarantined: only the
// client may reach it, on TCP/80. After release this, not the open
// pre-quarantine posture, must hold.
const duringQuarantine = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: victim-from-client, namespace: app}
spec:
  podSelector: {matchLabels: {app: victim}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: 80}]
`

const echoPort = 7000 // not a declared port, so not in the matrices

func TestQuarantineLab(t *testing.T) {
	testenv.RequireRoot(t)
	if m := lab.ControlPlaneAssetsMissing(); m != "" {
		testenv.SkipOrFail(t, "control plane: "+m+"; run hack/controlplane.sh")
	}
	for _, backend := range backends(t) {
		t.Run(backend, func(t *testing.T) { runQuarantineLab(t, backend) })
	}
}

type qlab struct {
	t          *testing.T
	ctx        context.Context
	bulkhead   string
	state      string
	kubeconfig string
	st         *lab.State
}

func (l *qlab) pod(key string) lab.PodPlan {
	l.t.Helper()
	p, ok := l.st.Plan.Pod(key)
	if !ok {
		l.t.Fatalf("lab has no pod %s", key)
	}
	return p
}

func (l *qlab) probe() []lab.Entry {
	l.t.Helper()
	var got []lab.Entry
	if err := json.Unmarshal(cli(l.ctx, l.t, l.bulkhead, "lab", "probe", "--state-dir", l.state, "-o", "json"), &got); err != nil {
		l.t.Fatalf("probe output: %v", err)
	}
	return got
}

func (l *qlab) analyze() []lab.Entry {
	l.t.Helper()
	var want []lab.Entry
	if err := json.Unmarshal(cli(l.ctx, l.t, l.bulkhead, "analyze", "--kubeconfig", l.kubeconfig, "-o", "json"), &want); err != nil {
		l.t.Fatalf("analyze output: %v", err)
	}
	return want
}

// requireMatrix probes until the measured matrix equals both want (the
// test's own expectation) and bulkhead analyze, or fails after bound.
func (l *qlab) requireMatrix(what string, want func(lab.Entry) bool, bound time.Duration) {
	l.t.Helper()
	deadline := time.Now().Add(bound)
	for {
		got := l.probe()
		var bad []string
		for _, e := range got {
			if w := want(e); w != e.Allowed {
				bad = append(bad, fmt.Sprintf("%s -> %s %s/%d: probed allowed=%t, want %t", e.Src, e.Dst, e.Protocol, e.Port, e.Allowed, w))
			}
		}
		diff := lab.CompareMatrices(l.analyze(), got)
		if len(got) > 0 && len(bad) == 0 && diff == "" {
			l.t.Logf("%s: %d cells as expected and equal to analyze", what, len(got))
			return
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("%s: matrix wrong after %s:\n%s\nprobe vs analyze:\n%s", what, bound, strings.Join(bad, "\n"), diff)
		}
		time.Sleep(time.Second)
	}
}

const victim, client, ir = "app/victim", "app/client", "ops/ir"

// quarantined is the matrix while app/victim is quarantined with
// --allow-from pod:ops/role=ir:TCP/22.
func quarantined(e lab.Entry) bool {
	if e.Src == ir && e.Dst == victim && e.Protocol == "TCP" && e.Port == 22 {
		return true
	}
	return e.Src != victim && e.Dst != victim
}

func runQuarantineLab(t *testing.T, backend string) {
	dir := t.TempDir()
	scenario := filepath.Join(dir, "quarantine.yaml")
	np := filepath.Join(dir, "np.yaml")
	if err := os.WriteFile(scenario, []byte(quarantineScenario), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(np, []byte(duringQuarantine), 0o600); err != nil {
		t.Fatal(err)
	}
	labName := uniqueName(t)
	l := &qlab{t: t, bulkhead: filepath.Join(binDir, "bulkhead"), state: filepath.Join(dir, "lab")}
	l.kubeconfig = filepath.Join(l.state, "kubeconfig")
	labDownOnCleanup(t, l.bulkhead, l.state, labName)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	l.ctx = ctx
	cli(ctx, t, l.bulkhead, "lab", "up", "--state-dir", l.state, "--name", labName, "--nodes", "2", "--backend", backend, "--scenario", scenario)
	st, err := lab.LoadState(l.state)
	if err != nil {
		t.Fatal(err)
	}
	if st.NoEnforcement != "" {
		t.Fatalf("the lab runs without enforcement: %s", st.NoEnforcement)
	}
	l.st = st
	vp := l.pod(victim)
	cp := l.pod(client)

	l.requireMatrix("before quarantine", func(lab.Entry) bool { return true }, 30*time.Second)

	echo, err := bench.ListenEcho(vp.Netns, echoPort)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = echo.Close() })
	stream, err := bench.DialStream(cp.Netns, fmt.Sprintf("%s:%d", vp.IP, echoPort), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stream.Close() })
	for i := 0; i < 3; i++ {
		if err := stream.Exchange(time.Second); err != nil {
			t.Fatalf("the established connection does not work before the quarantine: %v", err)
		}
	}

	// Quarantine, and the established connection dies.
	start := time.Now()
	out := string(cli(ctx, t, l.bulkhead, "quarantine", "pod/victim", "-n", "app", "--name", "q-victim", "--kubeconfig", l.kubeconfig,
		"--reason", "e2e: beaconing", "--allow-from", "pod:ops/role=ir:TCP/22", "--wait", "--timeout", "60s"))
	active := time.Now()
	t.Logf("quarantine --wait returned after %s:\n%s", active.Sub(start), out)
	if !strings.Contains(out, vp.NodeName) {
		t.Errorf("--wait output does not name the victim's node %s:\n%s", vp.NodeName, out)
	}
	dead, err := stream.UntilDead(100*time.Millisecond, 500*time.Millisecond, 5*time.Second)
	if err != nil {
		t.Fatalf("established connection client -> victim:%d after the quarantine became Active: %v", echoPort, err)
	}
	t.Logf("established connection dead %s after the quarantine was created", dead.Sub(start))

	// Isolation and the forensics exception (ir may reach TCP/22, not 80).
	l.requireMatrix("quarantined", quarantined, 15*time.Second)
	if s2, err := bench.DialStream(cp.Netns, fmt.Sprintf("%s:%d", vp.IP, echoPort), time.Second); err == nil {
		if err := s2.Exchange(time.Second); err == nil {
			t.Errorf("a new connection client -> victim:%d carries data during the quarantine", echoPort)
		}
		s2.Close()
	}

	// The refused attempts the matrix probes made are kept on the
	// Quarantine's status for forensics (agents report every flow
	// interval, 5s by default).
	ctrllog.SetLogger(logr.Discard())
	c, err := lab.Client(l.state)
	if err != nil {
		t.Fatal(err)
	}
	var blocked []v1alpha1.QuarantineFlow
	deadline := time.Now().Add(30 * time.Second)
	for {
		var q v1alpha1.Quarantine
		if err := c.Get(ctx, crclient.ObjectKey{Namespace: "app", Name: "q-victim"}, &q); err != nil {
			t.Fatal(err)
		}
		blocked = q.Status.BlockedFlows
		found := false
		for _, f := range blocked {
			// The matrix probed victim:80. Wait for that record, not only
			// for the cut echo connection's: the victim's node records
			// the refusals (its own chains drop them), and its agent is
			// killed next, losing what it has not reported yet.
			found = found || (f.SourcePod == client && f.DestinationPod == victim && f.Destination == vp.IP.String()+":80")
		}
		if found {
			if q.Status.BlockedFlowsTotal < int64(len(blocked)) {
				t.Errorf("status.blockedFlowsTotal %d < %d records kept", q.Status.BlockedFlowsTotal, len(blocked))
			}
			// The lab installs config/admission: the API server names
			// the user it authenticated, the same one the CLI found
			// with SelfSubjectReview.
			if q.Status.AuthenticatedRequester == "" || q.Status.AuthenticatedRequester != q.Spec.RequestedBy {
				t.Errorf("status.authenticatedRequester = %q, want the CLI's authenticated user %q", q.Status.AuthenticatedRequester, q.Spec.RequestedBy)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no blocked flow %s -> %s:80 on the quarantine's status after 30s; status has %+v", client, victim, blocked)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("%d blocked flows recorded on the quarantine, latest %+v", len(blocked), blocked[0])

	// Fail closed across an agent crash: kill the victim's node agent.
	key := "agent-" + vp.NodeName
	agent, ok := st.Processes[key]
	if !ok || !agent.Alive() {
		t.Fatalf("lab state has no live %s: %+v", key, agent)
	}
	if err := syscall.Kill(agent.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("killing %s (pid %d): %v", key, agent.PID, err)
	}
	for i := 0; i < 100 && agent.Alive(); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if agent.Alive() {
		t.Fatalf("%s (pid %d) survived SIGKILL", key, agent.PID)
	}
	l.requireMatrix("quarantined, agent killed", quarantined, 0)
	restarted := restartAgent(t, l.state, key, agent)
	if err := waitReady(ctx, restarted.Health+"/readyz", 60*time.Second); err != nil {
		t.Fatalf("restarted %s: %v", key, err)
	}
	l.requireMatrix("quarantined, agent restarted", quarantined, 0)

	// A NetworkPolicy applied during the quarantine is in force after
	// release; the open pre-quarantine posture is not restored.
	cli(ctx, t, l.bulkhead, "lab", "apply", "--state-dir", l.state, "-f", np)
	l.requireMatrix("quarantined, with a new NetworkPolicy", quarantined, 15*time.Second)
	cli(ctx, t, l.bulkhead, "release", "q-victim", "-n", "app", "--kubeconfig", l.kubeconfig)
	l.requireMatrix("released", func(e lab.Entry) bool {
		if e.Dst == victim {
			return e.Src == client && e.Port == 80
		}
		return true
	}, 30*time.Second)

	show := string(cli(ctx, t, l.bulkhead, "quarantine", "show", "q-victim", "-n", "app", "--kubeconfig", l.kubeconfig))
	for _, want := range []string{"Phase:         Released", "Reason:        e2e: beaconing", "Allow from:    pod:ops/role=ir:TCP/22", vp.NodeName,
		"Blocked flows: ", vp.IP.String() + ":80 (" + victim + ")"} {
		if !strings.Contains(show, want) {
			t.Errorf("quarantine show does not contain %q:\n%s", want, show)
		}
	}
	if strings.Contains(show, "Ended:         -") {
		t.Errorf("quarantine show has no end time after release:\n%s", show)
	}
}

// restartAgent starts the agent again with the arguments the lab recorded,
// detached as the lab starts it, and records the new process in the state
// file so that lab down stops it.
func restartAgent(t *testing.T, stateDir, key string, old lab.Proc) lab.Proc {
	t.Helper()
	if len(old.Args) == 0 {
		t.Fatalf("lab state records no arguments for %s", key)
	}
	logf, err := os.OpenFile(old.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(old.Args[0], old.Args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("restarting %s: %v", key, err)
	}
	go func() { _ = cmd.Wait() }()
	p := old
	p.PID = cmd.Process.Pid
	p.StartTime, err = startTime(p.PID)
	if err != nil {
		t.Fatal(err)
	}
	st, err := lab.LoadState(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	st.Processes[key] = p
	if err := st.Save(stateDir); err != nil {
		t.Fatal(err)
	}
	return p
}

// startTime is field 22 of /proc/PID/stat, as lab.Proc records it.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	var v uint64
	_, err = fmt.Sscan(f[19], &v)
	return v, err
}

func waitReady(ctx context.Context, url string, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	hc := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %s (last error %v)", url, bound, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

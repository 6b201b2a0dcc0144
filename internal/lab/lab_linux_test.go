package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

const twoNodeScenario = `
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {tier: web}}
---
apiVersion: v1
kind: Namespace
metadata: {name: vault, labels: {tier: pci}}
---
apiVersion: v1
kind: Pod
metadata: {name: front, namespace: shop, labels: {app: front}}
spec:
  containers:
  - name: c
    ports:
    - {containerPort: 80}
    - {containerPort: 53, protocol: UDP}
    - {containerPort: 9000, protocol: SCTP}
---
apiVersion: v1
kind: Pod
metadata: {name: back, namespace: shop, labels: {app: back}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: vault, labels: {app: db}}
spec: {containers: [{name: c}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: not-applied-by-up, namespace: vault}
spec: {podSelector: {}}
`

func uniqueLabName(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "t" + hex.EncodeToString(b)
}

func requireLabPrereqs(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping a privileged lab test")
	}
	testenv.RequireRoot(t)
	if m := ControlPlaneAssetsMissing(); m != "" {
		testenv.SkipOrFail(t, "control plane: "+m+"; run hack/controlplane.sh")
	}
}

func rootLinks(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip -o link show: %v\n%s", err, out)
	}
	return string(out)
}

// labLinkRE matches link names the lab creates (pod veths and fabric
// ports), which must never appear in the root namespace.
var labLinkRE = regexp.MustCompile(`(?m)^\d+: (bhpod\d+|node\d+)[@:]`)

// TestLabUpProbeDown brings up a two-node lab from a scenario with no
// enforcement, checks the objects the lab kubelet registered and the
// all-allowed matrix over TCP, UDP and SCTP (and that the probes do see a
// drop), then checks that Down leaves nothing behind.
func TestLabUpProbeDown(t *testing.T) {
	requireLabPrereqs(t)
	name := uniqueLabName(t)
	dir := filepath.Join(t.TempDir(), "state")
	scen := filepath.Join(t.TempDir(), "scenario.yaml")
	if err := os.WriteFile(scen, []byte(twoNodeScenario), 0o644); err != nil {
		t.Fatal(err)
	}
	var st *State
	t.Cleanup(func() {
		if err := Down(name, dir, nil); err != nil {
			t.Errorf("cleanup down: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var progress strings.Builder
	st, err := Up(ctx, Options{
		StateDir: dir, Name: name, Nodes: 2, Scenario: []string{scen},
		NoBulkhead: true, Daemon: testDaemon, Progress: &progress,
	})
	if err != nil {
		t.Fatalf("up: %v\nprogress:\n%s", err, progress.String())
	}
	if st.NoEnforcement == "" {
		t.Error("a lab without bulkhead does not say it has no enforcement")
	}

	t.Run("veths live in lab namespaces only", func(t *testing.T) {
		if m := labLinkRE.FindAllString(rootLinks(t), -1); len(m) > 0 {
			t.Errorf("lab links in the root namespace: %v", m)
		}
		for _, n := range st.Plan.Netns() {
			if !netns.Exists(n) {
				t.Errorf("netns %s is missing", n)
			}
		}
	})

	t.Run("the lab kubelet registers nodes and pods with the planned addresses", func(t *testing.T) {
		c, err := Client(dir)
		if err != nil {
			t.Fatal(err)
		}
		var pods corev1.PodList
		if err := c.List(ctx, &pods); err != nil {
			t.Fatal(err)
		}
		type podView struct{ Key, Node, IP, IPs, HostIP, Phase, Ready string }
		var got []podView
		for _, p := range pods.Items {
			ready := ""
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady {
					ready = string(c.Status)
				}
			}
			var ips []string
			for _, ip := range p.Status.PodIPs {
				ips = append(ips, ip.IP)
			}
			got = append(got, podView{p.Namespace + "/" + p.Name, p.Spec.NodeName, p.Status.PodIP, strings.Join(ips, ","), p.Status.HostIP, string(p.Status.Phase), ready})
		}
		n1, n2 := NodeName(name, 1), NodeName(name, 2)
		want := []podView{
			{"shop/back", n2, "10.244.2.2", "10.244.2.2,fd00:10:244:2::2", "10.250.0.2", "Running", "True"},
			{"shop/front", n1, "10.244.1.2", "10.244.1.2,fd00:10:244:1::2", "10.250.0.1", "Running", "True"},
			{"vault/db", n1, "10.244.1.3", "10.244.1.3,fd00:10:244:1::3", "10.250.0.1", "Running", "True"},
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("pods (-want +got):\n%s", d)
		}
		var ns corev1.Namespace
		if err := c.Get(ctx, client.ObjectKey{Name: "vault"}, &ns); err != nil {
			t.Fatal(err)
		}
		if ns.Labels["tier"] != "pci" {
			t.Errorf("namespace vault labels %v lack tier=pci", ns.Labels)
		}
		var node corev1.Node
		if err := c.Get(ctx, client.ObjectKey{Name: n2}, &node); err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff([]string{"10.244.2.0/24", "fd00:10:244:2::/64"}, node.Spec.PodCIDRs); d != "" {
			t.Errorf("node podCIDRs (-want +got):\n%s", d)
		}
		if len(node.Status.Addresses) == 0 || node.Status.Addresses[0].Address != "10.250.0.2" {
			t.Errorf("node addresses %v, want InternalIP 10.250.0.2", node.Status.Addresses)
		}
	})

	probes := []Probe{{"SCTP", 9000}, {"TCP", 80}, {"TCP", 8443}, {"UDP", 53}}
	t.Run("with no policy every pod reaches every other on TCP, UDP and SCTP", func(t *testing.T) {
		// TCP/8443 is declared by no pod: probe listens on it for the run.
		got, err := ProbeLab(ctx, dir, probes, ProbeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var want []Entry
		keys := []string{"shop/back", "shop/front", "vault/db"}
		for _, s := range keys {
			for _, d := range keys {
				if s == d {
					continue
				}
				for _, p := range probes {
					want = append(want, Entry{Src: s, Dst: d, Protocol: p.Protocol, Port: p.Port, Allowed: true, Verdict: VerdictAllowed})
				}
			}
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("matrix (-want +got):\n%s", d)
		}
	})

	t.Run("with no policy every pod reaches every other over IPv6 too", func(t *testing.T) {
		got, err := ProbeLab(ctx, dir, probes, ProbeOptions{IPv6: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range got {
			if !e.Allowed {
				t.Errorf("%s -> %s %s/%d over IPv6: denied", e.Src, e.Dst, e.Protocol, e.Port)
			}
		}
		if len(got) != 3*2*len(probes) {
			t.Errorf("got %d cells, want %d", len(got), 3*2*len(probes))
		}
	})

	t.Run("default probes are the declared container ports", func(t *testing.T) {
		got, err := ProbeLab(ctx, dir, nil, ProbeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3*2*3 {
			t.Errorf("got %d cells, want 3 pods x 2 peers x 3 declared ports", len(got))
		}
	})

	// The probes must see drops, and the kernel must accept our SCTP
	// packets as valid (conntrack checks the CRC32c).
	t.Run("probes report a dropped flow as denied on every protocol", func(t *testing.T) {
		node := NodeName(name, 1) // hosts shop/front 10.244.1.2
		rules := `table inet bhlabtest {
  chain pre {
    type filter hook prerouting priority 0;
    meta l4proto sctp ct state invalid counter
    ip daddr 10.244.1.2 meta l4proto sctp ct state new counter
  }
  chain fw {
    type filter hook forward priority 0;
    ip daddr 10.244.1.2 tcp dport 80 drop
    ip daddr 10.244.1.2 udp dport 53 drop
    ip daddr 10.244.1.2 sctp dport 9000 drop
  }
}
`
		cmd := exec.Command("ip", "netns", "exec", node, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft in %s: %v\n%s", node, err, out)
		}
		defer func() {
			if out, err := exec.Command("ip", "netns", "exec", node, "nft", "delete", "table", "inet", "bhlabtest").CombinedOutput(); err != nil {
				t.Errorf("removing test table: %v\n%s", err, out)
			}
		}()
		got, err := ProbeLab(ctx, dir, probes, ProbeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range got {
			wantAllowed := !(e.Dst == "shop/front" && e.Port != 8443)
			if e.Allowed != wantAllowed {
				t.Errorf("%s -> %s %s/%d: allowed=%t, want %t", e.Src, e.Dst, e.Protocol, e.Port, e.Allowed, wantAllowed)
			}
		}
		out, err := exec.Command("ip", "netns", "exec", node, "nft", "list", "table", "inet", "bhlabtest").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list: %v\n%s", err, out)
		}
		invalid := regexp.MustCompile(`ct state invalid counter packets (\d+)`).FindStringSubmatch(string(out))
		valid := regexp.MustCompile(`ct state new counter packets (\d+)`).FindStringSubmatch(string(out))
		if invalid == nil || valid == nil {
			t.Fatalf("counters not found:\n%s", out)
		}
		if invalid[1] != "0" {
			t.Errorf("conntrack marked %s SCTP packets invalid (bad checksum?)", invalid[1])
		}
		if n, _ := strconv.Atoi(valid[1]); n == 0 {
			t.Errorf("no SCTP INIT reached conntrack as a new flow:\n%s", out)
		}
	})

	// Down.
	var procs []Proc
	for _, p := range st.Processes {
		procs = append(procs, p)
	}
	if len(procs) != 2 {
		t.Errorf("recorded processes %v, want controlplane and probes", st.Processes)
	}
	var children []Proc
	if b, err := os.ReadFile(Layout{dir}.ControlPlaneChildren()); err == nil {
		_ = jsonUnmarshal(b, &children)
	}
	if len(children) < 2 {
		t.Errorf("control plane recorded %d children, want etcd and kube-apiserver", len(children))
	}
	for _, p := range append(procs, children...) {
		if !p.Alive() {
			t.Errorf("pid %d (%v) is not running before down", p.PID, p.Args)
		}
	}
	if err := Down(name, dir, nil); err != nil {
		t.Fatalf("down: %v", err)
	}
	for _, p := range append(procs, children...) {
		if p.Alive() {
			t.Errorf("pid %d (%v) survived down", p.PID, p.Args)
		}
	}
	if left, err := LabNetns(name); err != nil || len(left) > 0 {
		t.Errorf("namespaces left after down: %v %v", left, err)
	}
	if m := labLinkRE.FindAllString(rootLinks(t), -1); len(m) > 0 {
		t.Errorf("lab links in the root namespace after down: %v", m)
	}
	if pins := LabPins(name); len(pins) > 0 {
		t.Errorf("pins left after down: %v", pins)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		ents, _ := os.ReadDir(dir)
		t.Errorf("state directory left after down: %v", ents)
	}
	if err := Down(name, dir, nil); err != nil {
		t.Errorf("a second down is not idempotent: %v", err)
	}
}

// TestDownAfterCrash kills the lab's daemons with SIGKILL and removes the
// state file, as a crash and a careless cleanup would, and checks that
// Down still removes every namespace, and that a new Up on the same
// directory cleans up a dead lab's state by itself.
func TestDownAfterCrash(t *testing.T) {
	requireLabPrereqs(t)
	name := uniqueLabName(t)
	dir := filepath.Join(t.TempDir(), "state")
	t.Cleanup(func() {
		if err := Down(name, dir, nil); err != nil {
			t.Errorf("cleanup down: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	opts := Options{StateDir: dir, Name: name, Nodes: 1, PodsPerNode: 2, NoBulkhead: true, Daemon: testDaemon, Progress: logWriter{t, time.Now()}}
	st, err := Up(ctx, opts)
	if err != nil {
		t.Fatalf("up: %v", err)
	}
	if _, err := Up(ctx, opts); err == nil || !strings.Contains(err.Error(), "already up") {
		t.Fatalf("a second up on a running lab: got %v, want an 'already up' error", err)
	}
	// Crash: SIGKILL every recorded daemon. The state file stays.
	var children []Proc
	if b, err := os.ReadFile(Layout{dir}.ControlPlaneChildren()); err == nil {
		_ = jsonUnmarshal(b, &children)
	}
	for _, p := range st.Processes {
		if err := kill9(p); err != nil {
			t.Fatal(err)
		}
	}
	// envtest's children outlive a SIGKILLed parent; Up must stop them
	// (they are recorded) before starting again.
	st2, err := Up(ctx, opts)
	if err != nil {
		t.Fatalf("up after a crash: %v", err)
	}
	for _, c := range children {
		if c.Alive() {
			t.Errorf("control-plane child %d of the crashed lab still runs", c.PID)
		}
	}
	if got, err := ProbeLab(ctx, dir, []Probe{{"TCP", 80}}, ProbeOptions{}); err != nil || len(got) != 2 {
		t.Errorf("probing the restarted lab: %d cells, %v", len(got), err)
	}
	// Crash again and lose the state file: Down by name still cleans up
	// the namespaces.
	for _, p := range st2.Processes {
		if err := kill9(p); err != nil {
			t.Fatal(err)
		}
	}
	if b, err := os.ReadFile(Layout{dir}.ControlPlaneChildren()); err == nil {
		children = nil
		_ = jsonUnmarshal(b, &children)
	}
	if err := os.Remove(Layout{dir}.State()); err != nil {
		t.Fatal(err)
	}
	if err := Down(name, dir, opts.Progress); err != nil {
		t.Fatalf("down without state: %v", err)
	}
	if left, _ := LabNetns(name); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
	for _, c := range children {
		if c.Alive() {
			t.Errorf("control-plane child %d still runs after down", c.PID)
		}
	}
}

// logWriter turns progress lines into test log lines with the elapsed
// time, shown with -v or on failure.
type logWriter struct {
	t     *testing.T
	start time.Time
}

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Logf("%6.2fs %s", time.Since(w.start).Seconds(), strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func kill9(p Proc) error {
	if !p.Alive() {
		return nil
	}
	proc, err := os.FindProcess(p.PID)
	if err != nil {
		return err
	}
	if err := proc.Kill(); err != nil {
		return fmt.Errorf("killing %d: %w", p.PID, err)
	}
	for i := 0; i < 100 && p.Alive(); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

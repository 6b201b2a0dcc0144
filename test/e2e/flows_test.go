package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/controllers"
	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/lab"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
	"github.com/bulkhead-dev/bulkhead/test/bench"
)

// flowsScenario: app/web on node 1, app/db on node 2, both in zone
// "learning" (Learn mode), so their forwarded flows are persisted.
const flowsScenario = `apiVersion: v1
kind: Namespace
metadata: {name: app, labels: {team: app}}
---
apiVersion: segmentation.bulkhead.dev/v1alpha1
kind: Zone
metadata: {name: learning}
spec:
  mode: Learn
  pods:
    namespaceSelector: {matchLabels: {team: app}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: app, labels: {app: web}}
spec:
  containers: [{name: c, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: app, labels: {app: db}}
spec:
  containers: [{name: c, ports: [{containerPort: 80}]}]
`

func TestFlowsLab(t *testing.T) {
	testenv.RequireRoot(t)
	if m := lab.ControlPlaneAssetsMissing(); m != "" {
		testenv.SkipOrFail(t, "control plane: "+m+"; run hack/controlplane.sh")
	}
	for _, backend := range backends(t) {
		t.Run(backend, func(t *testing.T) { runFlowsLab(t, backend) })
	}
}

func runFlowsLab(t *testing.T, backend string) {
	dir := t.TempDir()
	scenario := filepath.Join(dir, "flows.yaml")
	if err := os.WriteFile(scenario, []byte(flowsScenario), 0o600); err != nil {
		t.Fatal(err)
	}
	labName := uniqueName(t)
	bulkhead := filepath.Join(binDir, "bulkhead")
	state := filepath.Join(dir, "lab")
	kubeconfig := filepath.Join(state, "kubeconfig")
	labDownOnCleanup(t, bulkhead, state, labName)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cli(ctx, t, bulkhead, "lab", "up", "--state-dir", state, "--name", labName, "--nodes", "2", "--backend", backend, "--scenario", scenario)
	st, err := lab.LoadState(state)
	if err != nil {
		t.Fatal(err)
	}
	if st.NoEnforcement != "" {
		t.Fatalf("the lab runs without enforcement: %s", st.NoEnforcement)
	}
	web, ok1 := st.Plan.Pod("app/web")
	db, ok2 := st.Plan.Pod("app/db")
	if !ok1 || !ok2 {
		t.Fatal("lab has no app/web or app/db")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	ctrllog.SetLogger(logr.Discard())
	c, err := ctrlclient.New(cfg, ctrlclient.Options{Scheme: controllers.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	// The zone is created here rather than in the scenario, which the lab
	// applies before the controller runs.
	zone := &v1alpha1.Zone{ObjectMeta: metav1.ObjectMeta{Name: "learning"}, Spec: v1alpha1.ZoneSpec{Mode: v1alpha1.ZoneModeLearn,
		Pods: &v1alpha1.ZonePods{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "app"}}}}}
	if err := c.Create(ctx, zone); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating zone: %v", err)
	}
	time.Sleep(6 * time.Second) // one zone refresh of the controller's flow feeder
	tokenFile := filepath.Join(dir, "viewer.token")
	if err := os.WriteFile(tokenFile, []byte(viewerToken(ctx, t, cfg)), 0o600); err != nil {
		t.Fatal(err)
	}

	// Stream flows of namespace app for a while, sending traffic meanwhile.
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, bulkhead, "flows", "--kubeconfig", kubeconfig, "--controller", st.StreamAddr,
		"--token-file", tokenFile, "--controller-namespace", lab.SystemNamespace, "-n", "app", "--verdict", "FORWARDED",
		"-o", "json", "--wait", "25s", "--limit", "1000")
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // let the Flows call subscribe
	for i := 0; i < 5; i++ {
		s, err := bench.DialStream(web.Netns, fmt.Sprintf("%s:80", db.IP), 2*time.Second)
		if err != nil {
			t.Fatalf("web -> db:80: %v", err)
		}
		_ = s.Close() // the handshake is the connection; the probe server's reply does not matter
		time.Sleep(time.Second)
	}
	if err := cmd.Wait(); err != nil {
		b, _ := os.ReadFile(st.Processes["controller"].Log)
		t.Fatalf("bulkhead flows: %v\n%s\ncontroller log:\n%s", err, errOut.String(), tail(string(b), 40))
	}
	seen := false
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if line == "" {
			continue
		}
		var r dataplane.FlowRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("flows output line %q: %v", line, err)
		}
		if r.Src == web.IP && r.Dst == db.IP && r.DstPort == 80 && r.Source != nil && r.Source.Pod == "web" && r.Destination != nil && r.Destination.Pod == "db" && r.Destination.Zone == "learning" {
			seen = true
		}
	}
	if !seen {
		t.Fatalf("bulkhead flows showed no forwarded web -> db:80 record attributed to both pods; output:\n%s\nstderr:\n%s", out.String(), errOut.String())
	}

	// The edge is persisted (Learn zone) with workload attribution.
	deadline := time.Now().Add(60 * time.Second)
	for {
		var list v1alpha1.FlowEdgeSetList
		if err := c.List(ctx, &list); err != nil {
			t.Fatal(err)
		}
		for _, s := range list.Items {
			for _, e := range s.Spec.Edges {
				sw, dw := e.Source.Workload, e.Destination.Workload
				if sw != nil && dw != nil && sw.Namespace == "app" && sw.Kind == "Pod" && sw.Name == "web" && dw.Kind == "Pod" && dw.Name == "db" &&
					e.Port == 80 && e.Protocol == v1alpha1.ProtocolTCP && e.Verdict == v1alpha1.VerdictForwarded && dw.Zone == "learning" {
					// Five connections, each seen by both nodes' agents,
					// counted once.
					if e.Connections > 5 {
						t.Fatalf("edge web -> db has %d connections, want 5", e.Connections)
					}
					if e.Connections < 5 {
						continue // not every report persisted yet
					}
					t.Logf("persisted edge in %s: %d connections", s.Name, e.Connections)
					return
				}
			}
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(list.Items, "", "  ")
			t.Fatalf("no FlowEdgeSet edge app/Pod/web -> app/Pod/db TCP/80 Forwarded after 60s; sets:\n%s", b)
		}
		time.Sleep(2 * time.Second)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// viewerToken creates a ServiceAccount allowed to list zones and returns a
// token for it, as a user of bulkhead flows would have.
func viewerToken(ctx context.Context, t *testing.T, rc *rest.Config) string {
	t.Helper()

	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	ns := "default"
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "flows-viewer", Namespace: ns}}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "flows-viewer"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"zones"}, Verbs: []string{"list"}}}}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "flows-viewer"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "flows-viewer"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "flows-viewer", Namespace: ns}}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "flows-viewer", &authnv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/controllers"
	"github.com/bulkhead-dev/bulkhead/dataplane/agent"
	"github.com/bulkhead-dev/bulkhead/dataplane/fake"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/stream"
	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

const sysNS = "bulkhead-system"

type cluster struct {
	t   *testing.T
	env *testenv.Env
	c   client.Client
	cs  *kubernetes.Clientset
	ctx context.Context
}

func (k *cluster) must(err error) {
	k.t.Helper()
	if err != nil {
		k.t.Fatal(err)
	}
}

func startCluster(t *testing.T) *cluster {
	env := testenv.Start(t)
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	k := &cluster{t: t, env: env, c: env.Client, cs: cs, ctx: ctx}
	k.must(k.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: sysNS}}))
	for _, sa := range []string{"bulkhead-agent", "someone-else"} {
		k.must(k.c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: sysNS, Name: sa}}))
	}
	return k
}

// controller runs a controller until the returned stop is called.
type runningController struct {
	*controllers.Controller
	stop func()
}

func (k *cluster) startController(addr string) *runningController {
	k.t.Helper()
	var c *controllers.Controller
	var err error
	ctx, cancel := context.WithCancel(logr.NewContext(k.ctx, testr.NewWithOptions(k.t, testr.Options{Verbosity: 0})))
	for i := 0; i < 100; i++ { // a restarted controller may wait for its old port
		c, err = controllers.New(ctx, k.env.Config, controllers.Options{
			StreamAddr: addr, Namespace: sysNS, MetricsAddr: "", HealthAddr: "",
			Registry: prometheus.NewRegistry(), SkipNameValidation: true,
		})
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		cancel()
		k.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Start(ctx); err != nil {
			k.t.Logf("controller stopped: %v", err)
		}
	}()
	rc := &runningController{Controller: c, stop: func() { cancel(); <-done }}
	k.t.Cleanup(rc.stop)
	return rc
}

func (k *cluster) node(name string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	k.must(k.c.Create(k.ctx, n))
	return n
}

// token mints a node-bound token for the ServiceAccount sa; node nil
// mints an unbound one.
func (k *cluster) token(sa string, node *corev1.Node) string {
	k.t.Helper()
	tr := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: []string{stream.Audience}}}
	if node != nil {
		tr.Spec.BoundObjectRef = &authnv1.BoundObjectReference{Kind: "Node", APIVersion: "v1", Name: node.Name, UID: node.UID}
	}
	out, err := k.cs.CoreV1().ServiceAccounts(sysNS).CreateToken(k.ctx, sa, tr, metav1.CreateOptions{})
	k.must(err)
	return out.Status.Token
}

func (k *cluster) namespace(name string, labels map[string]string) {
	k.must(k.c.Create(k.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}))
}

func (k *cluster) pod(ns, name, node, ip string, labels map[string]string) {
	k.t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "probe"}}},
	}
	k.must(k.c.Create(k.ctx, p))
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	k.must(k.c.Status().Update(k.ctx, p))
}

func (k *cluster) deletePod(ns, name string) {
	k.must(k.c.Delete(k.ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}, client.GracePeriodSeconds(0)))
}

// flaky is a fake backend that can be told to fail.
type flaky struct {
	*fake.Backend
	mu   sync.Mutex
	fail error
}

func (f *flaky) setFail(err error) { f.mu.Lock(); f.fail = err; f.mu.Unlock() }

func (f *flaky) Sync(ctx context.Context, np *ir.NodePolicy) error {
	f.mu.Lock()
	err := f.fail
	f.mu.Unlock()
	if err != nil {
		return err
	}
	return f.Backend.Sync(ctx, np)
}

type testAgent struct {
	*agent.Agent
	be   *flaky
	stop func()
}

func (k *cluster) agent(node, token string, addrs ...string) *testAgent {
	ca := k.caPEM()
	be := &flaky{Backend: &fake.Backend{}}
	a, err := agent.New(agent.Config{
		Node: node, Controllers: addrs, Backend: be, StateDir: k.t.TempDir(),
		Dial: func(addr string) (*grpc.ClientConn, error) {
			return stream.Dial(stream.ClientConfig{Address: addr, CAPEM: ca, Token: token})
		},
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Log: testr.New(k.t),
	})
	k.must(err)
	ctx, cancel := context.WithCancel(k.ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	ta := &testAgent{Agent: a, be: be, stop: func() { cancel(); <-done }}
	k.t.Cleanup(ta.stop)
	return ta
}

func (k *cluster) caPEM() []byte {
	var cm corev1.ConfigMap
	k.must(k.c.Get(k.ctx, client.ObjectKey{Namespace: sysNS, Name: controllers.CAConfigMap}, &cm))
	return []byte(cm.Data[controllers.CAKey])
}

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// view is the part of a NodePolicy the view tests assert: endpoints with
// their IPs, and the members of every set.
type view struct {
	Endpoints map[string][]string
	Sets      map[string][]string
}

func viewOf(np *ir.NodePolicy, sets ...string) view {
	v := view{Endpoints: map[string][]string{}, Sets: map[string][]string{}}
	if np == nil {
		return v
	}
	for _, e := range np.Endpoints {
		for _, ip := range e.IPs {
			v.Endpoints[e.Name] = append(v.Endpoints[e.Name], ip.String())
		}
	}
	for _, name := range sets {
		s := np.Set(name)
		if s == nil {
			continue
		}
		v.Sets[name] = []string{}
		// Compare covered addresses: the engine may merge neighbours
		// into one prefix.
		for _, p := range s.Prefixes {
			for a := p.Masked().Addr(); p.Contains(a); a = a.Next() {
				v.Sets[name] = append(v.Sets[name], a.String())
			}
		}
	}
	return v
}

func expectView(t *testing.T, a *testAgent, want view, sets ...string) {
	t.Helper()
	eventually(t, "the agent's view", func() error {
		if d := cmp.Diff(want, viewOf(a.be.Current(), sets...)); d != "" {
			return fmt.Errorf("(-want +got):\n%s", d)
		}
		return nil
	})
}

func TestController(t *testing.T) {
	k := startCluster(t)
	nodeA, nodeB := k.node("node-a"), k.node("node-b")
	k.namespace("shop", map[string]string{"env": "prod"})
	k.namespace("dev", map[string]string{"env": "dev"})
	k.must(k.c.Create(k.ctx, &v1alpha1.Zone{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: v1alpha1.ZoneSpec{Pods: &v1alpha1.ZonePods{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}},
		PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
	}}}))
	k.must(k.c.Create(k.ctx, &v1alpha1.Zone{ObjectMeta: metav1.ObjectMeta{Name: "db"}, Spec: v1alpha1.ZoneSpec{Pods: &v1alpha1.ZonePods{
		PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
	}}}))
	k.must(k.c.Create(k.ctx, &v1alpha1.ZonePolicy{ObjectMeta: metav1.ObjectMeta{Name: "web-to-db"}, Spec: v1alpha1.ZonePolicySpec{
		Priority: 10, From: []string{"web"}, To: []string{"db"}, Action: v1alpha1.ActionAccept,
	}}))
	k.pod("shop", "web-1", "node-a", "10.244.1.10", map[string]string{"app": "web"})
	k.pod("dev", "web-2", "node-a", "10.244.1.11", map[string]string{"app": "web"})
	k.pod("shop", "db-1", "node-b", "10.244.2.10", map[string]string{"app": "db"})

	ctl := k.startController("127.0.0.1:0")
	addr := ctl.StreamAddr()
	tokA, tokB := k.token("bulkhead-agent", nodeA), k.token("bulkhead-agent", nodeB)
	agentA := k.agent("node-a", tokA, addr)
	agentB := k.agent("node-b", tokB, addr)

	web := "Zones/web"
	t.Run("each agent gets its node's endpoints and the sets they reference", func(t *testing.T) {
		expectView(t, agentA, view{Endpoints: map[string][]string{"dev/web-2": {"10.244.1.11"}, "shop/web-1": {"10.244.1.10"}}, Sets: map[string][]string{}})
		expectView(t, agentB, view{Endpoints: map[string][]string{"shop/db-1": {"10.244.2.10"}}, Sets: map[string][]string{web: {"10.244.1.10"}}}, web)
	})
	t.Run("a namespace relabel moves its pods into the zone", func(t *testing.T) {
		var ns corev1.Namespace
		k.must(k.c.Get(k.ctx, client.ObjectKey{Name: "dev"}, &ns))
		ns.Labels["env"] = "prod"
		k.must(k.c.Update(k.ctx, &ns))
		expectView(t, agentB, view{Endpoints: map[string][]string{"shop/db-1": {"10.244.2.10"}}, Sets: map[string][]string{web: {"10.244.1.10", "10.244.1.11"}}}, web)
	})
	t.Run("a pod label change moves the pod out of the zone", func(t *testing.T) {
		var p corev1.Pod
		k.must(k.c.Get(k.ctx, client.ObjectKey{Namespace: "shop", Name: "web-1"}, &p))
		p.Labels["app"] = "frontend"
		k.must(k.c.Update(k.ctx, &p))
		expectView(t, agentB, view{Endpoints: map[string][]string{"shop/db-1": {"10.244.2.10"}}, Sets: map[string][]string{web: {"10.244.1.11"}}}, web)
	})
	t.Run("a pod that moves to another node leaves the old node's view", func(t *testing.T) {
		k.deletePod("shop", "db-1")
		k.pod("shop", "db-1", "node-a", "10.244.1.12", map[string]string{"app": "db"})
		expectView(t, agentB, view{Endpoints: map[string][]string{}, Sets: map[string][]string{}}, web)
		expectView(t, agentA, view{Endpoints: map[string][]string{"dev/web-2": {"10.244.1.11"}, "shop/db-1": {"10.244.1.12"}, "shop/web-1": {"10.244.1.10"}},
			Sets: map[string][]string{web: {"10.244.1.11"}}}, web)
		// Move it back for the status tests.
		k.deletePod("shop", "db-1")
		k.pod("shop", "db-1", "node-b", "10.244.2.10", map[string]string{"app": "db"})
		expectView(t, agentB, view{Endpoints: map[string][]string{"shop/db-1": {"10.244.2.10"}}, Sets: map[string][]string{web: {"10.244.1.11"}}}, web)
	})

	t.Run("after acks, status says enforced on N/N nodes", func(t *testing.T) {
		eventually(t, "zone db enforced", func() error {
			var z v1alpha1.Zone
			k.must(k.c.Get(k.ctx, client.ObjectKey{Name: "db"}, &z))
			c := meta.FindStatusCondition(z.Status.Conditions, v1alpha1.ConditionEnforced)
			r := z.Status.Realization
			if c == nil || c.Status != metav1.ConditionTrue || r == nil || r.NodesDesired == 0 || r.NodesEnforced != r.NodesDesired || r.EnforcedAt == nil || z.Status.Members != 1 {
				return fmt.Errorf("status %+v", z.Status)
			}
			if !strings.Contains(c.Message, fmt.Sprintf("enforced on %d/%d nodes", r.NodesDesired, r.NodesDesired)) {
				return fmt.Errorf("message %q", c.Message)
			}
			return nil
		})
		eventually(t, "zone policy enforced on both nodes", func() error {
			var p v1alpha1.ZonePolicy
			k.must(k.c.Get(k.ctx, client.ObjectKey{Name: "web-to-db"}, &p))
			c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionEnforced)
			if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "enforced on 2/2 nodes") {
				return fmt.Errorf("status %+v", p.Status)
			}
			if a := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionAccepted); a == nil || a.Status != metav1.ConditionTrue {
				return fmt.Errorf("accepted condition %+v", a)
			}
			return nil
		})
	})

	t.Run("when one node fails to apply, status names it and its error", func(t *testing.T) {
		agentB.be.setFail(errors.New("nft: netlink receive: no buffer space available"))
		var p v1alpha1.ZonePolicy
		k.must(k.c.Get(k.ctx, client.ObjectKey{Name: "web-to-db"}, &p))
		p.Spec.Ports = []v1alpha1.PolicyPort{{Protocol: v1alpha1.ProtocolTCP, Port: ptrInt(5432)}}
		k.must(k.c.Update(k.ctx, &p))
		eventually(t, "the failure in status", func() error {
			k.must(k.c.Get(k.ctx, client.ObjectKey{Name: "web-to-db"}, &p))
			c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionEnforced)
			r := p.Status.Realization
			if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "NodeFailed" || r == nil {
				return fmt.Errorf("status %+v", p.Status)
			}
			if !strings.Contains(c.Message, "enforced on 1/2 nodes") || !strings.Contains(c.Message, "node-b: nft: netlink receive") {
				return fmt.Errorf("message %q", c.Message)
			}
			want := []v1alpha1.NodeError{{Node: "node-b", Message: "nft: netlink receive: no buffer space available"}}
			if d := cmp.Diff(want, r.FailedNodes); d != "" {
				return fmt.Errorf("failed nodes (-want +got):\n%s", d)
			}
			return nil
		})
		eventually(t, "a warning event naming the node", func() error {
			return findEvent(k, "web-to-db", "NodeFailed", "node-b")
		})
		agentB.be.setFail(nil)
		k.must(agentB.Resync(k.ctx))
		eventually(t, "recovery", func() error {
			k.must(k.c.Get(k.ctx, client.ObjectKey{Name: "web-to-db"}, &p))
			c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionEnforced)
			if c == nil || c.Status != metav1.ConditionTrue || len(p.Status.Realization.FailedNodes) != 0 {
				return fmt.Errorf("status %+v", p.Status)
			}
			return nil
		})
	})

	t.Run("a quarantine goes Pending, Active, Expired with per-node times and events", func(t *testing.T) {
		q := &v1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "q1"}, Spec: v1alpha1.QuarantineSpec{
			PodName: "db-1", Reason: "suspected exfiltration", ExpireAfter: &metav1.Duration{Duration: 6 * time.Second},
		}}
		k.must(k.c.Create(k.ctx, q))
		eventually(t, "the quarantine to be enforced on node-b", func() error {
			if ep := agentB.be.Current().Endpoint("shop/db-1"); ep == nil || !ep.Quarantined {
				return fmt.Errorf("endpoint %+v", ep)
			}
			return nil
		})
		eventually(t, "phase Active", func() error {
			k.must(k.c.Get(k.ctx, client.ObjectKey{Namespace: "shop", Name: "q1"}, q))
			s := q.Status
			if s.Phase != v1alpha1.QuarantineActive || s.EnforcedAt == nil || s.RequestedAt == nil || !slices.Equal(s.MatchedPods, []string{"shop/db-1"}) {
				return fmt.Errorf("status %+v", s)
			}
			i := slices.IndexFunc(s.Nodes, func(n v1alpha1.QuarantineNode) bool { return n.Node == "node-b" })
			if i < 0 {
				return fmt.Errorf("node-b, which hosts the pod, is not among the nodes: %+v", s.Nodes)
			}
			for _, n := range s.Nodes {
				if n.EnforcedAt == nil || n.Error != "" {
					return fmt.Errorf("node %s not enforced: %+v", n.Node, n)
				}
			}
			return nil
		})
		eventually(t, "phase Expired, and the pod released on the node", func() error {
			k.must(k.c.Get(k.ctx, client.ObjectKey{Namespace: "shop", Name: "q1"}, q))
			if q.Status.Phase != v1alpha1.QuarantineExpired || q.Status.EndedAt == nil {
				return fmt.Errorf("status %+v", q.Status)
			}
			if ep := agentB.be.Current().Endpoint("shop/db-1"); ep == nil || ep.Quarantined {
				return fmt.Errorf("endpoint %+v", ep)
			}
			return nil
		})
		for _, reason := range []string{"Active", "Expired"} {
			eventually(t, "event "+reason, func() error { return findEvent(k, "q1", reason, "") })
		}
	})

	t.Run("agent identity: node A cannot get node B's view; bad tokens are refused", func(t *testing.T) {
		for _, tc := range []struct {
			name, token string
			want        codes.Code
		}{
			{"node A's token asking for node B", tokA, codes.PermissionDenied},
			{"a token not bound to a node", k.token("bulkhead-agent", nil), codes.PermissionDenied},
			{"a node-bound token of another service account", k.token("someone-else", nodeB), codes.PermissionDenied},
			{"a forged token", tokB[:len(tokB)-4] + "AAAA", codes.Unauthenticated},
			{"no token", "", codes.Unauthenticated},
		} {
			t.Run(tc.name, func(t *testing.T) {
				conn, err := stream.Dial(stream.ClientConfig{Address: addr, CAPEM: k.caPEM(), Token: tc.token + map[bool]string{true: " "}[tc.token == ""]})
				k.must(err)
				defer conn.Close()
				ctx, cancel := context.WithTimeout(k.ctx, 10*time.Second)
				defer cancel()
				s, err := stream.Open(ctx, conn, "node-b", "", 0)
				if err == nil {
					var m any
					if m, err = s.Recv(); err == nil {
						t.Fatalf("received %v; want %s", m, tc.want)
					}
				}
				if status.Code(err) != tc.want {
					t.Fatalf("error %v; want code %s", err, tc.want)
				}
			})
		}
	})

	t.Run("a raw session gets a snapshot, then a minimal delta, and a fresh snapshot on reconnect", func(t *testing.T) {
		open := func() *stream.Session {
			conn, err := stream.Dial(stream.ClientConfig{Address: addr, CAPEM: k.caPEM(), Token: tokA})
			k.must(err)
			t.Cleanup(func() { conn.Close() })
			s, err := stream.Open(k.ctx, conn, "node-a", "", 0)
			k.must(err)
			return s
		}
		s := open()
		first, err := s.Recv()
		k.must(err)
		if first.GetSnapshot() == nil || first.GetEpoch() != ctl.Hub.Epoch() {
			t.Fatalf("first message %v, want a snapshot of epoch %s", first, ctl.Hub.Epoch())
		}
		k.pod("shop", "misc-1", "node-a", "10.244.1.20", map[string]string{"app": "misc"})
		var d *pb.ControllerMessage
		for d == nil || d.GetGeneration() == first.GetGeneration() {
			d, err = s.Recv()
			k.must(err)
		}
		delta := d.GetDelta()
		if delta == nil || delta.GetBaseGeneration() != first.GetGeneration() || d.GetGeneration() <= first.GetGeneration() {
			t.Fatalf("second message %v, want a delta on generation %d", d, first.GetGeneration())
		}
		var names []string
		for _, e := range delta.GetUpsertedEndpoints() {
			names = append(names, e.GetName())
		}
		if d := cmp.Diff([]string{"shop/misc-1"}, names); d != "" || len(delta.GetRemovedEndpoints())+len(delta.GetUpsertedSets())+len(delta.GetRemovedSets()) != 0 {
			t.Fatalf("delta for one new unzoned pod is not minimal: %v", delta)
		}
		k.must(s.Close())
		again, err := open().Recv()
		k.must(err)
		if again.GetSnapshot() == nil || again.GetGeneration() < d.GetGeneration() || again.GetSnapshot().GetNode() != "node-a" {
			t.Fatalf("after reconnect got %v, want a snapshot of generation >= %d", again, d.GetGeneration())
		}
		k.deletePod("shop", "misc-1")
	})

	t.Run("the status call takes the user's own token and checks it with SubjectAccessReview", func(t *testing.T) {
		for _, sa := range []string{"viewer", "nobody"} {
			k.must(k.c.Create(k.ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: sysNS, Name: sa}}))
		}
		k.must(k.c.Create(k.ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "zone-viewer"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{"segmentation.bulkhead.dev"}, Resources: []string{"zones"}, Verbs: []string{"get", "list"}}}}))
		k.must(k.c.Create(k.ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "zone-viewer"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "zone-viewer"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: sysNS, Name: "viewer"}}}))
		userToken := func(sa string) string {
			out, err := k.cs.CoreV1().ServiceAccounts(sysNS).CreateToken(k.ctx, sa, &authnv1.TokenRequest{}, metav1.CreateOptions{})
			k.must(err)
			return out.Status.Token
		}
		call := func(token string) (*pb.StatusResponse, error) {
			conn, err := stream.Dial(stream.ClientConfig{Address: addr, CAPEM: k.caPEM(), Token: token})
			k.must(err)
			defer conn.Close()
			return pb.NewPolicyStreamClient(conn).Status(k.ctx, &pb.StatusRequest{})
		}
		var resp *pb.StatusResponse
		eventually(t, "the viewer's status call (RBAC may take a moment)", func() error {
			var err error
			resp, err = call(userToken("viewer"))
			return err
		})
		var nodes []string
		for _, n := range resp.GetNodes() {
			nodes = append(nodes, n.GetNode())
			if n.GetAckedGeneration() != n.GetGeneration() || !n.GetConnected() {
				t.Errorf("node %s: %v; want connected and acked", n.GetNode(), n)
			}
		}
		if d := cmp.Diff([]string{"node-a", "node-b"}, nodes); d != "" {
			t.Fatalf("nodes (-want +got):\n%s", d)
		}
		if _, err := call(userToken("nobody")); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("a user without access: error %v, want PermissionDenied", err)
		}
	})

	t.Run("after a controller restart agents get a new epoch's snapshot and no stale generation", func(t *testing.T) {
		before := agentA.Applied()
		oldBundle := ctl.Bundle
		ctl.stop()
		// Change the cluster while no controller runs.
		k.pod("shop", "web-3", "node-a", "10.244.1.13", map[string]string{"app": "web"})
		time.Sleep(200 * time.Millisecond)
		if got := agentA.Applied(); got != before {
			t.Fatalf("agent applied %+v while no controller ran (had %+v)", got, before)
		}
		if agentA.be.Current().Endpoint("dev/web-2") == nil {
			t.Fatal("the last policy is no longer in force while the controller is down")
		}
		ctl2 := k.startController(addr)
		if d := cmp.Diff(oldBundle.Cert, ctl2.Bundle.Cert); d != "" {
			t.Fatal("the restarted controller did not reuse the certificate in the Secret")
		}
		eventually(t, "the new epoch on node-a", func() error {
			if got := agentA.Applied(); got.Epoch != ctl2.Hub.Epoch() {
				return fmt.Errorf("applied %+v, want epoch %s", got, ctl2.Hub.Epoch())
			}
			return nil
		})
		if ep := agentA.be.Current().Endpoint("shop/web-3"); ep == nil || ep.IPs[0] != netip.MustParseAddr("10.244.1.13") {
			t.Fatalf("after restart the snapshot lacks the pod created meanwhile: %+v", ep)
		}
		// A further change arrives as a delta of the new epoch.
		gen := agentA.Applied().Generation
		k.deletePod("shop", "web-3")
		eventually(t, "the delta", func() error {
			if got := agentA.Applied(); got.Epoch != ctl2.Hub.Epoch() || got.Generation <= gen || agentA.be.Current().Endpoint("shop/web-3") != nil {
				return fmt.Errorf("applied %+v", got)
			}
			return nil
		})
	})

	// The chains of an endpoint outside a zone judge the zone's members
	// through the shared ZoneMode/* sets (docs/policy-model.md
	// "Compilation to the IR"), not by the zone's name: a node whose
	// endpoints are all unzoned still enforces every zone's boundary.
	t.Run("a zone is enforced on every node with endpoints, also one with only unzoned endpoints", func(t *testing.T) {
		nodeC := k.node("node-c")
		agentC := k.agent("node-c", k.token("bulkhead-agent", nodeC), addr)
		k.pod("dev", "misc-c", "node-c", "10.244.3.10", map[string]string{"app": "misc"})
		inSet := func(set, addr string) func() error {
			return func() error {
				np := agentC.be.Current()
				if np == nil || np.Endpoint("dev/misc-c") == nil {
					return fmt.Errorf("no endpoint dev/misc-c on node-c: %+v", np)
				}
				if v := viewOf(np, set); !slices.Contains(v.Sets[set], addr) {
					return fmt.Errorf("%s = %v, want it to hold %s", set, v.Sets[set], addr)
				}
				return nil
			}
		}
		zoneEnforcedOn := func(name string, nodes int) {
			t.Helper()
			eventually(t, "zone "+name+" enforced on every node", func() error {
				var z v1alpha1.Zone
				k.must(k.c.Get(k.ctx, client.ObjectKey{Name: name}, &z))
				c := meta.FindStatusCondition(z.Status.Conditions, v1alpha1.ConditionEnforced)
				r := z.Status.Realization
				if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != z.Generation || r == nil || r.NodesDesired != int32(nodes) || r.NodesEnforced != int32(nodes) {
					return fmt.Errorf("status %+v", z.Status)
				}
				if want := fmt.Sprintf("enforced on %d/%d nodes", nodes, nodes); !strings.Contains(c.Message, want) {
					return fmt.Errorf("message %q, want %q", c.Message, want)
				}
				return nil
			})
		}
		eventually(t, "node-c's view", inSet("ZoneMode/Enforce", "10.244.2.10"))
		zoneEnforcedOn("db", 3)
		zoneEnforcedOn("web", 3)

		// A mode change reaches node-c as set members only; its status
		// waits for that generation.
		var z v1alpha1.Zone
		k.must(k.c.Get(k.ctx, client.ObjectKey{Name: "db"}, &z))
		z.Spec.Mode = v1alpha1.ZoneModeAudit
		k.must(k.c.Update(k.ctx, &z))
		eventually(t, "db's member in node-c's ZoneMode/AuditOrLearn", inSet("ZoneMode/AuditOrLearn", "10.244.2.10"))
		zoneEnforcedOn("db", 3)
	})
}

func ptrInt(i int) *intstr.IntOrString { v := intstr.FromInt32(int32(i)); return &v }

func findEvent(k *cluster, name, reason, contains string) error {
	var list eventsv1.EventList
	if err := k.c.List(k.ctx, &list); err != nil {
		return err
	}
	for _, e := range list.Items {
		if e.Regarding.Name == name && e.Reason == reason && strings.Contains(e.Note, contains) {
			return nil
		}
	}
	return fmt.Errorf("no event %s for %s containing %q among %d", reason, name, contains, len(list.Items))
}

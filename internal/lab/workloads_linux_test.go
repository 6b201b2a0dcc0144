package lab

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// TestDeploymentScaleRolloutService runs a lab without bulkhead, adds a
// Deployment after up, exposes it with a Service and checks, with real
// packets and the API server's objects, that scaled and rolled-out pods
// get connectivity behind the ClusterIP and correct owner chains.
func TestDeploymentScaleRolloutService(t *testing.T) {
	requireLabPrereqs(t)
	name := uniqueLabName(t)
	dir := filepath.Join(t.TempDir(), "state")
	scen := filepath.Join(t.TempDir(), "scenario.yaml")
	if err := os.WriteFile(scen, []byte(twoNodeScenario), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := Down(name, dir, nil); err != nil {
			t.Errorf("cleanup down: %v", err)
		}
		if left, _ := LabNetns(name); len(left) > 0 {
			t.Errorf("namespaces left after down: %v", left)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var progress strings.Builder
	st, err := Up(ctx, Options{StateDir: dir, Name: name, Nodes: 2, Scenario: []string{scen},
		NoBulkhead: true, Daemon: testDaemon, Progress: &progress})
	if err != nil {
		t.Fatalf("up: %v\nprogress:\n%s", err, progress.String())
	}
	front, _ := st.Plan.Pod("shop/front")
	cs, err := labClientset(dir)
	if err != nil {
		t.Fatal(err)
	}

	deploy := func(replicas int32, version string) *appsv1.Deployment {
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api"},
			Spec: appsv1.DeploymentSpec{
				Replicas: &replicas,
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "api", "version": version}},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: ProbeImage,
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}}}},
				},
			},
		}
	}
	svc, err := ApplyService(ctx, dir, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromString("http")}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	cip := netip.MustParseAddr(svc.Spec.ClusterIP)
	if !netip.MustParsePrefix(ServiceCIDR).Contains(cip) {
		t.Fatalf("clusterIP %s is outside %s", cip, ServiceCIDR)
	}

	// check verifies the API server's pods of the Deployment, their owner
	// chain pod → ReplicaSet (with the template hash) → Deployment, and
	// that probes through the ClusterIP reach exactly those pods.
	check := func(t *testing.T, want int, version string) {
		t.Helper()
		d, err := cs.AppsV1().Deployments("shop").Get(ctx, "api", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pods, err := cs.CoreV1().Pods("shop").List(ctx, metav1.ListOptions{LabelSelector: "app=api"})
		if err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) != want {
			t.Fatalf("%d api pods, want %d", len(pods.Items), want)
		}
		names := map[string]bool{}
		for _, p := range pods.Items {
			names["shop/"+p.Name] = true
			if p.Labels["version"] != version {
				t.Errorf("pod %s has version %q, want %q", p.Name, p.Labels["version"], version)
			}
			ref := metav1.GetControllerOf(&p)
			if ref == nil || ref.Kind != "ReplicaSet" {
				t.Fatalf("pod %s: controller %+v, want a ReplicaSet", p.Name, ref)
			}
			rs, err := cs.AppsV1().ReplicaSets("shop").Get(ctx, ref.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("pod %s: owner: %v", p.Name, err)
			}
			hash := rs.Labels[appsv1.DefaultDeploymentUniqueLabelKey]
			if rs.UID != ref.UID || hash == "" || p.Labels[appsv1.DefaultDeploymentUniqueLabelKey] != hash || rs.Name != "api-"+hash {
				t.Errorf("pod %s: replicaset %s (uid %s, hash %q) does not match the pod's ref %+v and labels %v", p.Name, rs.Name, rs.UID, hash, ref, p.Labels)
			}
			if dref := metav1.GetControllerOf(rs); dref == nil || dref.Kind != "Deployment" || dref.UID != d.UID {
				t.Errorf("replicaset %s: controller %+v, want deployment api (uid %s)", rs.Name, dref, d.UID)
			}
			if len(p.Status.PodIPs) != 2 || p.Status.Phase != corev1.PodRunning {
				t.Errorf("pod %s: phase %s, podIPs %v; want Running with two addresses", p.Name, p.Status.Phase, p.Status.PodIPs)
			}
		}
		seen := map[string]bool{}
		for i := 0; i < 30*want; i++ {
			id, err := ProbeAddr(front.Netns, netip.AddrPortFrom(cip, 8080), 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if !names[id] {
				t.Fatalf("ClusterIP answered by %s, not one of the deployment's pods %v", id, names)
			}
			seen[id] = true
		}
		if len(seen) != want {
			t.Errorf("ClusterIP reached %d of %d pods: %v", len(seen), want, seen)
		}
	}

	t.Run("a deployment created after up gets pods with owner chains behind the service", func(t *testing.T) {
		if _, err := ApplyDeployment(ctx, dir, deploy(2, "v1")); err != nil {
			t.Fatal(err)
		}
		check(t, 2, "v1")
	})
	t.Run("the service name resolves through kube-dns and reaches the deployment", func(t *testing.T) {
		if err := EnableDNS(ctx, dir, map[string][]netip.Addr{"pay.example.com": {netip.MustParseAddr("10.251.0.2")}}); err != nil {
			t.Fatal(err)
		}
		dnsAddr := netip.AddrPortFrom(KubeDNSIP, 53)
		deadline := time.Now().Add(5 * time.Second)
		var id string
		for {
			id, err = ProbeName(front.Netns, dnsAddr, "shop", "api", 8080, 2*time.Second)
			if err == nil || time.Now().After(deadline) {
				break // the responder loads Services once a second
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(id, "shop/api-") {
			t.Errorf("api answered by %s, want a shop/api-* pod", id)
		}
		got, err := Resolve(front.Netns, dnsAddr, "shop", "pay.example.com", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0] != netip.MustParseAddr("10.251.0.2") {
			t.Errorf("pay.example.com resolved to %v, want [10.251.0.2]", got)
		}
	})
	t.Run("scaling up adds reachable pods", func(t *testing.T) {
		if _, err := ApplyDeployment(ctx, dir, deploy(3, "v1")); err != nil {
			t.Fatal(err)
		}
		check(t, 3, "v1")
	})
	t.Run("a rollout replaces every pod with a new replicaset", func(t *testing.T) {
		before, _ := LoadState(dir)
		if _, err := ApplyDeployment(ctx, dir, deploy(2, "v2")); err != nil {
			t.Fatal(err)
		}
		check(t, 2, "v2")
		rs, err := cs.AppsV1().ReplicaSets("shop").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(rs.Items) != 1 {
			t.Errorf("%d replicasets after the rollout, want only the new one", len(rs.Items))
		}
		for _, pp := range before.Plan.Pods {
			if strings.HasPrefix(pp.Name, "api-") && netns.Exists(pp.Netns) {
				t.Errorf("old pod namespace %s still exists", pp.Netns)
			}
		}
	})
	t.Run("scaling to zero leaves the service without backends", func(t *testing.T) {
		if _, err := ApplyDeployment(ctx, dir, deploy(0, "v2")); err != nil {
			t.Fatal(err)
		}
		if _, err := ProbeAddr(front.Netns, netip.AddrPortFrom(cip, 8080), 500*time.Millisecond); err == nil {
			t.Error("the ClusterIP still answers with no pods")
		}
	})
}

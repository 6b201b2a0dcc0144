package lab

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/vishvananda/netlink"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/attrib"
)

// TestDNSInternetStatefulSetCronJob brings a lab up with the kube-dns
// stand-in and the internet stand-in, and checks with real packets and
// the API server's objects: kube-dns answers through its ClusterIP and
// its pod answers probes; internet hosts answer probes and run a DNS
// server that is not kube-dns; StatefulSet and CronJob pods carry the
// labels and owner chains their controllers give them, so attribution
// walks them to the top workload with the unstable labels removed.
func TestDNSInternetStatefulSetCronJob(t *testing.T) {
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
	api, unknown := InternetHost(10), InternetHost(53)
	var progress strings.Builder
	st, err := Up(ctx, Options{StateDir: dir, Name: name, Nodes: 2, Scenario: []string{scen},
		NoBulkhead: true, DNS: true, Internet: []netip.Addr{api, unknown}, Daemon: testDaemon, Progress: &progress})
	if err != nil {
		t.Fatalf("up: %v\nprogress:\n%s", err, progress.String())
	}
	front, _ := st.Plan.Pod("shop/front")
	cs, err := labClientset(dir)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("up with DNS runs kube-dns behind its ClusterIP and its pod answers probes", func(t *testing.T) {
		dns, ok := st.Plan.Pod("kube-system/kube-dns-0")
		if !ok {
			t.Fatalf("no kube-dns pod in the plan; progress:\n%s", progress.String())
		}
		got, err := Resolve(front.Netns, netip.AddrPortFrom(KubeDNSIP, 53), "shop", "kube-dns.kube-system", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]netip.Addr{KubeDNSIP}, got, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
			t.Errorf("kube-dns.kube-system resolved (-want +got):\n%s", diff)
		}
		id, err := ProbeAddr(front.Netns, netip.AddrPortFrom(dns.IP, 80), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if id != "kube-system/kube-dns-0" {
			t.Errorf("probe to the kube-dns pod answered by %q", id)
		}
	})

	t.Run("internet hosts answer probes and DNS from pods, and the root namespace has no route to them", func(t *testing.T) {
		if st.Internet == nil || st.Internet.Netns != InternetNetns(name) {
			t.Fatalf("state internet = %+v, want netns %s", st.Internet, InternetNetns(name))
		}
		if diff := cmp.Diff([]netip.Addr{api, unknown}, st.Internet.Hosts, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
			t.Errorf("internet hosts (-want +got):\n%s", diff)
		}
		for _, h := range []netip.Addr{api, unknown} {
			id, err := ProbeAddr(front.Netns, netip.AddrPortFrom(h, 80), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if id != InternetIdentity {
				t.Errorf("probe to %s answered by %q, want %q", h, id, InternetIdentity)
			}
			// A resolver that is not kube-dns answers on every host.
			got, err := Resolve(front.Netns, netip.AddrPortFrom(h, 53), "shop", "kube-dns.kube-system", time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]netip.Addr{KubeDNSIP}, got, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
				t.Errorf("rogue resolver %s answered (-want +got):\n%s", h, diff)
			}
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: ipNet(InternetPrefix)}, netlink.RT_FILTER_DST)
		if err != nil {
			t.Fatal(err)
		}
		if len(routes) != 0 {
			t.Errorf("the root namespace has routes to %s: %v", InternetPrefix, routes)
		}
		if _, err := EnableInternet(ctx, dir, []netip.Addr{netip.MustParseAddr("10.244.1.9")}); err == nil || !strings.Contains(err.Error(), "10.251.0.0/24") {
			t.Errorf("EnableInternet with a pod address: error %v, want one naming %s", err, InternetPrefix)
		}
	})

	owners := func(ns, kind, name string) (attrib.OwnerRef, bool) {
		var m metav1.Object
		var err error
		switch kind {
		case "ReplicaSet":
			m, err = cs.AppsV1().ReplicaSets(ns).Get(ctx, name, metav1.GetOptions{})
		case "Job":
			m, err = cs.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
		default:
			return attrib.OwnerRef{}, false
		}
		if err != nil {
			return attrib.OwnerRef{}, false
		}
		if ref := metav1.GetControllerOf(m); ref != nil {
			return attrib.OwnerRef{Kind: ref.Kind, Name: ref.Name}, true
		}
		return attrib.OwnerRef{}, true
	}
	workload := func(t *testing.T, p corev1.Pod) v1alpha1.WorkloadRef {
		t.Helper()
		ap := attrib.Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels}
		if ref := metav1.GetControllerOf(&p); ref != nil {
			ap.Owner = attrib.OwnerRef{Kind: ref.Kind, Name: ref.Name}
		}
		return (&attrib.Attributor{Owners: owners}).Workload(ap)
	}

	sts := func(replicas int32, image string) *appsv1.StatefulSet {
		return &appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Namespace: "vault", Name: "pg"},
			Spec: appsv1.StatefulSetSpec{
				Replicas: &replicas, ServiceName: "pg",
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "pg"}},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "pg"}},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: image,
						Ports: []corev1.ContainerPort{{Name: "pg", ContainerPort: 80}}}}},
				},
			},
		}
	}
	// checkSTS verifies the pods pg-0 … pg-<want-1>, their labels, their
	// owner and revision, and that each answers probes from front.
	checkSTS := func(t *testing.T, want int) string {
		t.Helper()
		s, err := cs.AppsV1().StatefulSets("vault").Get(ctx, "pg", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pods, err := cs.CoreV1().Pods("vault").List(ctx, metav1.ListOptions{LabelSelector: "app=pg"})
		if err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) != want {
			t.Fatalf("%d pg pods, want %d", len(pods.Items), want)
		}
		revision := ""
		for _, p := range pods.Items {
			ref := metav1.GetControllerOf(&p)
			if ref == nil || ref.Kind != "StatefulSet" || ref.UID != s.UID {
				t.Fatalf("pod %s: controller %+v, want statefulset pg (uid %s)", p.Name, ref, s.UID)
			}
			idx := strings.TrimPrefix(p.Name, "pg-")
			if p.Labels[StatefulSetPodNameLabel] != p.Name || p.Labels[StatefulSetPodIndexLabel] != idx {
				t.Errorf("pod %s: labels %v lack pod-name %s / pod-index %s", p.Name, p.Labels, p.Name, idx)
			}
			if p.Spec.Hostname != p.Name || p.Spec.Subdomain != "pg" {
				t.Errorf("pod %s: hostname %q subdomain %q", p.Name, p.Spec.Hostname, p.Spec.Subdomain)
			}
			rev := p.Labels[appsv1.ControllerRevisionHashLabelKey]
			if revision != "" && rev != revision {
				t.Errorf("pods have revisions %s and %s", revision, rev)
			}
			revision = rev
			cr, err := cs.AppsV1().ControllerRevisions("vault").Get(ctx, rev, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("pod %s: controllerrevision %q: %v", p.Name, rev, err)
			}
			if cref := metav1.GetControllerOf(cr); cref == nil || cref.UID != s.UID {
				t.Errorf("controllerrevision %s: controller %+v, want the statefulset", cr.Name, cref)
			}
			w := workload(t, p)
			if diff := cmp.Diff(v1alpha1.WorkloadRef{Namespace: "vault", Kind: "StatefulSet", Name: "pg", Labels: map[string]string{"app": "pg"}}, w); diff != "" {
				t.Errorf("pod %s attributed (-want +got):\n%s", p.Name, diff)
			}
			pp, ok := mustState(t, dir).Plan.Pod("vault/" + p.Name)
			if !ok {
				t.Fatalf("pod %s is not in the plan", p.Name)
			}
			if id, err := ProbeAddr(front.Netns, netip.AddrPortFrom(pp.IP, 80), time.Second); err != nil || id != "vault/"+p.Name {
				t.Errorf("probe to %s (%s): %q, %v", p.Name, pp.IP, id, err)
			}
		}
		return revision
	}

	t.Run("a statefulset gets ordinal pods with revision, pod-name and pod-index labels; a rollout keeps the names", func(t *testing.T) {
		if _, err := ApplyStatefulSet(ctx, dir, sts(2, "v1")); err != nil {
			t.Fatal(err)
		}
		r1 := checkSTS(t, 2)
		if _, err := ApplyStatefulSet(ctx, dir, sts(2, "v2")); err != nil {
			t.Fatal(err)
		}
		r2 := checkSTS(t, 2)
		if r1 == r2 || !strings.HasPrefix(r2, "pg-") {
			t.Errorf("revision after the rollout %q, before %q; want a new pg-<hash>", r2, r1)
		}
		if _, err := ApplyStatefulSet(ctx, dir, sts(1, "v2")); err != nil {
			t.Fatal(err)
		}
		checkSTS(t, 1)
		if _, ok := mustState(t, dir).Plan.Pod("vault/pg-1"); ok {
			t.Error("pg-1 is still in the plan after the scale-down")
		}
	})

	t.Run("a cronjob run makes a job owned by the cronjob whose pods walk up to the cronjob", func(t *testing.T) {
		cj, err := ApplyCronJob(ctx, dir, &batchv1.CronJob{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "report"},
			Spec: batchv1.CronJobSpec{Schedule: "*/5 * * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "report"}},
					Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
						Containers: []corev1.Container{{Name: "c", Image: ProbeImage}}},
				}}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		at := time.Date(2026, 1, 2, 3, 5, 0, 0, time.UTC)
		job, err := RunCronJob(ctx, dir, "shop", "report", at)
		if err != nil {
			t.Fatal(err)
		}
		if ref := metav1.GetControllerOf(job); ref == nil || ref.Kind != "CronJob" || ref.UID != cj.UID {
			t.Errorf("job %s: controller %+v, want cronjob report", job.Name, ref)
		}
		if job.Annotations[batchv1.CronJobScheduledTimestampAnnotation] != "2026-01-02T03:05:00Z" {
			t.Errorf("job annotations %v", job.Annotations)
		}
		pods := jobPods(ctx, t, cs, job)
		if len(pods) != 1 {
			t.Fatalf("job %s has %d pods, want 1", job.Name, len(pods))
		}
		p := pods[0]
		if p.Labels[batchv1.JobNameLabel] != job.Name || p.Labels[batchv1.ControllerUidLabel] != string(job.UID) {
			t.Errorf("pod %s labels %v lack the job-name and controller-uid the API server gives the job's template", p.Name, p.Labels)
		}
		w := workload(t, p)
		if diff := cmp.Diff(v1alpha1.WorkloadRef{Namespace: "shop", Kind: "CronJob", Name: "report", Labels: map[string]string{"app": "report"}}, w); diff != "" {
			t.Errorf("job pod attributed (-want +got):\n%s", diff)
		}
		// A second run is a new Job with new pods, the same workload.
		job2, err := RunCronJob(ctx, dir, "shop", "report", at.Add(5*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if job2.Name == job.Name {
			t.Fatalf("second run reused job %s", job.Name)
		}
		for _, p := range jobPods(ctx, t, cs, job2) {
			if w := workload(t, p); w.Kind != "CronJob" || w.Name != "report" {
				t.Errorf("second run's pod %s attributed to %s/%s", p.Name, w.Kind, w.Name)
			}
		}
	})
}

func jobPods(ctx context.Context, t *testing.T, cs kubernetes.Interface, job *batchv1.Job) []corev1.Pod {
	t.Helper()
	list, err := cs.CoreV1().Pods(job.Namespace).List(ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel + "=" + job.Name})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func mustState(t *testing.T, dir string) *State {
	t.Helper()
	st, err := LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

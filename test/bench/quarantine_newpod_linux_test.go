//go:build linux && labbench

package bench

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/lab"
)

// TestQuarantineNewPodWindow is the new-pod quarantine window benchmark
// of docs/benchmarks.md (BULKHEAD_BENCH=1). In a 2-node lab with a
// selector Quarantine (app=compromised) in place, each trial adds a
// matching pod and a non-matching control pod with lab.AddPod (which
// brings a pod's network up only after its node's agent admitted it),
// then probes once out of and once into each pod at once (pods stay
// until the end, so no address is reused). It reports the
// admission time (agent endpoint call until policy with the pod's IPs is
// enforced) and AddPod's total, p50/p99, and counts probes of a
// quarantined pod that got through (the window: must be 0) and first
// probes of a control pod that failed (must be 0: the network is really
// up). BULKHEAD_BENCH_TRIALS (default 20) and BULKHEAD_BENCH_BACKEND
// (default nftables) change the run.
func TestQuarantineNewPodWindow(t *testing.T) {
	requireLabBench(t)
	trials := envCount(t, "BULKHEAD_BENCH_TRIALS", 20)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	l := upLab(ctx, t, latencyScenario, 2)
	st, c, backend, state := l.State, l.Client, l.Backend, l.Dir
	clientPod, _ := st.Plan.Pod("app/client") // on node 2
	target := netip.AddrPortFrom(clientPod.IP, 80)
	q := &v1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "bench-newpod"},
		Spec: v1alpha1.QuarantineSpec{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "compromised"}},
			Reason: "new-pod window benchmark", RequestedBy: "bench"}}
	if err := c.Create(ctx, q); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	admitted := map[string]time.Duration{}
	lab.OnAdmitted = func(pod string, took time.Duration) { mu.Lock(); admitted[pod] = took; mu.Unlock() }
	t.Cleanup(func() { lab.OnAdmitted = nil })
	spec := corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{{ContainerPort: 80}}}}}
	var admitQ, admitC, addQ, addC []time.Duration
	leaked, controlFailed := 0, 0
	var added []string
	for i := 0; i < trials; i++ {
		for _, quarantined := range []bool{true, false} {
			name, app := fmt.Sprintf("control-%d", i), "control"
			if quarantined {
				name, app = fmt.Sprintf("newbie-%d", i), "compromised"
			}
			start := time.Now()
			pp, err := lab.AddPod(ctx, state, lab.PodInput{Namespace: "app", Name: name, Labels: map[string]string{"app": app}, Spec: spec}, 1, nil)
			if err != nil {
				t.Fatalf("trial %d: %v", i, err)
			}
			took := time.Since(start)
			_, outErr := lab.ProbeAddr(pp.Netns, target, 300*time.Millisecond)
			_, inErr := lab.ProbeAddr(clientPod.Netns, netip.AddrPortFrom(pp.IP, 80), 300*time.Millisecond)
			mu.Lock()
			adm := admitted[pp.Key()]
			mu.Unlock()
			if quarantined {
				admitQ, addQ = append(admitQ, adm), append(addQ, took)
				if outErr == nil {
					leaked++
					t.Errorf("trial %d: the first probe out of quarantined %s got through", i, pp.Key())
				}
				if inErr == nil {
					leaked++
					t.Errorf("trial %d: the first probe into quarantined %s got through", i, pp.Key())
				}
			} else {
				admitC, addC = append(admitC, adm), append(addC, took)
				if outErr != nil || inErr != nil {
					controlFailed++
					t.Errorf("trial %d: control pod %s: out %v, in %v", i, pp.Key(), outErr, inErr)
				}
			}
			t.Logf("trial %d: %s admitted after %s, AddPod %s", i, pp.Key(), adm.Round(time.Millisecond), took.Round(time.Millisecond))
			// Pods stay until the end: a new pod reusing the address of a
			// just-removed quarantined pod can be refused by the other
			// node until that node learns of the change (fail closed),
			// which is not what this benchmark measures.
			added = append(added, pp.Key())
		}
	}
	for _, key := range added {
		if err := lab.RemovePod(ctx, state, key); err != nil {
			t.Error(err)
		}
	}
	report := fmt.Sprintf("new-pod quarantine window, %s backend, %d trials:\n"+
		"  quarantined pod: admission p50 %s  p99 %s  max %s; AddPod p50 %s  p99 %s\n"+
		"  control pod:     admission p50 %s  p99 %s  max %s; AddPod p50 %s  p99 %s\n"+
		"  first probes of quarantined pods that got through: %d of %d; control pods whose first probes failed: %d of %d\n",
		backend, trials,
		pct(admitQ, 50), pct(admitQ, 99), pct(admitQ, 100), pct(addQ, 50), pct(addQ, 99),
		pct(admitC, 50), pct(admitC, 99), pct(admitC, 100), pct(addC, 50), pct(addC, 99),
		leaked, 2*trials, controlFailed, trials)
	t.Log("\n" + report)
	fmt.Print(report)
}

//go:build linux && labbench

package bench

import (
	"context"
	"fmt"
	"math"
	"sort"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// latencyScenario: app/victim on node 1, app/client (holds the
// established connection) and app/prober (opens a new connection every
// 5 ms) on node 2.
const latencyScenario = `apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: v1
kind: Pod
metadata: {name: victim, namespace: app, labels: {app: victim}}
spec:
  containers: [{name: c, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: app, labels: {app: client}}
spec:
  containers: [{name: c, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: prober, namespace: app, labels: {app: prober}}
spec:
  containers: [{name: c, ports: [{containerPort: 80}]}]
`

const benchEchoPort = 7000

// TestQuarantineLatency is the quarantine latency benchmark of
// docs/benchmarks.md. It runs only with BULKHEAD_BENCH=1 (hack/bench.sh
// sets it): in a 2-node lab, each trial creates a Quarantine for a pod
// that has an established connection and a stream of new-connection
// probes, and measures from Create returning to the first refused probe
// and to the established connection's death; then it deletes the
// quarantine and waits until the pod is reachable again.
// BULKHEAD_BENCH_TRIALS (default 50) and BULKHEAD_BENCH_BACKEND (default
// nftables) change the run.
func TestQuarantineLatency(t *testing.T) {
	requireLabBench(t)
	trials := envCount(t, "BULKHEAD_BENCH_TRIALS", 50)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	l := upLab(ctx, t, latencyScenario, 2)
	st, c, backend := l.State, l.Client, l.Backend
	victim, _ := st.Plan.Pod("app/victim")
	clientPod, _ := st.Plan.Pod("app/client")
	prober, _ := st.Plan.Pod("app/prober")
	victimAddr := fmt.Sprintf("%s:80", victim.IP)
	echoAddr := fmt.Sprintf("%s:%d", victim.IP, benchEchoPort)
	echo, err := ListenEcho(victim.Netns, benchEchoPort)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = echo.Close() })

	const (
		probeEvery   = 5 * time.Millisecond
		probeTimeout = 100 * time.Millisecond
		bound        = 10 * time.Second
	)
	var refused, dead []time.Duration
	for i := 0; i < trials; i++ {
		if err := waitReachable(prober.Netns, victimAddr, victim.Key(), bound); err != nil {
			t.Fatalf("trial %d: %v", i, err)
		}
		stream, err := dialWorking(clientPod.Netns, echoAddr, bound)
		if err != nil {
			t.Fatalf("trial %d: no working connection before the quarantine: %v", i, err)
		}
		type res struct {
			at  time.Time
			err error
		}
		refusedC, deadC := make(chan res, 1), make(chan res, 1)
		go func() {
			at, err := FirstRefused(prober.Netns, victimAddr, victim.Key(), probeEvery, probeTimeout, bound)
			refusedC <- res{at, err}
		}()
		go func() {
			at, err := stream.UntilDead(probeEvery, probeTimeout, bound)
			deadC <- res{at, err}
		}()
		time.Sleep(50 * time.Millisecond) // the probe streams are running
		q := &v1alpha1.Quarantine{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: fmt.Sprintf("bench-%d", i)},
			Spec: v1alpha1.QuarantineSpec{PodName: "victim", Reason: "latency benchmark", RequestedBy: "bench"}}
		if err := c.Create(ctx, q); err != nil {
			t.Fatalf("trial %d: creating quarantine: %v", i, err)
		}
		created := time.Now()
		r, d := <-refusedC, <-deadC
		_ = stream.Close()
		if r.err != nil {
			t.Fatalf("trial %d: %v", i, r.err)
		}
		if d.err != nil {
			t.Fatalf("trial %d: established connection: %v", i, d.err)
		}
		// A negative time means a probe sent before Create returned was
		// already refused (the API server answered after the agents had
		// enforced); it counts as 0.
		refused = append(refused, max(0, r.at.Sub(created)))
		dead = append(dead, max(0, d.at.Sub(created)))
		t.Logf("trial %d: refused after %s, connection dead after %s", i, r.at.Sub(created).Round(time.Millisecond), d.at.Sub(created).Round(time.Millisecond))
		if err := c.Delete(ctx, q); err != nil {
			t.Fatalf("trial %d: deleting quarantine: %v", i, err)
		}
		if err := waitGone(ctx, c, client.ObjectKeyFromObject(q), bound); err != nil {
			t.Fatalf("trial %d: %v", i, err)
		}
	}
	report := fmt.Sprintf("quarantine latency, %s backend, %d trials (probe every %s, probe timeout %s):\n"+
		"  create -> first refused new connection: p50 %s  p99 %s  max %s\n"+
		"  create -> established connection dead:  p50 %s  p99 %s  max %s\n",
		backend, trials, probeEvery, probeTimeout,
		pct(refused, 50), pct(refused, 99), pct(refused, 100), pct(dead, 50), pct(dead, 99), pct(dead, 100))
	t.Log("\n" + report)
	fmt.Print(report)
	if p := pct(refused, 99); p > 300*time.Millisecond {
		t.Logf("target missed: p99 to the first refused probe is %s > 300ms", p)
	}
	if p := pct(dead, 99); p > 300*time.Millisecond {
		t.Logf("target missed: p99 to the dead connection is %s > 300ms", p)
	}
}

// pct is the nearest-rank percentile.
func pct(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	i = min(max(i, 0), len(s)-1)
	return s[i].Round(time.Millisecond)
}

// dialWorking opens the long-lived connection and requires one echo,
// retrying until bound: after a deletion the last node may still be
// catching up.
func dialWorking(netnsName, addr string, bound time.Duration) (*Stream, error) {
	deadline := time.Now().Add(bound)
	for {
		s, err := DialStream(netnsName, addr, time.Second)
		if err == nil {
			if err = s.Exchange(time.Second); err == nil {
				return s, nil
			}
			_ = s.Close()
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitReachable(netnsName, addr, key string, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	for {
		ok, err := ProbeTCP(netnsName, addr, key, 200*time.Millisecond)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not reachable from %s within %s", addr, netnsName, bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitGone(ctx context.Context, c client.Client, key client.ObjectKey, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	for {
		var q v1alpha1.Quarantine
		if err := c.Get(ctx, key, &q); client.IgnoreNotFound(err) != nil {
			return err
		} else if err != nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("quarantine %s still exists after %s", key, bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

package policy_test

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/policy/synth"
)

var benchParams = synth.Params{Nodes: 100, Namespaces: 100, Pods: 10000, Policies: 10000, Seed: 1}

func init() {
	if os.Getenv("BULKHEAD_BENCH_SMALL") != "" {
		benchParams = synth.Params{Nodes: 25, Namespaces: 25, Pods: 2500, Policies: 2500, Seed: 1}
	}
}

func buildSynth(b *testing.B, c *synth.Cluster) *policy.Engine {
	e := policy.New()
	for _, n := range c.Namespaces {
		e.SetNamespace(n)
	}
	for _, p := range c.Pods {
		e.SetPod(p)
	}
	for _, np := range c.NetworkPolicies {
		if err := e.SetNetworkPolicy(np); err != nil {
			b.Fatal(err)
		}
	}
	return e
}

// BenchmarkFullCompute: from an empty engine, load 10k pods and 10k
// NetworkPolicies over 100 namespaces and compile every one of the 100
// NodePolicies. Target: ≤ 0.4 s and ≤ 150 MB.
func BenchmarkFullCompute(b *testing.B) {
	c := synth.Generate(benchParams)
	b.ReportAllocs()
	var e *policy.Engine
	cpu0 := cpuTime()
	for b.Loop() {
		e = buildSynth(b, c)
		for _, n := range e.Nodes() {
			e.NodePolicy(n)
		}
	}
	b.StopTimer()
	reportCPU(b, cpu0)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/1e6, "live-MB")
	rules, sets := 0, 0
	for _, n := range e.Nodes() {
		np := e.NodePolicy(n)
		sets += len(np.Sets)
		for _, ep := range np.Endpoints {
			for _, t := range ep.Ingress.Tiers {
				rules += len(t.Rules)
			}
			for _, t := range ep.Egress.Tiers {
				rules += len(t.Rules)
			}
		}
	}
	b.ReportMetric(float64(rules), "rules")
	b.ReportMetric(float64(sets), "node-sets")
	runtime.KeepAlive(e)
}

// BenchmarkIncrementalPodUpdate: with the 10k-pod cluster compiled, relabel
// one pod and bring every dirty NodePolicy up to date. Target: ≤ 5 ms.
func BenchmarkIncrementalPodUpdate(b *testing.B) {
	c := synth.Generate(benchParams)
	e := buildSynth(b, c)
	for _, n := range e.Nodes() {
		e.NodePolicy(n)
	}
	e.TakeDirtyNodes()
	b.ReportAllocs()
	i := 0
	dirty := 0
	before := e.Stats()
	cpu0 := cpuTime()
	for b.Loop() {
		p := c.Pods[(i*7919)%len(c.Pods)].DeepCopy()
		p.Labels["app"] = fmt.Sprintf("app-%d", i%20)
		p.Labels["version"] = fmt.Sprintf("v%d", i%3)
		e.SetPod(p)
		ds := e.TakeDirtyNodes()
		for _, n := range ds {
			e.NodePolicy(n)
		}
		dirty += len(ds)
		i++
	}
	reportCPU(b, cpu0)
	after := e.Stats()
	b.ReportMetric(float64(dirty)/float64(i), "dirty-nodes/op")
	b.ReportMetric(float64(after.EndpointsCompiled-before.EndpointsCompiled)/float64(i), "endpoints/op")
	b.ReportMetric(float64(after.SetsRebuilt-before.SetsRebuilt)/float64(i), "sets/op")
}

// cpuTime is the process's user+system CPU time. On a shared machine it
// is a steadier measure than wall time; it includes the GC's background
// workers.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, since time.Duration) {
	b.ReportMetric(float64(cpuTime()-since)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}

package controllers_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/controllers"
	"github.com/bulkhead-dev/bulkhead/internal/certs"
	"github.com/bulkhead-dev/bulkhead/internal/stream"
	pb "github.com/bulkhead-dev/bulkhead/internal/stream/streampb"
	"google.golang.org/protobuf/proto"
)

const (
	benchNodes     = 100
	benchPodsPer   = 100
	benchNamespace = 20
	benchApps      = 10
)

func benchPod(n, i int, app int) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns-%d", (n*benchPodsPer+i)%benchNamespace), Name: fmt.Sprintf("pod-%d-%d", n, i),
			Labels: map[string]string{"app": fmt.Sprintf("app-%d", app), "tier": fmt.Sprintf("t%d", app%3)}},
		Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node-%d", n), Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.244.%d.%d", n, i+2),
			PodIPs: []corev1.PodIP{{IP: fmt.Sprintf("10.244.%d.%d", n, i+2)}}},
	}
}

// loadCluster feeds 10k pods on 100 nodes, namespaces, zones, zone
// policies and NetworkPolicies into a model.
func loadCluster(tb testing.TB, m *controllers.Model) {
	for i := 0; i < benchNamespace; i++ {
		m.Upsert(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ns-%d", i), Labels: map[string]string{"env": []string{"prod", "dev"}[i%2]}}})
	}
	for n := 0; n < benchNodes; n++ {
		m.Upsert(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%d", n)}})
		for i := 0; i < benchPodsPer; i++ {
			m.Upsert(benchPod(n, i, (n+i)%benchApps))
		}
	}
	t0 := metav1.NewTime(time.Now().Add(-time.Hour))
	for t := 0; t < 3; t++ {
		m.Upsert(&v1alpha1.Zone{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("tier-%d", t), CreationTimestamp: t0, Generation: 1}, Spec: v1alpha1.ZoneSpec{
			Pods: &v1alpha1.ZonePods{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": fmt.Sprintf("t%d", t)}},
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}}, Mode: v1alpha1.ZoneModeEnforce, IntraZone: v1alpha1.IntraZoneAllow}})
	}
	port := intstr.FromInt32(8080)
	for t := 0; t < 3; t++ {
		m.Upsert(&v1alpha1.ZonePolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("zp-%d", t), Generation: 1}, Spec: v1alpha1.ZonePolicySpec{
			Priority: int32(10 + t), From: []string{fmt.Sprintf("tier-%d", t)}, To: []string{fmt.Sprintf("tier-%d", (t+1)%3)}, Action: v1alpha1.ActionAccept,
			Ports: []v1alpha1.PolicyPort{{Protocol: v1alpha1.ProtocolTCP, Port: &port}}}})
	}
	named := intstr.FromString("http")
	tcp := corev1.ProtocolTCP
	for ns := 0; ns < benchNamespace; ns++ {
		for a := 0; a < benchApps; a++ {
			m.Upsert(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns-%d", ns), Name: fmt.Sprintf("allow-app-%d", a), Generation: 1},
				Spec: networkingv1.NetworkPolicySpec{
					PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", a)}},
					PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
					Ingress: []networkingv1.NetworkPolicyIngressRule{{
						From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", (a+1)%benchApps)}}, NamespaceSelector: &metav1.LabelSelector{}}},
						Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &named}},
					}},
				}})
		}
	}
}

// BenchmarkPodUpdateToDelta measures the time from a pod label change
// reaching the controller's model (what the informer handler does) to the
// delta for that pod's node arriving over the real TLS gRPC stream, with
// 10k pods on 100 nodes and one open session per node. It reports p50,
// p99 and max, the CPU time per update and the delta's size.
func BenchmarkPodUpdateToDelta(b *testing.B) {
	bundle, err := certs.Generate([]string{"127.0.0.1"}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	hub := stream.NewHub()
	metrics := controllers.NewMetrics(nil)
	model := controllers.NewModel(hub, 5*time.Millisecond, metrics, logr.Discard())

	loadCluster(b, model)
	start := time.Now()
	model.Publish()
	b.Logf("initial compile and publish of %d nodes: %s", benchNodes, time.Since(start))
	hub.MarkReady()

	agents := map[string]stream.Identity{}
	for n := 0; n < benchNodes; n++ {
		agents[fmt.Sprintf("tok-%d", n)] = stream.Identity{User: "agent", Node: fmt.Sprintf("node-%d", n)}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	stop, err := stream.Serve(lis, bundle, &stream.Server{Hub: hub, Auth: stream.StaticAuthenticator{Agents: agents}, Log: logr.Discard()})
	if err != nil {
		b.Fatal(err)
	}
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = model.Run(ctx) }()

	type arrival struct {
		node string
		at   time.Time
		msg  *pb.ControllerMessage
	}
	arrivals := make(chan arrival, 10000)
	var wireBytes int
	for n := 0; n < benchNodes; n++ {
		node := fmt.Sprintf("node-%d", n)
		conn, err := stream.Dial(stream.ClientConfig{Address: lis.Addr().String(), CAPEM: bundle.CACert, Token: fmt.Sprintf("tok-%d", n)})
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		s, err := stream.Open(ctx, conn, node, "", 0)
		if err != nil {
			b.Fatal(err)
		}
		first, err := s.Recv()
		if err != nil || first.GetSnapshot() == nil {
			b.Fatalf("node %s: first message %v, %v", node, first, err)
		}
		go func() {
			for {
				m, err := s.Recv()
				if err != nil {
					return
				}
				_ = s.Ack(m.GetEpoch(), m.GetGeneration(), nil)
				arrivals <- arrival{node: node, at: time.Now(), msg: m}
			}
		}()
	}

	lat := make([]time.Duration, 0, b.N)
	all := make([]time.Duration, 0, b.N) // until every node got its delta
	partial := 0                         // samples where not every node got one
	pub0, pubN0 := histogram(b, metrics.ComputeSeconds)
	cpu0 := cpuTime()
	var mem0 runtime.MemStats
	runtime.ReadMemStats(&mem0)
	if f := os.Getenv("BULKHEAD_BENCH_HEAP0"); f != "" {
		// base for pprof -base, so that a -memprofile shows the timed
		// part only; the profile is as of the last GC, so force one
		runtime.GC()
		writeHeapProfile(b, f)
		runtime.ReadMemStats(&mem0)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n, p := i%benchNodes, (i*7)%benchPodsPer
		node := fmt.Sprintf("node-%d", n)
		pod := benchPod(n, p, (n+p+1+i%9)%benchApps) // relabel to another app than before
		name := pod.Namespace + "/" + pod.Name
		t0 := time.Now()
		model.Upsert(pod)
		seen := map[string]bool{}
		var last time.Time
		found := false
		timeout := time.After(60 * time.Second)
	wait:
		for !found || len(seen) < benchNodes {
			select {
			case a := <-arrivals:
				seen[a.node] = true
				last = a.at
				if a.node != node || found {
					continue
				}
				for _, e := range a.msg.GetDelta().GetUpsertedEndpoints() {
					if e.GetName() == name {
						lat = append(lat, a.at.Sub(t0))
						wireBytes += len(mustMarshal(a.msg))
						found = true
						// Every node references the two app sets the
						// pod moves between; allow the rest 5s to arrive.
						timeout = time.After(5 * time.Second)
						break
					}
				}
			case <-timeout:
				if !found {
					b.Fatalf("no delta for %s on %s within 60s", name, node)
				}
				partial++
				break wait
			}
		}
		if len(seen) == benchNodes {
			all = append(all, last.Sub(t0))
		}
		// Let acks settle so the next sample starts clean.
		time.Sleep(10 * time.Millisecond)
		for len(arrivals) > 0 {
			<-arrivals
		}
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	var mem1 runtime.MemStats
	runtime.ReadMemStats(&mem1)
	pub1, pubN1 := histogram(b, metrics.ComputeSeconds)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	q := func(l []time.Duration, f float64) time.Duration {
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		return l[min(len(l)-1, int(f*float64(len(l))))]
	}
	b.ReportMetric(ms(q(lat, 0.5)), "p50-ms")
	b.ReportMetric(ms(q(lat, 0.99)), "p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
	if len(all) > 0 {
		b.ReportMetric(ms(q(all, 0.5)), "all-nodes-p50-ms")
		b.ReportMetric(ms(q(all, 0.99)), "all-nodes-p99-ms")
	}
	if partial > 0 {
		b.Logf("%d of %d updates did not reach all %d nodes within 5s of the pod's node", partial, len(lat), benchNodes)
	}
	if pubN1 > pubN0 {
		b.ReportMetric((pub1-pub0)*1000/float64(pubN1-pubN0), "publish-ms")
	}
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(len(lat)), "cpu-ms/update")
	b.ReportMetric(float64(wireBytes)/float64(len(lat)), "delta-bytes")
	// Whole process, like the CPU: controller, stream server and agents.
	b.ReportMetric(float64(mem1.TotalAlloc-mem0.TotalAlloc)/1024/float64(len(lat)), "alloc-KiB/update")
	b.ReportMetric(float64(mem1.Mallocs-mem0.Mallocs)/float64(len(lat)), "mallocs/update")
	b.ReportMetric(float64(mem1.NumGC-mem0.NumGC), "gcs")
	b.ReportMetric(float64(mem1.PauseTotalNs-mem0.PauseTotalNs)/1e6, "gc-pause-ms")
	b.ReportMetric(float64(mem1.HeapAlloc)/(1<<20), "heap-end-MiB")
}

func writeHeapProfile(tb testing.TB, path string) {
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		tb.Fatal(err)
	}
}

func mustMarshal(m *pb.ControllerMessage) []byte {
	b, err := protoMarshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

var protoMarshal = proto.Marshal

// histogram returns a histogram's sum and count.
func histogram(tb testing.TB, h prometheus.Histogram) (float64, uint64) {
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		tb.Fatal(err)
	}
	return m.GetHistogram().GetSampleSum(), m.GetHistogram().GetSampleCount()
}

// cpuTime is the process's user+system CPU time: on a shared, loaded
// machine it shows the work per update apart from waiting for a core.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkModelMemory reports the heap the controller's model (engine,
// compiled per-node policies and the hub's published copies) keeps for
// 10k pods on 100 nodes. Run it with -benchtime=1x.
func BenchmarkModelMemory(b *testing.B) {
	for i := 0; i < b.N; i++ {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		hub := stream.NewHub()
		model := controllers.NewModel(hub, 0, nil, logr.Discard())
		loadCluster(b, model)
		model.Publish()
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		if hub.Generation("node-0") == 0 {
			b.Fatal("node-0 was never published")
		}
		runtime.KeepAlive(model)
		b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/(1<<20), "heap-MiB")
		b.ReportMetric(float64(after.Sys)/(1<<20), "process-sys-MiB")
	}
}

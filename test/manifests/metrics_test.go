package manifests

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/bulkhead-dev/bulkhead/controllers"
	"github.com/bulkhead-dev/bulkhead/dataplane/agent"
	"github.com/bulkhead-dev/bulkhead/internal/stream"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// metric is one family as docs/metrics.md must describe it.
type metric struct {
	name   string
	labels []string
}

var (
	fqNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)
	varLblRE = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
)

// described returns the families the collectors describe, with their
// variable labels: vectors without children yet are included.
func described(t *testing.T, cs ...prometheus.Collector) []metric {
	t.Helper()
	ch := make(chan *prometheus.Desc, 1024)
	for _, c := range cs {
		c.Describe(ch)
	}
	close(ch)
	var out []metric
	for d := range ch {
		s := d.String()
		m := fqNameRE.FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("cannot parse descriptor %s", s)
		}
		var labels []string
		if l := varLblRE.FindStringSubmatch(s); l != nil && l[1] != "" {
			for _, x := range strings.Split(l[1], ",") {
				labels = append(labels, strings.Trim(strings.TrimSpace(x), `"`))
			}
		}
		out = append(out, metric{m[1], labels})
	}
	return out
}

// fields returns the prometheus collectors among a metrics struct's fields.
func fields(v any) []prometheus.Collector {
	rv := reflect.ValueOf(v).Elem()
	var out []prometheus.Collector
	for i := range rv.NumField() {
		if c, ok := rv.Field(i).Interface().(prometheus.Collector); ok {
			out = append(out, c)
		}
	}
	return out
}

// docRows returns docs/metrics.md's table rows by the metric name in
// their first cell.
func docRows(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root(t), "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	cell := regexp.MustCompile("^\\| `([a-z_:*]+)`")
	for _, l := range strings.Split(string(data), "\n") {
		if m := cell.FindStringSubmatch(l); m != nil {
			rows[m[1]] = l
		}
	}
	return rows
}

// documented reports how docs/metrics.md misses m: no row, or a row that
// does not name a label. Families of the standard Go and process
// collectors may be covered by a "go_*" / "process_*" row.
func documented(rows map[string]string, m metric) error {
	row, ok := rows[m.name]
	if !ok {
		for _, p := range []string{"go_", "process_"} {
			if strings.HasPrefix(m.name, p) {
				if _, ok := rows[p+"*"]; ok {
					return nil
				}
			}
		}
		return fmt.Errorf("%s has no row in docs/metrics.md", m.name)
	}
	for _, l := range m.labels {
		if !strings.Contains(row, "`"+l+"`") {
			return fmt.Errorf("the row of %s does not name its label %q", m.name, l)
		}
	}
	return nil
}

// TestAgentMetricsAreDocumented checks every family the agent registers
// (as dataplane/agent.Main does) against docs/metrics.md.
func TestAgentMetricsAreDocumented(t *testing.T) {
	rows := docRows(t)
	ms := described(t, append(fields(agent.NewMetrics(nil)), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))...)
	if len(ms) < 7 {
		t.Fatalf("found only %d agent metrics", len(ms))
	}
	for _, m := range ms {
		if err := documented(rows, m); err != nil {
			t.Error(err)
		}
	}
}

// TestControllerMetricsAreDocumented runs the controller against a real
// API server, scrapes its metrics endpoint and checks every family
// against docs/metrics.md, together with the families of its own
// collectors that have no samples yet.
func TestControllerMetricsAreDocumented(t *testing.T) {
	rows := docRows(t)
	env := testenv.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	c, err := controllers.New(ctx, env.Config, controllers.Options{
		StreamAddr: "127.0.0.1:0", Namespace: namespace, MetricsAddr: addr, LeaderElect: true,
		// Let -count=N build a manager with the same controller names again.
		SkipNameValidation: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	// The controller registers into controller-runtime's global registry,
	// as in production; unregister (by equal descriptors) so that another
	// run in this process can register again.
	t.Cleanup(func() {
		for _, c := range append(fields(controllers.NewMetrics(nil)), controllers.NewNodeLagCollector(stream.NewHub())) {
			ctrlmetrics.Registry.Unregister(c)
		}
	})
	done := make(chan error, 1)
	go func() { done <- c.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("controller did not stop")
		}
	})

	var fams map[string]*metricFamily
	deadline := time.Now().Add(60 * time.Second)
	for {
		fams, err = scrape("http://" + addr + "/metrics")
		// Wait for a computed view and an elected leader.
		if err == nil && fams["bulkhead_controller_compute_seconds"] != nil && fams["leader_election_master_status"] != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("controller metrics incomplete after 60s (err %v, %d families)", err, len(fams))
		}
		time.Sleep(200 * time.Millisecond)
	}
	var ms []metric
	for name, f := range fams {
		ms = append(ms, metric{name, f.labels})
	}
	ms = append(ms, described(t, append(fields(controllers.NewMetrics(nil)), controllers.NewNodeLagCollector(stream.NewHub()))...)...)
	sort.Slice(ms, func(i, j int) bool { return ms[i].name < ms[j].name })
	for _, m := range ms {
		if err := documented(rows, m); err != nil {
			t.Error(err)
		}
	}
}

type metricFamily struct{ labels []string }

// scrape reads a text exposition and returns each family's label names
// (without le and quantile, which belong to histograms and summaries).
func scrape(url string) (map[string]*metricFamily, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s: %s", url, resp.Status, body)
	}
	out := map[string]*metricFamily{}
	types := map[string]string{}
	for _, l := range strings.Split(string(body), "\n") {
		if f := strings.Fields(l); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			types[f[2]] = f[3]
			out[f[2]] = &metricFamily{}
			continue
		}
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		name := l[:strings.IndexAny(l, "{ ")]
		if _, ok := out[name]; !ok {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(name, suffix); ok && (types[base] == "histogram" || types[base] == "summary") {
					name = base
				}
			}
		}
		f, ok := out[name]
		if !ok {
			return nil, fmt.Errorf("sample %q has no TYPE line", l)
		}
		for _, m := range labelRE.FindAllStringSubmatch(l, -1) {
			if m[1] != "le" && m[1] != "quantile" && !slices.Contains(f.labels, m[1]) {
				f.labels = append(f.labels, m[1])
			}
		}
	}
	return out, nil
}

var labelRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"`)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

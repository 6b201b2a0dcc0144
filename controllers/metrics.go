package controllers

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulkhead-dev/bulkhead/internal/stream"
)

// Metrics are the controller's Prometheus metrics (namespace bulkhead,
// subsystem controller).
type Metrics struct {
	ComputeSeconds  prometheus.Histogram
	QueueDepth      prometheus.Gauge
	ConnectedAgents prometheus.Gauge
	StatusWrites    *prometheus.CounterVec
	StatusConflicts prometheus.Counter
	FlowsDropped    prometheus.Counter
}

// NewMetrics creates the metrics and registers them in reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		ComputeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "bulkhead", Subsystem: "controller", Name: "compute_seconds",
			Help: "Time to recompile dirty nodes and publish their policies.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		QueueDepth: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "bulkhead", Subsystem: "controller", Name: "queue_depth",
			Help: "Object changes received and not yet published."}),
		ConnectedAgents: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "bulkhead", Subsystem: "controller", Name: "connected_agents",
			Help: "Open agent watch streams."}),
		StatusWrites: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "bulkhead", Subsystem: "controller", Name: "status_writes_total",
			Help: "Status updates written, by kind."}, []string{"kind"}),
		StatusConflicts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "bulkhead", Subsystem: "controller", Name: "status_conflicts_total",
			Help: "Status updates that conflicted and were retried from a fresh read of the API server."}),
		FlowsDropped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "bulkhead", Subsystem: "controller", Name: "flow_reports_dropped_total",
			Help: "Agent flow reports dropped because the flow pipeline fell a session's queue behind."}),
	}
	if reg != nil {
		reg.MustRegister(m.ComputeSeconds, m.QueueDepth, m.ConnectedAgents, m.StatusWrites, m.StatusConflicts, m.FlowsDropped)
	}
	return m
}

// NodeLagCollector exports per-node lag from a hub at scrape time.
type NodeLagCollector struct {
	Hub  *stream.Hub
	gens *prometheus.Desc
	secs *prometheus.Desc
}

// NewNodeLagCollector returns a collector for hub.
func NewNodeLagCollector(hub *stream.Hub) *NodeLagCollector {
	return &NodeLagCollector{
		Hub: hub,
		gens: prometheus.NewDesc("bulkhead_controller_node_generation_lag", "Published generation minus the generation the node's agent acknowledged.",
			[]string{"node"}, nil),
		secs: prometheus.NewDesc("bulkhead_controller_node_lag_seconds", "Age of the oldest generation the node's agent has not acknowledged; 0 when up to date.",
			[]string{"node"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *NodeLagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.gens; ch <- c.secs }

// Collect implements prometheus.Collector.
func (c *NodeLagCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.Hub.States() {
		ch <- prometheus.MustNewConstMetric(c.gens, prometheus.GaugeValue, float64(s.Generation-min(s.Acked, s.Generation)), s.Node)
		ch <- prometheus.MustNewConstMetric(c.secs, prometheus.GaugeValue, s.LagSeconds, s.Node)
	}
}

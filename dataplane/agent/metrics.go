package agent

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the agent's Prometheus metrics (namespace bulkhead,
// subsystem agent).
type Metrics struct {
	Generation    prometheus.Gauge
	Connected     prometheus.Gauge
	Syncs         *prometheus.CounterVec
	SyncSeconds   prometheus.Histogram
	StaleUpdates  prometheus.Counter
	Reconnects    prometheus.Counter
	LastAppliedTS prometheus.Gauge
	// Flow pipeline.
	FlowRecords      *prometheus.CounterVec
	FlowEdgesDropped prometheus.Counter
	FlowLogErrors    prometheus.Counter
	FlowReports      prometheus.Counter
}

// NewMetrics creates the metrics and registers them in reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Generation: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "bulkhead", Subsystem: "agent", Name: "applied_generation",
			Help: "Generation of the policy last enforced successfully."}),
		Connected: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "bulkhead", Subsystem: "agent", Name: "connected",
			Help: "1 while a watch to a controller is open."}),
		Syncs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "bulkhead", Subsystem: "agent", Name: "syncs_total",
			Help: "Dataplane syncs by trigger (snapshot, delta, resync) and result (ok, error)."}, []string{"trigger", "result"}),
		SyncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "bulkhead", Subsystem: "agent", Name: "sync_seconds",
			Help: "Time a dataplane sync took.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		StaleUpdates: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "bulkhead", Subsystem: "agent", Name: "stale_updates_total",
			Help: "Updates ignored because their generation was not newer than the one held."}),
		Reconnects: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "bulkhead", Subsystem: "agent", Name: "reconnects_total",
			Help: "Watch sessions that ended and were retried."}),
		LastAppliedTS: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "bulkhead", Subsystem: "agent", Name: "last_applied_timestamp_seconds",
			Help: "Unix time of the last successful sync."}),
		FlowRecords: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "bulkhead", Subsystem: "agent", Name: "flow_records_total",
			Help: "Flow records read from the dataplane, by verdict."}, []string{"verdict"}),
		FlowEdgesDropped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "bulkhead", Subsystem: "agent", Name: "flow_edges_dropped_total",
			Help: "Flow records not summarized because the pending edges were at their cap."}),
		FlowLogErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "bulkhead", Subsystem: "agent", Name: "flow_log_errors_total",
			Help: "Flow records that could not be written to the local flow log."}),
		FlowReports: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "bulkhead", Subsystem: "agent", Name: "flow_reports_total",
			Help: "Flow reports sent to the controller."}),
	}
	if reg != nil {
		reg.MustRegister(m.Generation, m.Connected, m.Syncs, m.SyncSeconds, m.StaleUpdates, m.Reconnects, m.LastAppliedTS,
			m.FlowRecords, m.FlowEdgesDropped, m.FlowLogErrors, m.FlowReports)
	}
	return m
}

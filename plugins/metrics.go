package plugins

import "github.com/prometheus/client_golang/prometheus"

// metrics are the engine's Prometheus collectors, labelled by policy (ModuleOptions.Name).
type metrics struct {
	evaluations    *prometheus.CounterVec
	errors         *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	instances      *prometheus.GaugeVec
	instantiations *prometheus.CounterVec
	reloads        *prometheus.CounterVec
	reloadFailing  *prometheus.GaugeVec
	logDropped     *prometheus.CounterVec
	backoffs       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		evaluations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenagent_policy_evaluations_total",
			Help: "Policy evaluations by outcome (allow, deny, error)."}, []string{"policy", "outcome"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenagent_policy_errors_total",
			Help: "Failed policy evaluations by kind (timeout, trap, exit, memory, bad_output, ...); each denies with policy_error."},
			[]string{"policy", "kind"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tokenagent_policy_evaluation_duration_seconds",
			Help:    "Latency of policy evaluations, waiting for an instance included.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 10)}, []string{"policy"}),
		instances: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tokenagent_policy_instances",
			Help: "Live module instances (idle or busy) of the serving module."}, []string{"policy"}),
		instantiations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenagent_policy_instantiations_total",
			Help: "Module instances made, by outcome (ok, error)."}, []string{"policy", "outcome"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenagent_policy_reloads_total",
			Help: "Attempts to swap in a changed module file, by outcome (ok, error)."}, []string{"policy", "outcome"}),
		reloadFailing: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tokenagent_policy_reload_failing",
			Help: "1 while the module file on disk failed to load and the previous module keeps serving."}, []string{"policy"}),
		logDropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenagent_policy_log_lines_dropped_total",
			Help: "Log lines from modules dropped by the rate limit."}, []string{"policy"}),
		backoffs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenagent_policy_backoffs_total",
			Help: "Backoffs started because a module kept failing; its calls are refused meanwhile (errors of kind backoff)."},
			[]string{"policy"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.evaluations, m.errors, m.duration, m.instances,
			m.instantiations, m.reloads, m.reloadFailing, m.logDropped, m.backoffs} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// moduleMetrics are one module's collectors, resolved once so the hot path does no label lookup.
type moduleMetrics struct {
	allow, deny, fail prometheus.Counter
	duration          prometheus.Observer
	instances         prometheus.Gauge
	instOK, instErr   prometheus.Counter
	logDropped        prometheus.Counter
	backoffs          prometheus.Counter
}

func (m *metrics) forPolicy(name string) moduleMetrics {
	return moduleMetrics{
		allow:      m.evaluations.WithLabelValues(name, "allow"),
		deny:       m.evaluations.WithLabelValues(name, "deny"),
		fail:       m.evaluations.WithLabelValues(name, "error"),
		duration:   m.duration.WithLabelValues(name),
		instances:  m.instances.WithLabelValues(name),
		instOK:     m.instantiations.WithLabelValues(name, "ok"),
		instErr:    m.instantiations.WithLabelValues(name, "error"),
		logDropped: m.logDropped.WithLabelValues(name),
		backoffs:   m.backoffs.WithLabelValues(name),
	}
}

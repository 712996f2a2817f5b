package agent

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/agent/token"
)

// Metrics are the agent's Prometheus collectors for checks.
type Metrics struct {
	Duration  *prometheus.HistogramVec
	Decisions *prometheus.CounterVec
	// ShadowDenials counts the denials of sites in shadow mode, let through (SPEC §8).
	ShadowDenials *prometheus.CounterVec

	// bound caches label-bound collectors, so a check does not hash its labels each time.
	bound sync.Map // labelKey -> *boundMetrics
}

type labelKey struct {
	site, kind, decision, reason string
}

type boundMetrics struct {
	duration  prometheus.Observer
	decisions prometheus.Counter
	shadow    prometheus.Counter // nil unless the decision is a shadow denial
}

// NewMetrics creates the check collectors and registers them with reg (nil: not registered).
// A Runtime builds them once per process.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokenagent_check_duration_seconds",
			Help:    "Time to decide one check, by site, credential kind and decision (allow, deny, answer).",
			Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1, .5},
		}, []string{"site", "kind", "decision"}),
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenagent_decisions_total",
			Help: "Checks decided, by site, credential kind, decision and reason (empty when allowed).",
		}, []string{"site", "kind", "decision", "reason"}),
		ShadowDenials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenagent_shadow_denials_total",
			Help: "Requests a site in shadow mode would have denied, by site and reason; they were let through without identity.",
		}, []string{"site", "reason"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.Duration, m.Decisions, m.ShadowDenials} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *Metrics) observe(d *Decision, kind token.Kind, took time.Duration) {
	dec, why := d.outcome()
	k := labelKey{site: d.Site, kind: string(kind), decision: dec, reason: string(why)}
	if k.site == "" {
		k.site = "unknown"
	}
	b, ok := m.bound.Load(k)
	if !ok {
		bm := &boundMetrics{
			duration:  m.Duration.WithLabelValues(k.site, k.kind, k.decision),
			decisions: m.Decisions.WithLabelValues(k.site, k.kind, k.decision, k.reason),
		}
		if d.Shadow != "" {
			bm.shadow = m.ShadowDenials.WithLabelValues(k.site, k.reason)
		}
		b, _ = m.bound.LoadOrStore(k, bm)
	}
	bm := b.(*boundMetrics)
	bm.duration.Observe(took.Seconds())
	bm.decisions.Inc()
	if bm.shadow != nil {
		bm.shadow.Inc()
	}
}

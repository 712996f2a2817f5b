package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/agent/token"
)

// Metrics are the agent's Prometheus collectors for checks.
type Metrics struct {
	Duration  *prometheus.HistogramVec
	Decisions *prometheus.CounterVec

	// bound caches label-bound collectors, so a check does not hash its labels each time.
	bound sync.Map // labelKey -> *boundMetrics
}

type labelKey struct {
	site, kind, decision, reason string
}

type boundMetrics struct {
	duration  prometheus.Observer
	decisions prometheus.Counter
}

// NewMetrics creates the check collectors and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
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
	}
	if reg != nil {
		reg.MustRegister(m.Duration, m.Decisions)
	}
	return m
}

func (m *Metrics) observe(d *Decision, kind token.Kind, took time.Duration) {
	k := labelKey{site: d.Site, kind: string(kind), decision: "deny", reason: string(d.Reason)}
	switch {
	case d.Allowed:
		k.decision = "allow"
	case d.Answered:
		k.decision = "answer"
	}
	if k.site == "" {
		k.site = "unknown"
	}
	b, ok := m.bound.Load(k)
	if !ok {
		b, _ = m.bound.LoadOrStore(k, &boundMetrics{
			duration:  m.Duration.WithLabelValues(k.site, k.kind, k.decision),
			decisions: m.Decisions.WithLabelValues(k.site, k.kind, k.decision, k.reason),
		})
	}
	bm := b.(*boundMetrics)
	bm.duration.Observe(took.Seconds())
	bm.decisions.Inc()
}

// logDenial writes one log line per denial. It never logs a credential: the query, which may
// hold one, is left out of the path.
func (a *Agent) logDenial(req *Request, d *Decision, kind token.Kind) {
	if !a.log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	path, _ := splitPath(req.Path)
	attrs := []slog.Attr{
		slog.String("site", d.Site), slog.String("kind", string(kind)),
		slog.String("method", req.Method), slog.String("path", path),
		slog.Int("status", d.Status), slog.String("reason", string(d.Reason)),
	}
	if d.Answered {
		return
	}
	if d.Cause != nil {
		attrs = append(attrs, slog.String("cause", d.Cause.Error()))
	}
	a.log.LogAttrs(context.Background(), slog.LevelInfo, "denied", attrs...)
}

// TokenHash is a short, non-reversible name for a credential, safe to log: the first 12 hex
// digits of its SHA-256.
func TokenHash(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:6])
}

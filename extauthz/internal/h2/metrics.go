package h2

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what the server does with its connections. A nil *Metrics counts nothing.
type Metrics struct {
	conns    prometheus.Gauge
	accepted prometheus.Counter
	handoffs prometheus.Counter
	abuse    *prometheus.CounterVec
}

// NewMetrics makes the server's collectors and registers them with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		conns: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tokenagent_transport_connections",
			Help: "Open connections of the Check transport."}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenagent_transport_connections_total",
			Help: "Connections the Check transport accepted."}),
		handoffs: prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenagent_transport_handoffs_total",
			Help: "Checks that had to wait (a key-source read, a JWKS fetch, the replay store, the exchange, a slow policy) and handed their connection to a new goroutine."}),
		abuse: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenagent_transport_abuse_closes_total",
			Help: "Connections ended with GOAWAY ENHANCE_YOUR_CALM, by what the peer overdid (ping, settings, reset, empty, priority, unknown, continuation, unread)."},
			[]string{"kind"}),
	}
	if reg != nil {
		reg.MustRegister(m.conns, m.accepted, m.handoffs, m.abuse)
	}
	return m
}

func (m *Metrics) connOpened() {
	if m != nil {
		m.conns.Inc()
		m.accepted.Inc()
	}
}

func (m *Metrics) connClosed() {
	if m != nil {
		m.conns.Dec()
	}
}

func (m *Metrics) handoff() {
	if m != nil {
		m.handoffs.Inc()
	}
}

func (m *Metrics) refused(err error) {
	var ce connError
	if m != nil && errors.As(err, &ce) && ce.kind != "" {
		m.abuse.WithLabelValues(ce.kind).Inc()
	}
}

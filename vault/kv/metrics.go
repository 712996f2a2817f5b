package kv

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/vault"
)

// The states of the tokenagent_vault_auth_state gauge (one is 1, the others 0).
const (
	stateLoggingIn = "logging_in" // a login is under way (or none has been tried yet)
	stateBackoff   = "backoff"    // the last login failed; waiting to retry
	stateLoggedIn  = "logged_in"  // holding a token that is not renewed (no TTL, or not renewable)
	stateRenewing  = "renewing"   // holding a renewable token, renewed by the lifetime watcher
)

var states = []string{stateLoggingIn, stateBackoff, stateLoggedIn, stateRenewing}

// Metrics are a Vault source's Prometheus collectors. Build them once per process
// (NewMetrics) and give them to every Source of the process (Options.Metrics).
type Metrics struct {
	requests      *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	state         *prometheus.GaugeVec
	loginFailures *prometheus.CounterVec
}

// NewMetrics creates the collectors and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenagent_vault_requests_total",
			Help: "Vault requests by operation (read, read_version, metadata, list, write, login, renew) and outcome (ok, not_found, denied, cas_mismatch, error)."},
			[]string{"operation", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tokenagent_vault_request_duration_seconds",
			Help: "Latency of Vault requests by operation.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)},
			[]string{"operation"}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tokenagent_vault_auth_state",
			Help: "The Vault login state: 1 for the current state (logging_in, backoff, logged_in, renewing), 0 for the others."},
			[]string{"state"}),
		loginFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenagent_vault_login_failures_total",
			Help: "Failed Vault logins by auth method."}, []string{"method"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.latency, m.state, m.loginFailures} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("vault metrics: %w", err)
			}
		}
	}
	return m, nil
}

// setState moves the auth state gauge to state. The new state is set before the old one is
// cleared, so a scrape in between never sees no state at all.
func (m *Metrics) setState(state string) {
	m.state.WithLabelValues(state).Set(1)
	for _, s := range states {
		if s != state {
			m.state.WithLabelValues(s).Set(0)
		}
	}
}

// observe counts one request; d 0 records no latency (renewals, timed by the watcher).
func (m *Metrics) observe(op string, err error, d time.Duration) {
	m.requests.WithLabelValues(op, outcome(err)).Inc()
	if d > 0 {
		m.latency.WithLabelValues(op).Observe(d.Seconds())
	}
}

func outcome(err error) string {
	var re *api.ResponseError
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, vault.ErrNotFound):
		return "not_found"
	case errors.Is(err, vault.ErrCASMismatch):
		return "cas_mismatch"
	case errors.As(err, &re) && re.StatusCode == http.StatusForbidden:
		return "denied"
	}
	return "error"
}

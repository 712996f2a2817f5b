package vault

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// StoreMetrics are the key store's Prometheus collectors.
type StoreMetrics struct {
	Hits           prometheus.Counter
	Misses         prometheus.Counter
	Stale          prometheus.Counter
	Evictions      prometheus.Counter
	InvalidRecords prometheus.Counter
	Reads          *prometheus.CounterVec
	ReadSeconds    *prometheus.HistogramVec
	// FailingSince is when the source's reads started failing (Unix seconds), 0 while they
	// succeed; MaxStale is StoreOptions.MaxStale. Together they tell how close the cached keys
	// are to being refused (an alert on time() - FailingSince > 0.75 * MaxStale).
	FailingSince prometheus.Gauge
	MaxStale     prometheus.Gauge
}

// NewStoreMetrics creates the collectors and registers them with reg (nil: not registered).
func NewStoreMetrics(reg prometheus.Registerer) *StoreMetrics {
	m := &StoreMetrics{
		Hits: prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenagent_key_cache_hits_total",
			Help: "Key lookups answered from the cache within the refresh interval."}),
		Misses: prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenagent_key_cache_misses_total",
			Help: "Key lookups that read the key source."}),
		Stale: prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenagent_key_cache_stale_total",
			Help: "Key lookups answered from a record older than the refresh interval because the source was unavailable."}),
		Evictions: prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenagent_key_cache_evictions_total",
			Help: "Records evicted from the key cache."}),
		InvalidRecords: prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenagent_key_invalid_records_total",
			Help: "Key records that break a rule of the layout and are treated as absent."}),
		Reads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenagent_key_source_reads_total",
			Help: "Reads of the key source by outcome (ok, not_found, invalid, error)."}, []string{"source", "outcome"}),
		ReadSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tokenagent_key_source_read_duration_seconds",
			Help: "Latency of key source reads.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"source"}),
		FailingSince: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tokenagent_key_source_failing_since_timestamp_seconds",
			Help: "When the key source's reads started failing (Unix time); 0 while they succeed. Cached keys serve for up to tokenagent_key_max_stale_seconds after it."}),
		MaxStale: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tokenagent_key_max_stale_seconds",
			Help: "keys.max_stale: how long cached keys serve while the key source fails."}),
	}
	if reg != nil {
		reg.MustRegister(m.Hits, m.Misses, m.Stale, m.Evictions, m.InvalidRecords, m.Reads, m.ReadSeconds,
			m.FailingSince, m.MaxStale)
	}
	return m
}

func (m *StoreMetrics) observeRead(source string, err error, d time.Duration) {
	outcome := "ok"
	var inv *InvalidRecordError
	switch {
	case err == nil:
	case errors.Is(err, ErrNotFound):
		outcome = "not_found"
	case errors.As(err, &inv):
		outcome = "invalid"
	default:
		outcome = "error"
	}
	m.Reads.WithLabelValues(source, outcome).Inc()
	m.ReadSeconds.WithLabelValues(source).Observe(d.Seconds())
}

// Package fleet holds what the agents of a fleet share through Redis: the memory of single-use
// Server API Tokens (ReplayStore, SPEC §3.2, §8 replay.store: redis): a token accepted by one
// agent is refused (replayed_token) by all the others for the rest of its window.
//
// Each first use is one atomic SET key 1 NX PX <the token's remaining window> (followed by WAIT
// 1 when the master has replicas: durable.go), keyed by site, key and the signature (lower-case
// hex of the decoded bytes), under a prefix:
//
//	tokenagent:replay:docs:k1:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//
// # Notes
//
//   - Fail closed: a call that does not answer within the budget (50 ms), or fails, is an
//     error, and the verifier refuses the token with keys_unavailable (503). Only sites with
//     server_token_single_use ask the store; no other site is touched.
//   - The verifier asks only after the signature, the key's state, the window and the user
//     restriction passed: a forged or expired token never writes to Redis.
//   - NewReplayStore dials nothing and starts no goroutine; connections are made on first use
//     and pooled. Close releases them.
//   - An address with commas is a list of Redis Cluster seed nodes (go-redis's cluster client).
package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault/blocking"
)

// DefaultBudget is how long one call to Redis may take (SPEC §8: 50 ms).
const DefaultBudget = 50 * time.Millisecond

// ReplayOptions configure a ReplayStore.
type ReplayOptions struct {
	// Redis is the fleet's Redis (config replay.redis).
	Redis RedisOptions
	// Budget bounds each call (default DefaultBudget).
	Budget time.Duration
	// Registerer receives the store's metrics (nil: none).
	Registerer prometheus.Registerer
	// Logger receives the store's failures, at most one line every 10 s (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock the windows are measured with (default time.Now).
	Now func() time.Time
}

// ReplayStore is the shared replay store.
type ReplayStore struct {
	c       redis.UniversalClient
	addr    string
	prefix  string
	budget  time.Duration
	now     func() time.Time
	log     *slog.Logger
	results *prometheus.CounterVec
	seconds prometheus.Observer

	firstUse, replayed, failed prometheus.Counter
	replicas                   replicaCounts

	lastOK  atomic.Int64 // unix nanos of the last call that Redis answered
	mu      sync.Mutex
	failing error // the last call's failure; nil once a call succeeds
	since   time.Time
	logged  time.Time
}

var _ token.ReplayStore = (*ReplayStore)(nil)

// NewReplayStore returns a store for opts. It checks the settings and that the password file
// can be read; it does not connect.
func NewReplayStore(opts ReplayOptions) (*ReplayStore, error) {
	if opts.Budget <= 0 {
		opts.Budget = DefaultBudget
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c, err := opts.Redis.client("replay.redis", clientTimeouts{call: opts.Budget})
	if err != nil {
		return nil, err
	}
	r := &ReplayStore{c: c, addr: opts.Redis.Address, prefix: opts.Redis.KeyPrefix + "replay:", budget: opts.Budget,
		now: opts.Now, log: opts.Logger.With("component", "replay", "redis", opts.Redis.Address)}
	r.results = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenagent_replay_store_requests_total",
		Help: "Calls to the shared replay store (Redis) by result: first_use, replayed, error (the token was refused with keys_unavailable)."},
		[]string{"result"})
	hist := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tokenagent_replay_store_request_duration_seconds",
		Help: "Latency of calls to the shared replay store (Redis).", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 12)})
	r.seconds = hist
	r.firstUse, r.replayed, r.failed = r.results.WithLabelValues("first_use"), r.results.WithLabelValues("replayed"),
		r.results.WithLabelValues("error")
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{r.results, hist} {
			if err := opts.Registerer.Register(c); err != nil {
				r.c.Close()
				return nil, fmt.Errorf("replay metrics: %w", err)
			}
		}
	}
	return r, nil
}

// Key is the Redis key of a token: the prefix, "replay:", the site, the key name and the
// signature in lower-case hex (one spelling per signature, whatever case the token used).
func (r *ReplayStore) Key(site, key, sigHex string) string {
	return r.prefix + site + ":" + key + ":" + strings.ToLower(sigHex)
}

// FirstUse implements token.ReplayStore: SET NX with the token's remaining window as expiry.
func (r *ReplayStore) FirstUse(ctx context.Context, site, key, sigHex string, expires time.Time) (bool, error) {
	ttl := expires.Sub(r.now())
	if ttl <= 0 {
		return false, nil // the window is over: nothing to remember (the verifier refused it already)
	}
	ttl = max(ttl.Truncate(time.Millisecond), time.Millisecond)
	blocking.Ahead(ctx) // a round trip to Redis: the check's connection goes on without it
	ctx, cancel := context.WithTimeout(ctx, r.budget)
	defer cancel()
	start := time.Now()
	var cmd *redis.BoolCmd
	k := r.Key(site, key, sigHex)
	err := durable(ctx, r.c, &r.replicas, k, func(p redis.Pipeliner) { cmd = p.SetNX(ctx, k, 1, ttl) })
	set := cmd != nil && cmd.Val()
	if err == nil && cmd != nil {
		err = cmd.Err()
	}
	r.seconds.Observe(time.Since(start).Seconds())
	if err != nil {
		r.failed.Inc()
		r.fail(err)
		return false, &UnavailableError{Store: "replay store", Addr: r.addr, Err: err}
	}
	r.ok()
	if set {
		r.firstUse.Inc()
	} else {
		r.replayed.Inc()
	}
	return set, nil
}

// UnavailableError is a call a store could not answer in its budget.
type UnavailableError struct {
	// Store names the store: "replay store" or "revocation list".
	Store string
	Addr  string
	Err   error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("%s redis %s: %v", e.Store, e.Addr, e.Err)
}

func (e *UnavailableError) Unwrap() error { return e.Err }

func (r *ReplayStore) ok() {
	r.lastOK.Store(time.Now().UnixNano())
	r.mu.Lock()
	if r.failing != nil {
		r.log.Info("replay store answers again")
	}
	r.failing = nil
	r.mu.Unlock()
}

func (r *ReplayStore) fail(err error) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failing == nil {
		r.since = now
	}
	r.failing = err
	if now.Sub(r.logged) >= 10*time.Second {
		r.logged = now
		r.log.Warn("replay store unavailable; single-use tokens are refused (keys_unavailable)", "error", err.Error())
	}
}

// Warnings reports a store that does not answer, for /readyz. With no successful call in the
// last 5 s it asks Redis (PING, within the budget) first, so an idle agent reports too.
func (r *ReplayStore) Warnings() []string {
	if time.Since(time.Unix(0, r.lastOK.Load())) > 5*time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), r.budget)
		err := r.c.Ping(ctx).Err()
		cancel()
		if err != nil {
			r.fail(err)
		} else {
			r.ok()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failing == nil {
		return nil
	}
	return []string{fmt.Sprintf("replay store redis %s: failing since %s; single-use tokens are refused with keys_unavailable: %v",
		r.addr, r.since.UTC().Format(time.RFC3339), r.failing)}
}

// Close releases the connections.
func (r *ReplayStore) Close() error { return r.c.Close() }

package jwks

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/blocking"
	"github.com/tokenagent/tokenagent/vault/spans"
)

// Options configure a Cache. The zero value of each field takes its default.
type Options struct {
	// RefetchInterval is the shortest time between two fetches of one jwks_uri, counted from
	// the start of the previous attempt whether it succeeded or not (default 30 s, SPEC §3.4).
	RefetchInterval time.Duration
	// MaxAge is how long a fetched set is used before its next use fetches it again in the
	// background, so keys an issuer withdrew stop verifying (default 1 h). The old set keeps
	// serving while the new one is fetched, and when the fetch fails.
	MaxAge time.Duration
	// Timeout bounds one fetch, connection to last byte (default 10 s).
	Timeout time.Duration
	// MaxBytes caps the size of a fetched key set (default 1 MiB).
	MaxBytes int64
	// Client does the fetches. Default: a client with Timeout whose redirects (at most 3) must
	// each pass vault.CheckJWKSURI. A client given here gets that redirect check when it has
	// none of its own.
	Client *http.Client
	// Now is the clock the refetch limit and MaxAge are measured with (default time.Now).
	Now func() time.Time
	// Logger receives fetch failures and recoveries (default slog.Default()).
	Logger *slog.Logger
	// Metrics receives the fetch counters (default: unregistered collectors).
	Metrics *Metrics
}

// Defaults of Options.
const (
	DefaultRefetchInterval = 30 * time.Second
	DefaultMaxAge          = time.Hour
	DefaultTimeout         = 10 * time.Second
	DefaultMaxBytes        = 1 << 20
)

// Metrics are the Prometheus collectors of key set fetches.
type Metrics struct {
	// Fetches counts fetches by issuer host and outcome: ok, error (transport), status (not
	// 200), too_large, invalid (not a key set, or no usable key).
	Fetches *prometheus.CounterVec
	// FetchSeconds is the latency of fetches by issuer host.
	FetchSeconds *prometheus.HistogramVec
}

// NewMetrics creates the collectors and registers them with reg (nil: not registered). Build
// them once per process, with the Cache they count for.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Fetches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenagent_jwks_fetches_total",
			Help: "Fetches of issuers' jwks_uri by host and outcome (ok, error, status, too_large, invalid)."},
			[]string{"host", "outcome"}),
		FetchSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tokenagent_jwks_fetch_duration_seconds",
			Help: "Latency of jwks_uri fetches.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}, []string{"host"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.Fetches, m.FetchSeconds} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// Cache holds parsed key sets: inline sets by their JSON, remote sets by their URI.
//
// # Notes
//
//   - Safe for concurrent use. Create it with NewCache.
//   - A remote set is fetched on first use (Remote.Keys), again on an unknown kid
//     (Remote.Refetch, at most once per RefetchInterval per URI, one fetch shared by every
//     caller), and in the background once older than MaxAge. A failed fetch keeps the old set
//     serving.
//   - Two issuers with the same jwks_uri share one Remote (and its refetch limit).
type Cache struct {
	opts   Options
	client *http.Client
	log    *slog.Logger
	m      *Metrics
	flight singleflight.Group

	mu      sync.Mutex
	remotes map[string]*Remote

	inlineMu sync.Mutex
	inline   map[[sha256.Size]byte]*Set
}

// maxInline bounds the inline set memo; it is emptied when full (key records are few).
const maxInline = 4096

// NewCache returns a Cache with opts.
func NewCache(opts Options) *Cache {
	if opts.RefetchInterval <= 0 {
		opts.RefetchInterval = DefaultRefetchInterval
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Metrics == nil {
		opts.Metrics, _ = NewMetrics(nil) // nil registry: cannot fail
	}
	client := opts.Client
	if client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxResponseHeaderBytes = 64 << 10
		client = &http.Client{Transport: t, Timeout: opts.Timeout, CheckRedirect: checkRedirect}
	} else if client.CheckRedirect == nil {
		c := *client
		c.CheckRedirect = checkRedirect
		client = &c
	}
	return &Cache{opts: opts, client: client, log: opts.Logger, m: opts.Metrics,
		remotes: map[string]*Remote{}, inline: map[[sha256.Size]byte]*Set{}}
}

func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 3 {
		return errors.New("too many redirects")
	}
	return vault.CheckJWKSURI(req.URL.String())
}

// RefetchInterval is the cache's shortest time between two fetches of one URI.
func (c *Cache) RefetchInterval() time.Duration { return c.opts.RefetchInterval }

// Inline returns the parsed set of a JWKS stored in a key record. Each distinct JSON is parsed
// once; later calls cost a SHA-256 of raw and a map read, so callers keep the result per record
// rather than calling this per request.
func (c *Cache) Inline(raw []byte) (*Set, error) {
	sum := sha256.Sum256(raw)
	c.inlineMu.Lock()
	s, ok := c.inline[sum]
	c.inlineMu.Unlock()
	if ok {
		return s, nil
	}
	s, err := Parse(raw, ParseOptions{})
	if err != nil {
		return nil, err
	}
	c.inlineMu.Lock()
	if len(c.inline) >= maxInline {
		clear(c.inline)
	}
	c.inline[sum] = s
	c.inlineMu.Unlock()
	return s, nil
}

// Remote returns the handle of the key set at uri, creating it (without fetching) on first
// use. uri must pass vault.CheckJWKSURI, or every fetch fails.
func (c *Cache) Remote(uri string) *Remote {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.remotes[uri]
	if !ok {
		host := "invalid"
		if u, err := url.Parse(uri); err == nil && u.Host != "" {
			host = u.Host
		}
		r = &Remote{c: c, uri: uri, printable: vault.RedactURL(uri), host: host}
		c.remotes[uri] = r
	}
	r.lastUsed.Store(c.opts.Now().UnixNano())
	return r
}

// Warnings lists remote key sets whose last fetch failed (one line each, sorted), leaving out
// those nobody asked for in the last MaxAge. For /readyz.
func (c *Cache) Warnings() []string {
	now := c.opts.Now()
	c.mu.Lock()
	remotes := make([]*Remote, 0, len(c.remotes))
	for _, r := range c.remotes {
		remotes = append(remotes, r)
	}
	c.mu.Unlock()
	var out []string
	for _, r := range remotes {
		if now.Sub(time.Unix(0, r.lastUsed.Load())) > c.opts.MaxAge {
			continue
		}
		r.mu.Lock()
		err, fetched := r.lastErr, r.fetched
		r.mu.Unlock()
		switch {
		case err == nil:
		case fetched.IsZero():
			out = append(out, fmt.Sprintf("jwks_uri %s: keys could never be fetched: %v", r.printable, err))
		default:
			out = append(out, fmt.Sprintf("jwks_uri %s: last fetch failed (serving keys fetched %s): %v",
				r.printable, fetched.UTC().Format(time.RFC3339), err))
		}
	}
	sort.Strings(out)
	return out
}

// Remote is the key set of one jwks_uri.
type Remote struct {
	c         *Cache
	uri       string
	printable string // uri as it may be printed (vault.RedactURL): logs, warnings, errors
	host      string

	set        atomic.Pointer[Set]
	fetchedAt  atomic.Int64 // unix nanos of the last successful fetch
	lastUsed   atomic.Int64 // unix nanos
	refreshing atomic.Bool

	mu          sync.Mutex
	lastAttempt time.Time
	fetched     time.Time
	lastErr     error
}

// URI is the remote set's address as it may be printed: its user info and query values
// redacted (vault.RedactURL).
func (r *Remote) URI() string { return r.printable }

// Current returns the set last fetched, nil when none ever was. It never fetches.
func (r *Remote) Current() *Set { return r.set.Load() }

// UnavailableError reports a remote key set that could never be fetched.
type UnavailableError struct {
	// URI is the set's address as it may be printed (vault.RedactURL).
	URI string
	// RetryAfter is when the next fetch may be tried.
	RetryAfter time.Duration
	// Err is the last fetch's failure.
	Err error
}

// Error implements error.
func (e *UnavailableError) Error() string {
	return fmt.Sprintf("keys of %s are unavailable: %v", e.URI, e.Err)
}

// Unwrap returns the last fetch's failure.
func (e *UnavailableError) Unwrap() error { return e.Err }

// Keys returns the remote set, fetching it first (and waiting, at most until ctx ends) when
// it was never fetched. It fails with *UnavailableError only when no set was ever fetched. A
// set older than MaxAge is returned as it is while a fresh copy is fetched in the background.
func (r *Remote) Keys(ctx context.Context) (*Set, error) {
	now := r.c.opts.Now()
	r.lastUsed.Store(now.UnixNano())
	if s := r.set.Load(); s != nil {
		if now.Sub(time.Unix(0, r.fetchedAt.Load())) > r.c.opts.MaxAge && r.refreshing.CompareAndSwap(false, true) {
			go func() {
				defer r.refreshing.Store(false)
				_, _ = r.fetchLimited(context.Background())
			}()
		}
		return s, nil
	}
	return r.fetchLimited(ctx)
}

// Refetch asks for a fresh copy of the set because a token named a kid that seen (the set the
// caller looked in) lacks. When another caller already replaced seen, the newer set is
// returned at once. Otherwise the set is fetched unless a fetch started less than
// RefetchInterval ago; concurrent callers share one fetch. A failed fetch keeps the old set:
// the error is *UnavailableError only when no set was ever fetched.
func (r *Remote) Refetch(ctx context.Context, seen *Set) (*Set, error) {
	if cur := r.set.Load(); cur != nil && cur != seen {
		return cur, nil
	}
	return r.fetchLimited(ctx)
}

// errLimited marks an attempt refused by the refetch limit.
var errLimited = errors.New("fetched less than the refetch interval ago")

// fetchLimited fetches the set unless the refetch limit forbids it, sharing one fetch among
// concurrent callers, and returns the current set afterwards.
func (r *Remote) fetchLimited(ctx context.Context) (*Set, error) {
	blocking.Ahead(ctx) // a fetch, or a wait for one: the check's connection goes on without it
	ch := r.c.flight.DoChan(r.uri, func() (any, error) {
		now := r.c.opts.Now()
		r.mu.Lock()
		if !r.lastAttempt.IsZero() && now.Sub(r.lastAttempt) < r.c.opts.RefetchInterval {
			r.mu.Unlock()
			return nil, errLimited
		}
		r.lastAttempt = now
		r.mu.Unlock()
		set, err := r.fetch(ctx)
		r.mu.Lock()
		if err != nil {
			if r.lastErr == nil {
				r.c.log.Warn("jwks fetch failed; older keys keep serving", "jwks_uri", r.printable, "error", err.Error())
			}
			r.lastErr = err
		} else {
			if r.lastErr != nil {
				r.c.log.Info("jwks fetch recovered", "jwks_uri", r.printable)
			}
			r.lastErr, r.fetched = nil, now
			r.fetchedAt.Store(now.UnixNano())
			r.set.Store(set)
		}
		r.mu.Unlock()
		return set, err
	})
	select {
	case <-ch:
	case <-ctx.Done():
	}
	if s := r.set.Load(); s != nil {
		return s, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	err := r.lastErr
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = errors.New("not fetched yet")
	}
	wait := r.lastAttempt.Add(r.c.opts.RefetchInterval).Sub(r.c.opts.Now())
	return nil, &UnavailableError{URI: r.printable, RetryAfter: max(wait, time.Second), Err: err}
}

// fetch reads and parses the set once. ctx is the first waiting caller's, for its span only:
// the fetch runs to its own timeout whoever stops waiting.
func (r *Remote) fetch(ctx context.Context) (*Set, error) {
	_, span := spans.Start(ctx, spans.JWKSFetch, spans.Server.String(r.host))
	start := time.Now()
	set, outcome, err := r.get()
	spans.End(span, outcome, err != nil)
	r.c.m.Fetches.WithLabelValues(r.host, outcome).Inc()
	r.c.m.FetchSeconds.WithLabelValues(r.host).Observe(time.Since(start).Seconds())
	return set, err
}

func (r *Remote) get() (*Set, string, error) {
	if err := vault.CheckJWKSURI(r.uri); err != nil {
		return nil, "invalid", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.c.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.uri, nil)
	if err != nil {
		return nil, "invalid", vault.RedactURLError(err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := r.c.client.Do(req)
	if err != nil {
		return nil, "error", vault.RedactURLError(err) // Go's text masks a password, not the query
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, "status", fmt.Errorf("HTTP status %s", strconv.Itoa(resp.StatusCode))
	}
	if resp.ContentLength > r.c.opts.MaxBytes {
		return nil, "too_large", fmt.Errorf("key set of %d bytes is over the %d byte limit", resp.ContentLength, r.c.opts.MaxBytes)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, r.c.opts.MaxBytes+1))
	if err != nil {
		return nil, "error", err
	}
	if int64(len(body)) > r.c.opts.MaxBytes {
		return nil, "too_large", fmt.Errorf("key set is over the %d byte limit", r.c.opts.MaxBytes)
	}
	set, err := Parse(body, ParseOptions{Fetched: true})
	if err != nil {
		return nil, "invalid", err
	}
	if set.Len() == 0 {
		msg := "the key set holds no usable key"
		if len(set.Problems) > 0 {
			msg += ": " + set.Problems[0]
		}
		return nil, "invalid", errors.New(msg)
	}
	for _, p := range set.Problems {
		r.c.log.Debug("jwks key left out", "jwks_uri", r.printable, "problem", p)
	}
	return set, "ok", nil
}

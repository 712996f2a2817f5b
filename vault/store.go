package vault

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"golang.org/x/sync/singleflight"

	"github.com/tokenagent/tokenagent/vault/blocking"
	"github.com/tokenagent/tokenagent/vault/spans"
)

// StoreOptions configure a Store. The zero value of each field takes the default of SPEC §6.
type StoreOptions struct {
	// Refresh is how long a record read from the source is used before it is read again
	// (default 30 s). A changed, disabled or deleted record takes effect within it; an unknown
	// record is remembered as unknown for at most this long.
	Refresh time.Duration
	// MaxStale is how long cached records keep serving while the source cannot be read
	// (default 1 h).
	MaxStale time.Duration
	// MaxCost is the cache's capacity in bytes (default 64 MiB).
	MaxCost int64
	// ReadTimeout bounds one source read (default 5 s).
	ReadTimeout time.Duration
	// StaleWait bounds how long a lookup of a cached record past its refresh interval waits
	// for the source to answer (default 100 ms). A source slower than that is treated as down
	// for the lookup: the cached record serves (stale, within MaxStale) while the read goes on
	// in the background, so a hung or slow source never holds a check of a cached key for
	// longer (Envoy's ext_authz timeout is 200 ms by default).
	StaleWait time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives reports of invalid records and source failures (default slog.Default()).
	Logger *slog.Logger
	// Metrics receives the store's counters (default: none).
	Metrics *StoreMetrics
}

// Store reads records through a Source and keeps them in a ristretto cache, so a verifier's
// lookup is a map read. It refreshes a record in the background once it is half its refresh
// interval old, reads it again (waiting up to StaleWait) once the interval has passed, serves
// it stale for up to MaxStale while the source is down or slow, and shares one source read
// among concurrent misses of the same record.
//
// # Notes
//
//   - Safe for concurrent use.
//   - Errors: ErrNotFound for an absent (or invalid) record; an *UnavailableError when the
//     source cannot answer and nothing usable is cached.
type Store struct {
	src      Source
	opts     StoreOptions
	cache    *ristretto.Cache[uint64, *entry]
	seed     maphash.Seed
	flight   singleflight.Group
	log      *slog.Logger
	m        *StoreMetrics
	downTill atomic.Int64 // unix nanos (on the store's clock) until which the source is taken to be down

	// closeMu orders cache writes before Close: ristretto must not be written to (Set, Wait)
	// once closed, and background refreshes may still be finishing when the Store is closed.
	closeMu sync.RWMutex
	closed  bool

	warnMu   sync.Mutex
	warnings map[string]string // path -> problem

	failMu   sync.Mutex
	failing  error     // the last source read's failure, nil once a read succeeds
	failedAt time.Time // when failing started
}

type entry struct {
	ref        ref
	value      any
	err        error // nil or ErrNotFound
	fetched    time.Time
	refreshing atomic.Bool
	// slow is set while a read of this record outlived a lookup's StaleWait: later lookups
	// serve the record stale at once instead of waiting for the same read again.
	slow atomic.Bool
}

// NewStore returns a Store reading from src.
func NewStore(src Source, opts StoreOptions) (*Store, error) {
	if opts.Refresh <= 0 {
		opts.Refresh = 30 * time.Second
	}
	if opts.MaxStale <= 0 {
		opts.MaxStale = time.Hour
	}
	if opts.MaxCost <= 0 {
		opts.MaxCost = 64 << 20
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = 5 * time.Second
	}
	if opts.StaleWait <= 0 {
		opts.StaleWait = 100 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Metrics == nil {
		opts.Metrics = NewStoreMetrics(nil)
	}
	s := &Store{src: src, opts: opts, seed: maphash.MakeSeed(), log: opts.Logger, m: opts.Metrics, warnings: map[string]string{}}
	s.m.MaxStale.Set(opts.MaxStale.Seconds())
	c, err := ristretto.NewCache(&ristretto.Config[uint64, *entry]{
		NumCounters: 1 << 20,
		MaxCost:     opts.MaxCost,
		BufferItems: 64,
		OnEvict:     func(*ristretto.Item[*entry]) { s.m.Evictions.Inc() },
	})
	if err != nil {
		return nil, fmt.Errorf("key cache: %w", err)
	}
	s.cache = c
	return s, nil
}

// Close stops the cache's goroutines. Reads still in flight finish without caching; lookups
// after Close read the source every time.
func (s *Store) Close() {
	s.closeMu.Lock()
	s.closed = true
	s.closeMu.Unlock()
	s.cache.Close()
}

// Source is the backend the store reads.
func (s *Store) Source() Source { return s.src }

// Refresh is the store's refresh interval.
func (s *Store) Refresh() time.Duration { return s.opts.Refresh }

// Ready reports whether the source has answered.
func (s *Store) Ready() error { return s.src.Ready() }

// Warnings lists the problems that do not stop serving, sorted: invalid records, and a key
// source whose reads fail (cached records serve meanwhile, for up to MaxStale).
func (s *Store) Warnings() []string {
	s.warnMu.Lock()
	out := make([]string, 0, len(s.warnings)+1)
	for _, w := range s.warnings {
		out = append(out, w)
	}
	s.warnMu.Unlock()
	s.failMu.Lock()
	if s.failing != nil {
		out = append(out, fmt.Sprintf("key source %s: reads failing since %s (cached keys serve for up to %s; keys not cached are refused with keys_unavailable): %v",
			s.src.Name(), s.failedAt.UTC().Format(time.RFC3339), s.opts.MaxStale, s.failing))
	}
	s.failMu.Unlock()
	sort.Strings(out)
	return out
}

// noteRead records whether the last source read failed, for Warnings.
func (s *Store) noteRead(err error) {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	switch {
	case err != nil && s.failing == nil:
		s.failedAt = time.Now()
		s.m.FailingSince.Set(float64(s.failedAt.UnixNano()) / 1e9)
	case err == nil && s.failing != nil:
		s.m.FailingSince.Set(0)
	}
	s.failing = err
}

func (s *Store) noteInvalid(path string, err error) {
	var inv *InvalidRecordError
	s.warnMu.Lock()
	defer s.warnMu.Unlock()
	if errors.As(err, &inv) {
		if _, seen := s.warnings[path]; !seen {
			s.log.Warn("invalid key record treated as absent", "path", path, "problem", err.Error())
			s.m.InvalidRecords.Inc()
		}
		s.warnings[path] = err.Error()
		return
	}
	delete(s.warnings, path)
}

// ref names one cached record: its kind, site and (for keyed kinds) name.
type ref struct {
	kind  byte
	site  string
	name  string
	grace time.Duration // Auth Token keys only: how long replaced generations still verify
}

// hash is the record's cache key: a seeded maphash, so names an attacker picks cannot be made
// to collide. The entry keeps the full ref and a hit is checked against it, so a collision is
// a miss, never a wrong record.
func (r ref) hash(seed maphash.Seed) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	h.WriteByte(r.kind)
	h.WriteString(r.site)
	h.WriteByte(0)
	h.WriteString(r.name)
	return h.Sum64()
}

func (r ref) path() string {
	switch r.kind {
	case kindAuthToken:
		return SitePath(r.site, "authtoken")
	case kindServer:
		return SitePath(r.site, "server-tokens", r.name)
	case kindBrowser:
		return SitePath(r.site, "browser-tokens", r.name)
	case kindBrowserSet:
		return SitePath(r.site, "browser-tokens")
	case kindOAuth:
		return SitePath(r.site, "oauth")
	case kindIssuers:
		return SitePath(r.site, "issuers")
	case kindIdPs:
		return SitePath(r.site, "idps")
	case kindLegacy:
		return SitePath(r.site, "legacy")
	}
	panic("vault: unknown record kind")
}

// get is the cache protocol shared by every record kind. A hit allocates nothing.
func (s *Store) get(ctx context.Context, r ref) (any, error) {
	now := s.opts.Now()
	h := r.hash(s.seed)
	e, ok := s.cache.Get(h)
	if ok && (e.ref.kind != r.kind || e.ref.site != r.site || e.ref.name != r.name) {
		ok = false // a hash collision: treat as a miss (the entry is replaced on load)
	}
	if ok {
		age := now.Sub(e.fetched)
		if age < s.opts.Refresh {
			s.m.Hits.Inc()
			if age > s.opts.Refresh/2 && e.refreshing.CompareAndSwap(false, true) {
				go s.refreshInBackground(h, e)
			}
			return e.value, e.err
		}
		// Past its refresh interval: read again, waiting at most StaleWait, unless the source
		// is known to be down or this record's last read is still running after a lookup gave
		// up on it; then serve stale without waiting.
		if !s.sourceDown(now) && !e.slow.Load() {
			blocking.Ahead(ctx) // a source read: the check's connection goes on without it
			ne, err := s.loadWithin(ctx, h, e)
			if err == nil {
				s.m.Misses.Inc()
				return ne.value, ne.err
			}
		} else if e.refreshing.CompareAndSwap(false, true) {
			go s.refreshInBackground(h, e)
		}
		if age < s.opts.MaxStale {
			s.m.Stale.Inc()
			return e.value, e.err
		}
		return nil, unavailable(fmt.Errorf("cached record older than max_stale and source unavailable"))
	}
	s.m.Misses.Inc()
	if s.sourceDown(now) {
		return nil, unavailable(fmt.Errorf("source %s is unavailable", s.src.Name()))
	}
	r.site, r.name = strings.Clone(r.site), strings.Clone(r.name)
	blocking.Ahead(ctx)
	ne, err := s.load(ctx, h, r)
	if err != nil {
		return nil, unavailable(err)
	}
	return ne.value, ne.err
}

func (s *Store) refreshInBackground(h uint64, old *entry) {
	defer old.refreshing.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.ReadTimeout)
	defer cancel()
	_, _ = s.load(ctx, h, old.ref)
}

// errStaleWait reports a read that outlived a lookup's StaleWait (it goes on in the background).
var errStaleWait = errors.New("key source slower than the stale wait")

// loadWithin reads the record of the cached entry e again, waiting at most StaleWait. When the
// read takes longer it goes on in the background (and is cached when it ends), e is marked
// slow until then, and loadWithin returns errStaleWait.
func (s *Store) loadWithin(ctx context.Context, h uint64, e *entry) (*entry, error) {
	ch := s.startLoad(ctx, h, e.ref)
	return awaitLoad(ctx, ch, s.opts.StaleWait, func() error {
		if e.slow.CompareAndSwap(false, true) {
			go func() {
				<-ch
				e.slow.Store(false)
			}()
		}
		return errStaleWait
	})
}

// load reads one record through singleflight and caches the result. It returns an error only
// when the source failed; an absent record is a cached entry with err ErrNotFound. It waits at
// most ReadTimeout, even for a source that does not honour its context (a key file on a hung
// network file system).
func (s *Store) load(ctx context.Context, h uint64, r ref) (*entry, error) {
	return awaitLoad(ctx, s.startLoad(ctx, h, r), s.opts.ReadTimeout, func() error {
		return fmt.Errorf("key source %s: no answer within %s", s.src.Name(), s.opts.ReadTimeout)
	})
}

// awaitLoad waits for the read ch, at most until ctx ends or wait has passed (then the error of
// late; the read goes on and is cached when it ends).
func awaitLoad(ctx context.Context, ch <-chan singleflight.Result, wait time.Duration, late func() error) (*entry, error) {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case res := <-ch:
		return loaded(res)
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, late()
	}
}

func loaded(res singleflight.Result) (*entry, error) {
	if res.Err != nil {
		return nil, res.Err
	}
	return res.Val.(*entry), nil
}

// startLoad starts (or joins) the one read of r, which runs to its end (or ReadTimeout) even
// when every caller stops waiting, and caches what it read.
func (s *Store) startLoad(ctx context.Context, h uint64, r ref) <-chan singleflight.Result {
	path := r.path()
	return s.flight.DoChan(path, func() (any, error) {
		// A flight that ended between this caller's cache miss and now has cached the record:
		// use it, so that concurrent misses of one record share one source read. (An entry
		// younger than half the refresh interval is one a refresh would not replace either.)
		if e, ok := s.cache.Get(h); ok && e.ref.kind == r.kind && e.ref.site == r.site && e.ref.name == r.name &&
			s.opts.Now().Sub(e.fetched) < s.opts.Refresh/2 {
			return e, nil
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.ReadTimeout)
		defer cancel()
		rctx, span := spans.Start(rctx, spans.KeyRead, spans.Source.String(s.src.Name()), spans.Path.String(path))
		// The entry's age counts from before the read: a change written while the read was
		// under way must still show within the refresh interval.
		fetched := s.opts.Now()
		start := time.Now()
		v, err := s.read(rctx, r, path)
		s.m.observeRead(s.src.Name(), err, time.Since(start))
		var inv *InvalidRecordError
		switch {
		case err == nil:
			spans.End(span, "ok", false)
			s.noteInvalid(path, nil)
		case errors.Is(err, ErrNotFound):
			spans.End(span, "not_found", false)
			s.noteInvalid(path, nil)
			v, err = nil, ErrNotFound
		case errors.As(err, &inv):
			spans.End(span, "invalid", false)
			s.noteInvalid(path, err)
			v, err = nil, ErrNotFound
		default:
			spans.End(span, "error", true)
			// A source that has not logged in yet is not down: don't hold later reads back
			// (the first one after the login must go through at once).
			if s.src.Ready() == nil {
				s.downTill.Store(s.opts.Now().Add(time.Second).UnixNano())
			}
			err = RedactURLError(err) // a source's HTTP client prints the URL it read
			s.noteRead(err)
			s.log.Warn("key source read failed", "source", s.src.Name(), "path", path, "error", err.Error())
			return nil, err
		}
		s.downTill.Store(0)
		s.noteRead(nil)
		e := &entry{ref: r, value: v, err: err, fetched: fetched}
		s.closeMu.RLock()
		if !s.closed {
			// No ristretto TTL: get checks the entry's age itself (and a TTL would cost a
			// second clock read on every hit); the cost bound evicts what is no longer used.
			s.cache.Set(h, e, costOf(path, v))
			s.cache.Wait()
		}
		s.closeMu.RUnlock()
		return e, nil
	})
}

func (s *Store) sourceDown(now time.Time) bool {
	return now.UnixNano() < s.downTill.Load()
}

// retryAfter is what a client is told to wait before retrying a lookup that found the source
// unavailable.
const retryAfter = 5 * time.Second

func unavailable(cause error) *UnavailableError {
	return &UnavailableError{Cause: cause, RetryAfter: retryAfter}
}

// costOf estimates the bytes an entry holds, so the cache's capacity is real memory.
func costOf(key string, v any) int64 {
	n := int64(160 + len(key))
	switch r := v.(type) {
	case *AuthTokenKeys:
		n += int64(len(r.Generations)) * 160
	case *ServerKey:
		n += int64(200 + len(r.Name) + len(r.RestrictedUser) + r.Secret.Len())
	case *BrowserKey:
		n += int64(64 + len(r.Name))
		for _, o := range r.Origins {
			n += int64(16 + len(o))
		}
	case *BrowserKeySet:
		for _, k := range r.Keys {
			n += costOf(k.Name, k)
		}
	case *Issuer:
		n += int64(128 + len(r.Issuer) + len(r.Audience) + len(r.JWKS) + len(r.JWKSURI))
	case []*Issuer:
		for _, i := range r {
			n += costOf(i.Name, i)
		}
	case *IdP:
		n += int64(128 + len(r.Issuer) + len(r.ClientID) + len(r.JWKS) + len(r.JWKSURI))
	case []*IdP:
		for _, i := range r {
			n += costOf(i.Name, i)
		}
	case *Legacy:
		n += int64(64 + r.APIKey.Len())
	}
	return n
}

// The record kinds.
const (
	kindAuthToken  = 'a'
	kindServer     = 's'
	kindBrowser    = 'b'
	kindBrowserSet = 'B'
	kindOAuth      = 'o'
	kindIssuers    = 'i'
	kindIdPs       = 'p'
	kindLegacy     = 'l'
)

// read loads and decodes the record r from the source.
func (s *Store) read(ctx context.Context, r ref, p string) (any, error) {
	switch r.kind {
	case kindAuthToken:
		// Older generations are read when their successor is recent enough to matter for the
		// whole time this entry may be served.
		since := s.opts.Now().Add(-r.grace - s.opts.Refresh - s.opts.MaxStale)
		raws, err := s.src.Versions(ctx, p, since)
		if err != nil {
			return nil, err
		}
		keys := &AuthTokenKeys{}
		for _, raw := range raws {
			k, err := DecodeAuthTokenKey(p, raw)
			if err != nil {
				if len(keys.Generations) == 0 {
					return nil, err // the current generation is invalid: no key at all
				}
				s.log.Warn("older auth token key generation ignored", "path", p, "version", raw.Version, "problem", err.Error())
				continue
			}
			keys.Generations = append(keys.Generations, k)
		}
		if len(keys.Generations) == 0 {
			return nil, ErrNotFound
		}
		return keys, nil
	case kindBrowserSet:
		set := &BrowserKeySet{}
		keys, err := listDecoded(ctx, s, p, DecodeBrowserKey)
		set.Keys = keys
		return set, err
	case kindIssuers:
		return listDecoded(ctx, s, p, DecodeIssuer)
	case kindIdPs:
		return listDecoded(ctx, s, p, DecodeIdP)
	}
	raw, err := s.src.Read(ctx, p)
	if err != nil {
		return nil, err
	}
	switch r.kind {
	case kindServer:
		return DecodeServerKey(p, r.name, raw)
	case kindBrowser:
		return DecodeBrowserKey(p, r.name, raw)
	case kindOAuth:
		return DecodeIssuer(p, "site", raw)
	case kindLegacy:
		return DecodeLegacy(p, raw)
	}
	return nil, fmt.Errorf("vault: unknown record kind %q", r.kind)
}

// AuthTokenKeys returns the Auth Token key generations of site: the newest, and each older
// one replaced no longer than grace ago (ErrNotFound when the site has no key).
func (s *Store) AuthTokenKeys(ctx context.Context, site string, grace time.Duration) (*AuthTokenKeys, error) {
	v, err := s.get(ctx, ref{kind: kindAuthToken, site: site, grace: grace})
	if err != nil {
		return nil, err
	}
	return v.(*AuthTokenKeys), nil
}

// ServerKey returns the record of Server API Token key name of site.
func (s *Store) ServerKey(ctx context.Context, site, name string) (*ServerKey, error) {
	v, err := s.get(ctx, ref{kind: kindServer, site: site, name: name})
	if err != nil {
		return nil, err
	}
	return v.(*ServerKey), nil
}

// BrowserKey returns the record of Browser API Token name of site.
func (s *Store) BrowserKey(ctx context.Context, site, name string) (*BrowserKey, error) {
	v, err := s.get(ctx, ref{kind: kindBrowser, site: site, name: name})
	if err != nil {
		return nil, err
	}
	return v.(*BrowserKey), nil
}

// BrowserKeys returns every Browser API Token of site (for the CORS preflight's origin
// index). Invalid records are left out and reported.
func (s *Store) BrowserKeys(ctx context.Context, site string) (*BrowserKeySet, error) {
	v, err := s.get(ctx, ref{kind: kindBrowserSet, site: site})
	if err != nil {
		return nil, err
	}
	return v.(*BrowserKeySet), nil
}

// OAuthIssuer returns the site's own JWT issuer (`oauth` record).
func (s *Store) OAuthIssuer(ctx context.Context, site string) (*Issuer, error) {
	v, err := s.get(ctx, ref{kind: kindOAuth, site: site})
	if err != nil {
		return nil, err
	}
	return v.(*Issuer), nil
}

// Issuers returns the site's external JWT issuers (`issuers/<name>`). Invalid records are left
// out and reported.
func (s *Store) Issuers(ctx context.Context, site string) ([]*Issuer, error) {
	v, err := s.get(ctx, ref{kind: kindIssuers, site: site})
	if err != nil {
		return nil, err
	}
	return v.([]*Issuer), nil
}

// IdPs returns the site's identity providers (`idps/<name>`). Invalid records are left out and
// reported.
func (s *Store) IdPs(ctx context.Context, site string) ([]*IdP, error) {
	v, err := s.get(ctx, ref{kind: kindIdPs, site: site})
	if err != nil {
		return nil, err
	}
	return v.([]*IdP), nil
}

// Legacy returns the site's legacy record (the Site API Key).
func (s *Store) Legacy(ctx context.Context, site string) (*Legacy, error) {
	v, err := s.get(ctx, ref{kind: kindLegacy, site: site})
	if err != nil {
		return nil, err
	}
	return v.(*Legacy), nil
}

func listDecoded[T any](ctx context.Context, s *Store, dir string, decode func(path, name string, raw Raw) (T, error)) ([]T, error) {
	names, err := s.src.List(ctx, dir)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(names))
	for _, n := range names {
		p := dir + "/" + n
		raw, err := s.src.Read(ctx, p)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		v, err := decode(p, n, raw)
		if err != nil {
			s.noteInvalid(p, err)
			continue
		}
		s.noteInvalid(p, nil)
		out = append(out, v)
	}
	return out, nil
}

package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tokenagent/tokenagent/agent/token"
)

// The revocation list (SPEC §9): entries by user, by token and by OAuth client, per site, kept
// in Redis and pushed to every agent, which checks a local copy on the hot path.
//
// In Redis each site's entries are one hash, <prefix>revocations:<site>, a field per entry
// ("user:42", "token:<sha-256 hex>", "client:app1") holding {"b": before, "x": expires, "c":
// created} in Unix milliseconds; the hash expires with its last entry. A write is one script
// on that key: it merges with the entry already there (the later before, the later expiry: a
// write is idempotent and two writers lose nothing), extends the hash's expiry, and publishes
// the entry on <prefix>revocations, which every agent subscribes to; the write returns once a
// replica holds it, when the master has any (durable.go). Each agent reads every
// site of its config in full at start, whenever its subscription is made again (a reconnect, a
// failover) and at least every ResyncEvery, and applies what is published in between.

// The kinds of revocation entry.
const (
	// RevokeUser refuses every credential of the site that names the user and was issued
	// before Before.
	RevokeUser = "user"
	// RevokeToken refuses one credential, by the SHA-256 of its exact text.
	RevokeToken = "token"
	// RevokeClient refuses every OAuth token of the client issued before Before.
	RevokeClient = "client"
)

// MaxSubjectLen bounds an entry's user or client id.
const MaxSubjectLen = 512

// Revocation is one entry of the list.
type Revocation struct {
	// Site is the site the entry is for.
	Site string
	// Kind is RevokeUser, RevokeToken or RevokeClient.
	Kind string
	// Subject is the user (as x-auth-user names it: a decimal id, "=" and a username, or an
	// OAuth sub), the OAuth client_id, or the token's SHA-256 in lower-case hex.
	Subject string
	// Before is the issue time credentials must be later than (user and client entries).
	Before time.Time
	// Expires is when nothing the entry could refuse can still be valid: the entry is dropped
	// then.
	Expires time.Time
	// Created is when the entry was first written.
	Created time.Time
	// Filter is a token entry's fast fingerprint of the credential (xxhash64 of its last 32
	// bytes and its length), which agents compare before the SHA-256: a check at a site with
	// token entries then costs one hash of a few bytes, and a SHA-256 only on a match. 0:
	// unknown (every check at the site hashes its credentials with SHA-256).
	Filter uint64
}

// RevokeCredential is the token entry for a credential of site, by its exact text: its
// SHA-256 and its filter, never the text.
func RevokeCredential(site, credential string, expires time.Time) Revocation {
	return Revocation{Site: site, Kind: RevokeToken, Subject: TokenSubject(credential), Expires: expires,
		Filter: fingerprint(credential)}
}

// fingerprintTail is how many of a credential's last bytes its fingerprint reads.
const fingerprintTail = 32

// fingerprint is a token entry's filter for a credential: xxhash64 of its last 32 bytes, mixed
// with its length. Every signed credential but one ends with its signature (a JWT, an Auth
// Token, a tkn_ token) and a key is random throughout, so the tail tells credentials apart as
// well as the whole text does, at a cost that does not grow with a 2 KB JWT, and no more of a
// credential can be guessed from it than from its SHA-256. The exception, an Impersonation Auth
// Token, ends with the user's name: it is read whole. It is a pre-filter only: a match is
// confirmed by the SHA-256 of the whole text, so a collision costs one SHA-256 and never
// refuses a credential that was not revoked.
func fingerprint(credential string) uint64 {
	tail := credential
	if len(tail) > fingerprintTail && !strings.HasPrefix(credential, token.ImpersonationPrefix) {
		tail = tail[len(tail)-fingerprintTail:]
	}
	return xxhash.Sum64String(tail) ^ uint64(len(credential))*0x9e3779b97f4a7c15
}

// TokenSubject is a token entry's subject for a credential: the SHA-256 of its exact text, in
// lower-case hex.
func TokenSubject(credential string) string {
	h := sha256.Sum256([]byte(credential))
	return hex.EncodeToString(h[:])
}

// String describes the entry without revealing a token: a token entry shows the first 8 hex
// digits of its hash.
func (r Revocation) String() string {
	subject := r.Subject
	if r.Kind == RevokeToken && len(subject) > 8 {
		subject = subject[:8] + "…"
	}
	s := fmt.Sprintf("site=%s kind=%s %s=%s", r.Site, r.Kind, r.Kind, subject)
	if r.Kind != RevokeToken {
		s += " before=" + r.Before.UTC().Format(time.RFC3339)
	}
	return s + " expires=" + r.Expires.UTC().Format(time.RFC3339) + " created=" + r.Created.UTC().Format(time.RFC3339)
}

// check reports what is wrong with the entry, naming the field (the revoke command's flags).
func (r *Revocation) check() error {
	switch {
	case r.Site == "" || !utf8.ValidString(r.Site) || strings.ContainsAny(r.Site, ":\n"):
		return fmt.Errorf("site: %q is not a site id", r.Site)
	case r.Expires.IsZero():
		return errors.New("expires: required")
	}
	switch r.Kind {
	case RevokeUser, RevokeClient:
		if r.Subject == "" || len(r.Subject) > MaxSubjectLen || !printable(r.Subject) {
			return fmt.Errorf("%s: %q is empty, longer than %d bytes or holds control characters", r.Kind, r.Subject, MaxSubjectLen)
		}
		if r.Before.IsZero() {
			return fmt.Errorf("before: required for a %s entry", r.Kind)
		}
	case RevokeToken:
		if len(r.Subject) != 64 || strings.Trim(r.Subject, "0123456789abcdef") != "" {
			return errors.New("token: the subject is not a SHA-256 in lower-case hex")
		}
	default:
		return fmt.Errorf("kind: %q is not user, token or client", r.Kind)
	}
	return nil
}

func printable(s string) bool {
	for _, c := range s {
		if c < 0x20 || c == 0x7f || c == utf8.RuneError {
			return false
		}
	}
	return true
}

// record is an entry as Redis holds it (times in Unix milliseconds).
type record struct {
	Before  int64  `json:"b"`
	Expires int64  `json:"x"`
	Created int64  `json:"c"`
	Filter  string `json:"f,omitempty"` // a token entry's filter, 16 hex digits
}

func filterString(f uint64) string {
	if f == 0 {
		return ""
	}
	return fmt.Sprintf("%016x", f)
}

func (rec record) filter() uint64 {
	f, err := strconv.ParseUint(rec.Filter, 16, 64)
	if err != nil {
		return 0
	}
	return f
}

// message is what is published for each write.
type message struct {
	Site  string `json:"s"`
	Field string `json:"k"`
	record
}

// revokeScript merges an entry into the site's hash (the later before and expiry, the first
// creation, a filter when either has one), extends the hash's expiry, and publishes the merged
// entry. KEYS[1] the hash; ARGV: field, before, expires, created, channel, site, filter.
var revokeScript = redis.NewScript(`
local old = redis.call('HGET', KEYS[1], ARGV[1])
local b, x, c, f = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[7]
if old then
  local o = cjson.decode(old)
  if o.b > b then b = o.b end
  if o.x > x then x = o.x end
  if o.c < c then c = o.c end
  if f == '' and o.f then f = o.f end
end
local r = {b = b, x = x, c = c}
if f ~= '' then r.f = f end
local rec = cjson.encode(r)
redis.call('HSET', KEYS[1], ARGV[1], rec)
local t = redis.call('PEXPIRETIME', KEYS[1])
if t < x then redis.call('PEXPIREAT', KEYS[1], x) end
r.s, r.k = ARGV[6], ARGV[1]
redis.call('PUBLISH', ARGV[5], cjson.encode(r))
return rec
`)

// RevocationOptions configure a RevocationList.
type RevocationOptions struct {
	// Redis is the fleet's Redis (config revocation.redis, else replay.redis).
	Redis RedisOptions
	// MaxStale is how long the list may go without a confirmed sync before it is stale (default
	// 5 min; config revocation.max_stale).
	MaxStale time.Duration
	// ResyncEvery is how often the whole list is read again even when the subscription holds
	// (default MaxStale/2).
	ResyncEvery time.Duration
	// CallTimeout bounds one call to Redis (default 2 s).
	CallTimeout time.Duration
	// Registerer receives the list's metrics (nil: none).
	Registerer prometheus.Registerer
	// Logger receives sync failures and recoveries (default: nothing is logged).
	Logger *slog.Logger
	// Now is the clock entries expire by (default time.Now).
	Now func() time.Time
}

// RevocationList is the fleet's revocation list: writes and listings go to Redis, checks read
// an in-memory snapshot that a background subscription keeps current. Build it with
// NewRevocationList, give it the sites with SetSites, start it with Start, close it with Close.
type RevocationList struct {
	c       redis.UniversalClient
	addr    string
	prefix  string // <key prefix>revocations:
	channel string
	opts    RevocationOptions
	log     *slog.Logger

	snap      atomic.Pointer[snapshot]
	snapMu    sync.Mutex // serialises the snapshot's writers (the follower, SetSites); checks never take it
	running   atomic.Bool
	confirmed atomic.Int64 // unix nanos of the last confirmed sync (0: never)
	sitesMu   sync.Mutex
	sites     []string
	resync    chan struct{} // a new set of sites asks for a full read

	started  sync.Once
	cancel   context.CancelFunc
	psMu     sync.Mutex
	ps       *redis.PubSub // the current subscription: Close closes it to end a blocked read
	done     chan struct{}
	closed   sync.Once
	failMu   sync.Mutex
	failing  error
	replicas replicaCounts
	entries  *prometheus.GaugeVec
	syncAges prometheus.GaugeFunc
	maxStale prometheus.Gauge
}

// NewRevocationList checks opts and returns a list that has not connected: Start begins the
// subscription and the first full read.
func NewRevocationList(opts RevocationOptions) (*RevocationList, error) {
	if opts.MaxStale <= 0 {
		opts.MaxStale = 5 * time.Minute
	}
	if opts.ResyncEvery <= 0 {
		opts.ResyncEvery = opts.MaxStale / 2
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 2 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c, err := opts.Redis.client("revocation.redis", clientTimeouts{call: opts.CallTimeout, retries: 2})
	if err != nil {
		return nil, err
	}
	l := &RevocationList{c: c, addr: opts.Redis.Address, prefix: opts.Redis.KeyPrefix + "revocations:",
		channel: opts.Redis.KeyPrefix + "revocations", opts: opts,
		log:    opts.Logger.With("component", "revocation", "redis", opts.Redis.Address),
		resync: make(chan struct{}, 1), done: make(chan struct{})}
	l.snap.Store(&snapshot{})
	l.entries = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tokenagent_revocations",
		Help: "Revocation entries in force, by site and kind (user, token, client)."}, []string{"site", "kind"})
	l.syncAges = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tokenagent_revocation_sync_age_seconds",
		Help: "Seconds since the revocation list was last confirmed in sync with Redis (a full read, or the subscription answering)."},
		func() float64 { return l.SyncAge(time.Now()).Seconds() })
	l.maxStale = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tokenagent_revocation_max_stale_seconds",
		Help: "The revocation list's max_stale: a sync age over it makes the list stale (alerts compare the two)."})
	l.maxStale.Set(opts.MaxStale.Seconds())
	if opts.Registerer != nil {
		for _, col := range []prometheus.Collector{l.entries, l.syncAges, l.maxStale} {
			if err := opts.Registerer.Register(col); err != nil {
				c.Close()
				return nil, fmt.Errorf("revocation metrics: %w", err)
			}
		}
	}
	return l, nil
}

func (l *RevocationList) key(site string) string { return l.prefix + site }

// Revoke writes r (its Created set now, when zero) and returns the entry as Redis holds it
// after the merge. It is idempotent: writing the same entry again changes nothing, and an
// entry already there with a later before or expiry keeps them.
func (l *RevocationList) Revoke(ctx context.Context, r Revocation) (Revocation, error) {
	if r.Created.IsZero() {
		r.Created = l.opts.Now()
	}
	if err := r.check(); err != nil {
		return Revocation{}, err
	}
	var before int64
	if r.Kind != RevokeToken {
		before = r.Before.UnixMilli()
	}
	ctx, cancel := context.WithTimeout(ctx, 2*l.opts.CallTimeout)
	defer cancel()
	var cmd *redis.Cmd
	key := l.key(r.Site)
	err := durable(ctx, l.c, &l.replicas, key, func(p redis.Pipeliner) {
		cmd = revokeScript.Eval(ctx, p, []string{key}, r.Kind+":"+r.Subject, before,
			r.Expires.UnixMilli(), r.Created.UnixMilli(), l.channel, r.Site, filterString(r.Filter))
	})
	var out string
	if err == nil {
		out, err = cmd.Text()
	}
	if err != nil {
		return Revocation{}, &UnavailableError{Store: "revocation list", Addr: l.addr, Err: err}
	}
	var rec record
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		return Revocation{}, fmt.Errorf("revocation list: the stored entry: %w", err)
	}
	return rec.revocation(r.Site, r.Kind+":"+r.Subject)
}

// List returns the site's entries in force (not expired), sorted by kind and subject.
func (l *RevocationList) List(ctx context.Context, site string) ([]Revocation, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*l.opts.CallTimeout)
	defer cancel()
	m, err := l.c.HGetAll(ctx, l.key(site)).Result()
	if err != nil {
		return nil, &UnavailableError{Store: "revocation list", Addr: l.addr, Err: err}
	}
	now := l.opts.Now()
	var out []Revocation
	for field, v := range m {
		var rec record
		if json.Unmarshal([]byte(v), &rec) != nil {
			continue
		}
		r, err := rec.revocation(site, field)
		if err != nil || !r.Expires.After(now) {
			continue
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Subject < out[j].Subject
	})
	return out, nil
}

func (rec record) revocation(site, field string) (Revocation, error) {
	kind, subject, ok := strings.Cut(field, ":")
	r := Revocation{Site: site, Kind: kind, Subject: subject, Expires: time.UnixMilli(rec.Expires),
		Created: time.UnixMilli(rec.Created), Filter: rec.filter()}
	if rec.Before != 0 {
		r.Before = time.UnixMilli(rec.Before)
	}
	if !ok {
		return Revocation{}, fmt.Errorf("revocation list: field %q is not kind:subject", field)
	}
	return r, r.check()
}

// SetSites names the sites whose entries this agent applies (its config's). Call it before
// Start, and after every config reload before the new config serves: once the list is started,
// the entries of the sites it did not have are read before SetSites returns (within ctx and
// the list's call timeout), so a site added by a reload serves with its entries in force. An
// error says they could not be read now; the list reads them with its next full read (at once
// when Redis answers again).
func (l *RevocationList) SetSites(ctx context.Context, ids []string) error {
	ids = append([]string(nil), ids...)
	sort.Strings(ids)
	l.sitesMu.Lock()
	old := l.sites
	l.sites = ids
	l.sitesMu.Unlock()
	if slicesEqual(old, ids) {
		return nil
	}
	select { // a full read also drops the sites no longer served
	case l.resync <- struct{}{}:
	default:
	}
	if !l.running.Load() {
		return nil // Start's first full read reads them
	}
	var added []string
	for _, s := range ids {
		if !slicesContains(old, s) {
			added = append(added, s)
		}
	}
	if len(added) == 0 {
		return nil
	}
	if err := l.readSites(ctx, added); err != nil {
		return fmt.Errorf("revocation list: reading the entries of %s: %w", strings.Join(added, ", "), err)
	}
	return nil
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (l *RevocationList) siteIDs() []string {
	l.sitesMu.Lock()
	defer l.sitesMu.Unlock()
	return l.sites
}

// Start begins the subscription and the first full read, in a goroutine that runs until ctx is
// done or Close is called. Only the first call starts it.
func (l *RevocationList) Start(ctx context.Context) {
	l.started.Do(func() {
		ctx, l.cancel = context.WithCancel(ctx)
		l.running.Store(true)
		go l.run(ctx)
	})
}

// Close stops the subscription and releases the connections. Entries already read stay in
// force in memory (a list that stops syncing is stale, not empty).
func (l *RevocationList) Close() error {
	var err error
	l.closed.Do(func() {
		started := true
		l.started.Do(func() { started = false })
		if started {
			l.cancel()
			l.psMu.Lock()
			if l.ps != nil {
				_ = l.ps.Close() // a read waiting for the next message ends now
			}
			l.psMu.Unlock()
			<-l.done
		}
		err = l.c.Close()
	})
	return err
}

// SyncAge is how long ago at now the list was last confirmed in sync (a very long time when it
// never was).
func (l *RevocationList) SyncAge(now time.Time) time.Duration {
	c := l.confirmed.Load()
	if c == 0 {
		return time.Duration(1<<63 - 1)
	}
	return now.Sub(time.Unix(0, c))
}

// Stale reports whether the list was last confirmed in sync more than MaxStale before now.
func (l *RevocationList) Stale(now time.Time) bool { return l.SyncAge(now) > l.opts.MaxStale }

// Warnings reports a stale list, for /readyz.
func (l *RevocationList) Warnings() []string {
	now := time.Now()
	if !l.Stale(now) {
		return nil
	}
	l.failMu.Lock()
	cause := l.failing
	l.failMu.Unlock()
	age := "never synced"
	if c := l.confirmed.Load(); c != 0 {
		age = "last in sync " + time.Unix(0, c).UTC().Format(time.RFC3339)
	}
	msg := fmt.Sprintf("revocation list (redis %s): %s, over max_stale %s; the entries already read stay in force", l.addr, age, l.opts.MaxStale)
	if cause != nil {
		msg += ": " + cause.Error()
	}
	return []string{msg}
}

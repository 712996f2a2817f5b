package token

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"hash/maphash"
	"log/slog"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"
	"weak"

	"github.com/dgraph-io/ristretto/v2"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/jwks"
)

// OAuthVerifier verifies OAuth API Tokens and long-term JWTs (`Authorization: Bearer <JWS>`,
// SPEC §3.4) against the site's own issuer (`oauth` record) and its external issuers
// (`issuers/<name>`).
//
//	v := &token.OAuthVerifier{Keys: store, JWKS: jwks.NewCache(jwks.Options{})}
//	defer v.Close()
//	id, err := v.Verify(ctx, site, bearer)
//
// The steps, each failing with its own reason:
//
//  1. size (at most MaxJWTLen) and shape: three base64url segments (malformed_token);
//  2. go-jose parses the JWS with only RS256, PS256, ES256, EdDSA and HS256 allowed
//     (unsupported_algorithm for any other `alg`, `none` in every spelling included); a `crit`
//     or `b64` header, a nested JWT (`cty: JWT`) or an explicitly typed non-access-token JWT
//     (`typ` ending in "+jwt" other than "at+jwt") is malformed_token; `jku`, `x5u`, `jwk` and
//     `x5c` headers are never used to find a key;
//  3. the unverified `iss` picks the issuer among the site's own ones (unknown_issuer);
//  4. the header's `kid` picks a key of that issuer only (unknown_key, after at most one
//     refetch of a jwks_uri); the key's algorithms must include the header's `alg`
//     (unsupported_algorithm); the signature must verify over the exact bytes received
//     (bad_signature);
//  5. claims: `aud` holds the issuer's audience (invalid_audience); `exp` is required
//     (malformed_token when missing) and not past (token_expired, with a WWW-Authenticate
//     challenge); `nbf` and `iat` not in the future (token_not_yet_valid); 60 s leeway each.
//
// A token whose `sub` equals its `client_id` (or that has a `client_id` and no `sub`) is an
// application token: Identity.Application is true and Identity.User is empty.
//
// # Notes
//
//   - Safe for concurrent use. The zero value of every optional field is a working default;
//     the verifier builds its caches on first use. Call Close when done with it.
//   - A verified token is cached (keyed by a seeded hash of the site and the token's
//     signature end, checked against the full token) until the earlier of its expiry and the
//     key store's refresh interval. A hit still checks that the issuer record (and, for a
//     jwks_uri, the fetched key set) is the one the token was verified with, so a revoked
//     issuer or key takes effect within the refresh interval. Denials are never cached.
//   - The Identity returned shares its Scopes slice with the cache: callers must not modify it.
//   - Every 401 it returns carries `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750
//     §3.1); keys_unavailable (503) carries `Retry-After`.
type OAuthVerifier struct {
	// Keys is the key store holding the issuer records (required).
	Keys *vault.Store
	// JWKS holds the issuers' key sets (default: a cache with jwks defaults, sharing Now).
	JWKS *jwks.Cache
	// Now is the clock (default time.Now).
	Now func() time.Time
	// CacheMaxCost is the verified-token cache's capacity in bytes (default
	// DefaultOAuthCacheMaxCost, 16 MiB).
	CacheMaxCost int64
	// SkipTokenCache turns the verified-token cache off: every token is verified in full.
	SkipTokenCache bool
	// Metrics receives the verifier's counters (default: unregistered collectors).
	Metrics *OAuthMetrics
	// Logger receives reports of unusable issuer keys (default slog.Default()).
	Logger *slog.Logger

	once      sync.Once
	initErr   error
	cacheOnce sync.Once
	tokens    *ristretto.Cache[uint64, *verifiedToken]
	seed      maphash.Seed
	hit       prometheus.Counter
	miss      prometheus.Counter
	views     sync.Map // site ID -> *issuerView
}

// OAuthMetrics are the OAuth verifier's Prometheus collectors.
type OAuthMetrics struct {
	// TokenCache counts verified-token cache lookups by result (hit, miss).
	TokenCache *prometheus.CounterVec
	// Verifications counts full verifications (signature checked) by result: "ok" or the
	// denial's reason.
	Verifications *prometheus.CounterVec
}

// NewOAuthMetrics creates the collectors and registers them with reg (nil: not registered).
// Collectors already registered with reg (a config reload) are reused.
func NewOAuthMetrics(reg prometheus.Registerer) *OAuthMetrics {
	m := &OAuthMetrics{
		TokenCache: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenagent_oauth_token_cache_total",
			Help: "Verified-token cache lookups of OAuth bearer tokens by result (hit, miss)."}, []string{"result"}),
		Verifications: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenagent_oauth_verifications_total",
			Help: "Full verifications of OAuth bearer tokens (cache misses) by result (ok or the denial's reason)."}, []string{"result"}),
	}
	m.TokenCache = registerVec(reg, m.TokenCache)
	m.Verifications = registerVec(reg, m.Verifications)
	return m
}

func registerVec(reg prometheus.Registerer, c *prometheus.CounterVec) *prometheus.CounterVec {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing
			}
		}
	}
	return c
}

// OAuthLeeway is the clock skew allowed on every time check of a JWT (SPEC §3.4).
const OAuthLeeway = ClockSkew

// maxKeysTried bounds the keys one token is checked against (duplicate kids, or no kid).
const maxKeysTried = 4

// verifiedToken is one entry of the verified-token cache.
type verifiedToken struct {
	site  string
	token string
	id    Identity
	until time.Time // exp + leeway, capped by verification time + key refresh interval
	// What the token verified with. Held weakly: an entry outliving its issuer record or key
	// set (they change every refresh) must not keep them in memory; a collected one simply
	// makes the entry a miss.
	own    bool
	rec    weak.Pointer[vault.Issuer]
	remote *jwks.Remote
	set    weak.Pointer[jwks.Set] // a remote issuer's set
}

// trustedIssuer is one issuer record of a site with its resolved key set.
type trustedIssuer struct {
	rec    *vault.Issuer
	own    bool         // the site's `oauth` record (else one of `issuers/<name>`)
	inline *jwks.Set    // for a record with `jwks`
	remote *jwks.Remote // for a record with `jwks_uri`
}

// issuerView is a site's trusted issuers as of the store records it was built from.
type issuerView struct {
	own      *vault.Issuer
	ext      []*vault.Issuer
	list     []*trustedIssuer
	warnings []string
}

// init sets the defaults (once).
func (v *OAuthVerifier) init() error {
	v.once.Do(func() {
		if v.Keys == nil {
			v.initErr = errors.New("token: OAuthVerifier.Keys is required")
			return
		}
		if v.Logger == nil {
			v.Logger = slog.Default()
		}
		if v.JWKS == nil {
			v.JWKS = jwks.NewCache(jwks.Options{Now: v.Now, Logger: v.Logger})
		}
		if v.Metrics == nil {
			v.Metrics = NewOAuthMetrics(nil)
		}
		v.hit = v.Metrics.TokenCache.WithLabelValues("hit")
		v.miss = v.Metrics.TokenCache.WithLabelValues("miss")
		v.seed = maphash.MakeSeed()
	})
	return v.initErr
}

// initCache creates the verified-token cache (once, on the first verification, so a verifier
// that never sees a token costs no cache).
func (v *OAuthVerifier) initCache() {
	v.cacheOnce.Do(func() {
		if v.SkipTokenCache {
			return
		}
		maxCost := v.CacheMaxCost
		if maxCost <= 0 {
			maxCost = DefaultOAuthCacheMaxCost
		}
		c, err := ristretto.NewCache(&ristretto.Config[uint64, *verifiedToken]{
			NumCounters: max(maxCost/100, 1000), // ~10 counters per entry of ~1 KB
			MaxCost:     maxCost,
			BufferItems: 64,
		})
		if err != nil {
			v.Logger.Error("verified-token cache not created; every token is verified in full", "error", err.Error())
			return
		}
		v.tokens = c
	})
}

// DefaultOAuthCacheMaxCost is the verified-token cache's default capacity in bytes: about
// 13,000 typical tokens, and a heap that stays well inside a 64 MiB sidecar.
const DefaultOAuthCacheMaxCost = 16 << 20

// Close releases the verified-token cache. Verifications after Close are not cached.
func (v *OAuthVerifier) Close() {
	v.cacheOnce.Do(func() {}) // no cache is created after Close
	if v.tokens != nil {
		v.tokens.Close()
	}
}

func (v *OAuthVerifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// Verify checks the bearer JWT tok for site and returns the identity it proves, or a
// *reason.Error: malformed_token, unsupported_algorithm, unknown_issuer, unknown_key,
// bad_signature, invalid_audience, token_expired, token_not_yet_valid or keys_unavailable.
func (v *OAuthVerifier) Verify(ctx context.Context, site *Site, tok string) (Identity, error) {
	if len(tok) == 0 || len(tok) > MaxJWTLen {
		return Identity{}, invalidToken(reason.MalformedToken, "the bearer token is empty or longer than 8 KiB")
	}
	if err := v.init(); err != nil {
		return Identity{}, reason.From(err)
	}
	v.initCache()
	now := v.now()
	var h uint64
	if v.tokens != nil {
		h = v.tokenHash(site.ID, tok)
		if e, ok := v.tokens.Get(h); ok && e.token == tok && e.site == site.ID {
			if now.Before(e.until) && v.stillTrusted(ctx, site.ID, e) {
				v.hit.Inc()
				return e.id, nil
			}
			v.tokens.Del(h) // expired, or its issuer or keys changed
		}
		v.miss.Inc()
	}
	e, err := v.verify(ctx, site, tok, now)
	if err != nil {
		v.Metrics.Verifications.WithLabelValues(string(reason.From(err).Reason)).Inc()
		return Identity{}, err
	}
	v.Metrics.Verifications.WithLabelValues("ok").Inc()
	if v.tokens != nil {
		// No ristretto TTL: its expiry check would cost a clock read on every hit. Entries
		// carry their own deadline (checked above) and leave by LFU eviction or Del.
		v.tokens.Set(h, e, tokenCost(tok, site.ID, &e.id))
	}
	return e.id, nil
}

// tokenCost is what a cached token holds in memory, so CacheMaxCost bounds real bytes: the
// token and the identity's strings, the entry and ristretto's bookkeeping for it (measured
// with a heap profile at about 1.2 KB for a typical 800-byte token).
func tokenCost(tok, site string, id *Identity) int64 {
	n := 2*len(tok) + len(site) + len(id.User) + len(id.ClientID) + 400
	for _, s := range id.Scopes {
		n += 16 + len(s)
	}
	return int64(n)
}

// tokenHash is the cache key of tok at site: a seeded maphash of the site, the token's length
// and its last hashedTail bytes (the signature, which binds the rest). A hit is confirmed by
// comparing the whole token, so a collision (which an attacker cannot aim, the seed being
// random) is only a miss.
func (v *OAuthVerifier) tokenHash(site, tok string) uint64 {
	tail := tok
	if len(tail) > hashedTail {
		tail = tail[len(tail)-hashedTail:]
	}
	var h maphash.Hash
	h.SetSeed(v.seed)
	h.WriteString(site)
	h.WriteByte(byte(len(tok)))
	h.WriteByte(byte(len(tok) >> 8))
	h.WriteString(tail)
	return h.Sum64()
}

// hashedTail is how many trailing bytes of a token its cache key hashes.
const hashedTail = 64

// stillTrusted reports whether a cached token's issuer record is still the store's current
// one, and its key set still the issuer's current one.
func (v *OAuthVerifier) stillTrusted(ctx context.Context, site string, e *verifiedToken) bool {
	want := e.rec.Value()
	if want == nil {
		return false
	}
	if e.own {
		rec, err := v.Keys.OAuthIssuer(ctx, site)
		if err != nil || rec != want {
			return false
		}
	} else {
		recs, err := v.Keys.Issuers(ctx, site)
		if err != nil {
			return false
		}
		found := false
		for _, r := range recs {
			if r == want {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	if e.remote != nil {
		cur := e.remote.Current()
		return cur != nil && e.set.Value() == cur
	}
	return true
}

// verify does the full verification of a token not found in the cache.
func (v *OAuthVerifier) verify(ctx context.Context, site *Site, tok string, now time.Time) (*verifiedToken, error) {
	p, rerr := parseJWT(tok)
	if rerr != nil {
		return nil, rerr
	}
	view, verr := v.view(ctx, site.ID)
	ti := view.find(p.claims.Iss, &p.claims.Aud)
	if ti == nil {
		if verr != nil {
			return nil, verr
		}
		return nil, invalidToken(reason.UnknownIssuer, "")
	}
	set, err := v.checkSignature(ctx, ti, p)
	if err != nil {
		return nil, err
	}
	id, until, rerr := checkClaims(&p.claims, ti.rec.Audience, now)
	if rerr != nil {
		return nil, rerr
	}
	if refresh := v.Keys.Refresh(); until.After(now.Add(refresh)) {
		until = now.Add(refresh)
	}
	e := &verifiedToken{site: site.ID, token: tok, id: id, until: until, own: ti.own, rec: weak.Make(ti.rec), remote: ti.remote}
	if ti.remote != nil {
		e.set = weak.Make(set)
	}
	return e, nil
}

// sigResult is the outcome of checking a token against a key set.
type sigResult uint8

const (
	sigOK          sigResult = iota
	sigUnknownKey            // no key of the set has the token's kid (or the set is empty)
	sigAlgMismatch           // the keys found do not allow the token's alg
	sigBad                   // a key allowing the alg was found and the signature failed
)

// checkSignature verifies p's signature with the keys of issuer ti, refetching a remote set
// once when the kid is unknown or the signature fails (the issuer may have rotated keys).
func (v *OAuthVerifier) checkSignature(ctx context.Context, ti *trustedIssuer, p *parsedJWT) (*jwks.Set, error) {
	set := ti.inline
	if ti.remote != nil {
		s, err := ti.remote.Keys(ctx)
		if err != nil {
			return nil, unavailableKeys(err)
		}
		set = s
	}
	res := tryKeys(set, p)
	if ti.remote != nil && (res == sigUnknownKey || res == sigBad) {
		if s, err := ti.remote.Refetch(ctx, set); err == nil && s != set {
			set = s
			res = tryKeys(set, p)
		}
	}
	switch res {
	case sigOK:
		return set, nil
	case sigUnknownKey:
		return nil, invalidToken(reason.UnknownKey, "no key of the token's issuer has this kid")
	case sigAlgMismatch:
		return nil, invalidToken(reason.UnsupportedAlgorithm, "the token's alg does not match its key's")
	}
	return nil, invalidToken(reason.BadSignature, "")
}

// tryKeys checks p against set: the keys with p's kid, or (no kid) the keys allowing p's alg.
func tryKeys(set *jwks.Set, p *parsedJWT) sigResult {
	if set.Len() == 0 {
		return sigUnknownKey
	}
	if p.kid != "" {
		keys := set.ByKID(p.kid)
		if len(keys) == 0 {
			return sigUnknownKey
		}
		allowed := false
		for i, k := range keys {
			if i == maxKeysTried {
				break
			}
			if k.Allows(p.alg) {
				allowed = true
				if k.Verify(p.alg, p.input, p.sig) {
					return sigOK
				}
			}
		}
		if !allowed {
			return sigAlgMismatch
		}
		return sigBad
	}
	tried := 0
	for _, k := range set.Keys {
		if !k.Allows(p.alg) {
			continue
		}
		if k.Verify(p.alg, p.input, p.sig) {
			return sigOK
		}
		if tried++; tried == maxKeysTried {
			break
		}
	}
	if tried == 0 {
		return sigAlgMismatch
	}
	return sigBad
}

// checkClaims applies the claim rules to a token whose signature verified. It returns the
// identity and until when the token may be served from the cache (exp + leeway).
func checkClaims(c *jwtClaims, audience string, now time.Time) (Identity, time.Time, *reason.Error) {
	if !c.Aud.contains(audience) {
		return Identity{}, time.Time{}, invalidToken(reason.InvalidAudience, "")
	}
	if !c.Exp.set {
		return Identity{}, time.Time{}, invalidToken(reason.MalformedToken, "the token has no exp claim")
	}
	exp := c.Exp.time()
	if now.After(exp.Add(OAuthLeeway)) {
		return Identity{}, time.Time{}, &reason.Error{Reason: reason.TokenExpired, Headers: map[string]string{
			"WWW-Authenticate": `Bearer error="invalid_token", error_description="token expired"`}}
	}
	if c.Nbf.set && c.Nbf.time().After(now.Add(OAuthLeeway)) {
		return Identity{}, time.Time{}, invalidToken(reason.TokenNotYetValid, "the token's nbf is in the future")
	}
	if c.Iat.set && c.Iat.time().After(now.Add(OAuthLeeway)) {
		return Identity{}, time.Time{}, invalidToken(reason.TokenNotYetValid, "the token's iat is in the future")
	}
	if c.Sub == "" && c.ClientID == "" {
		return Identity{}, time.Time{}, invalidToken(reason.MalformedToken, "the token names neither a user (sub) nor an application (client_id)")
	}
	scopes, ok := c.scopes()
	if !ok || !headerSafe(c.Sub) || !headerSafe(c.ClientID) {
		return Identity{}, time.Time{}, invalidToken(reason.MalformedToken, "the token's sub, client_id or scope holds control characters or is not well formed")
	}
	id := Identity{Kind: KindOAuth, User: c.Sub, ClientID: c.ClientID, Scopes: scopes, Expires: exp}
	if c.ClientID != "" && (c.Sub == "" || c.Sub == c.ClientID) {
		id.User, id.Application = "", true
	}
	return id, exp.Add(OAuthLeeway), nil
}

// headerSafe reports whether s can be sent in an HTTP header value as it is: no control
// characters (a claim never smuggles a header line upstream).
func headerSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// view returns the site's trusted issuers, rebuilt when the store hands out new records.
// When a record could not be read, the view holds what could be, and the error is returned
// with it.
func (v *OAuthVerifier) view(ctx context.Context, site string) (*issuerView, error) {
	own, ownErr := v.Keys.OAuthIssuer(ctx, site)
	if errors.Is(ownErr, vault.ErrNotFound) {
		own, ownErr = nil, nil
	}
	ext, extErr := v.Keys.Issuers(ctx, site)
	if errors.Is(extErr, vault.ErrNotFound) {
		ext, extErr = nil, nil
	}
	err := ownErr
	if err == nil {
		err = extErr
	}
	if cur, ok := v.views.Load(site); ok && err == nil {
		if cv := cur.(*issuerView); cv.own == own && sameIssuers(cv.ext, ext) {
			return cv, nil
		}
	}
	nv := &issuerView{own: own, ext: ext}
	add := func(rec *vault.Issuer, isOwn bool) {
		ti := &trustedIssuer{rec: rec, own: isOwn}
		if rec.JWKSURI != "" {
			ti.remote = v.JWKS.Remote(rec.JWKSURI)
		} else {
			set, perr := v.JWKS.Inline(rec.JWKS)
			if perr != nil {
				nv.warnings = append(nv.warnings, "site "+site+" issuer "+rec.Name+": jwks: "+perr.Error())
				set = &jwks.Set{}
			}
			for _, p := range set.Problems {
				nv.warnings = append(nv.warnings, "site "+site+" issuer "+rec.Name+": jwks "+p)
			}
			if set.Len() == 0 && perr == nil {
				nv.warnings = append(nv.warnings, "site "+site+" issuer "+rec.Name+": jwks holds no usable key")
			}
			ti.inline = set
		}
		nv.list = append(nv.list, ti)
	}
	if own != nil {
		add(own, true)
	}
	for _, rec := range ext {
		add(rec, false)
	}
	if err != nil {
		return nv, reason.From(err)
	}
	if old, loaded := v.views.Swap(site, nv); !loaded || !sameWarnings(old.(*issuerView).warnings, nv.warnings) {
		for _, w := range nv.warnings {
			v.Logger.Warn("issuer key left out", "problem", w)
		}
	}
	return nv, nil
}

func sameIssuers(a, b []*vault.Issuer) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

func sameWarnings(a, b []string) bool {
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

// find returns the issuer named iss; among several with that name, the first whose audience
// the token names.
func (w *issuerView) find(iss string, aud *audience) *trustedIssuer {
	if iss == "" {
		return nil
	}
	var first *trustedIssuer
	for _, ti := range w.list {
		if ti.rec.Issuer != iss {
			continue
		}
		if aud.contains(ti.rec.Audience) {
			return ti
		}
		if first == nil {
			first = ti
		}
	}
	return first
}

// Prefetch fetches the remote key sets of the given sites' issuers now, so that /readyz
// reports a jwks_uri that cannot be fetched before any token needs it. It waits at most until
// ctx ends.
func (v *OAuthVerifier) Prefetch(ctx context.Context, sites ...string) {
	if v.init() != nil {
		return
	}
	var wg sync.WaitGroup
	for _, s := range sites {
		view, _ := v.view(ctx, s)
		for _, ti := range view.list {
			if ti.remote != nil {
				wg.Add(1)
				go func(r *jwks.Remote) {
					defer wg.Done()
					_, _ = r.Keys(ctx)
				}(ti.remote)
			}
		}
	}
	wg.Wait()
}

// Warnings lists problems that do not stop serving: remote key sets that cannot be fetched,
// and keys of stored sets left out as unusable (sorted, one line each, no key material).
func (v *OAuthVerifier) Warnings() []string {
	if v.init() != nil {
		return nil
	}
	out := v.JWKS.Warnings()
	v.views.Range(func(_, val any) bool {
		out = append(out, val.(*issuerView).warnings...)
		return true
	})
	sort.Strings(out)
	return out
}

// invalidToken is a 401 denial with the RFC 6750 challenge.
func invalidToken(r reason.Reason, detail string) *reason.Error {
	return &reason.Error{Reason: r, Detail: detail,
		Headers: map[string]string{"WWW-Authenticate": `Bearer error="invalid_token"`}}
}

// unavailableKeys is the 503 denial of an issuer whose keys could never be fetched.
func unavailableKeys(err error) *reason.Error {
	retry := 5 * time.Second
	var ue *jwks.UnavailableError
	if errors.As(err, &ue) {
		retry = ue.RetryAfter
	}
	secs := int64(math.Ceil(retry.Seconds()))
	return &reason.Error{Reason: reason.KeysUnavailable, Cause: err,
		Detail:  "the token issuer's keys cannot be fetched right now; retry later",
		Headers: map[string]string{"Retry-After": strconv.FormatInt(max(secs, 1), 10)}}
}

// ---- parsing ----

// parsedJWT is a JWS compact token split and decoded, not yet verified.
type parsedJWT struct {
	alg, kid string
	input    string // the signing input: header "." payload, exactly as received
	sig      []byte
	claims   jwtClaims
}

// splitJWT checks the compact shape: exactly three segments of base64url characters in
// canonical form (no padding, unused trailing bits zero, so one token has one spelling),
// header and payload non-empty; the signature may be empty (an unsigned token is refused for
// its alg). It returns the index of the last '.'.
func splitJWT(tok string) (lastDot int, ok bool) {
	first := -1
	lastDot = -1
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		case c == '.':
			switch {
			case first < 0:
				first = i
			case lastDot < 0:
				lastDot = i
			default:
				return -1, false // more than three segments (a JWE has five)
			}
		default:
			return -1, false
		}
	}
	if first <= 0 || lastDot < 0 || lastDot == first+1 {
		return -1, false
	}
	if !canonicalB64(tok[:first]) || !canonicalB64(tok[first+1:lastDot]) || !canonicalB64(tok[lastDot+1:]) {
		return -1, false
	}
	return lastDot, true
}

// canonicalB64 reports whether seg (base64url characters only) has a valid unpadded length
// and zero unused bits in its last character.
func canonicalB64(seg string) bool {
	var unused byte
	switch len(seg) % 4 {
	case 0:
		return true
	case 1:
		return false
	case 2:
		unused = 0x0f
	case 3:
		unused = 0x03
	}
	return b64urlValue(seg[len(seg)-1])&unused == 0
}

// b64urlValue is the 6-bit value of a base64url character.
func b64urlValue(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c - 'A'
	case 'a' <= c && c <= 'z':
		return c - 'a' + 26
	case '0' <= c && c <= '9':
		return c - '0' + 52
	case c == '-':
		return 62
	}
	return 63
}

// parseJWT splits tok, parses its header with go-jose (accepted algorithms only) and decodes
// its claims. Nothing is verified yet.
func parseJWT(tok string) (*parsedJWT, *reason.Error) {
	lastDot, ok := splitJWT(tok)
	if !ok {
		return nil, invalidToken(reason.MalformedToken, "the bearer token is not a JWS in compact form")
	}
	jws, err := jose.ParseSignedCompact(tok, jwks.Algorithms)
	if err != nil {
		var ua *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &ua) {
			return nil, invalidToken(reason.UnsupportedAlgorithm, "")
		}
		return nil, invalidToken(reason.MalformedToken, "the bearer token's JWS header or encoding is not valid")
	}
	if len(jws.Signatures) != 1 {
		return nil, invalidToken(reason.MalformedToken, "the bearer token must carry one signature")
	}
	sig := &jws.Signatures[0]
	if rerr := checkHeader(&sig.Header); rerr != nil {
		return nil, rerr
	}
	p := &parsedJWT{alg: sig.Header.Algorithm, kid: sig.Header.KeyID, input: tok[:lastDot], sig: sig.Signature}
	if !parseClaims(jws.UnsafePayloadWithoutVerification(), &p.claims) {
		return nil, invalidToken(reason.MalformedToken, "the bearer token's claims are not a valid JSON object")
	}
	return p, nil
}

// checkHeader refuses header parameters a JWT access token must not rely on.
func checkHeader(h *jose.Header) *reason.Error {
	for k, val := range h.ExtraHeaders {
		switch k {
		case "crit":
			// RFC 7515 §4.1.11: extensions we do not understand make the JWS invalid; we
			// understand none, so any crit (even ["b64"]) is refused.
			return invalidToken(reason.MalformedToken, "the bearer token has a crit header")
		case "b64":
			return invalidToken(reason.MalformedToken, "the bearer token has a b64 header (RFC 7797 is not accepted)")
		case "cty":
			if s, _ := val.(string); strings.EqualFold(s, "JWT") {
				return invalidToken(reason.MalformedToken, "nested JWTs are not accepted")
			}
		case "typ":
			s, ok := val.(string)
			if !ok {
				return invalidToken(reason.MalformedToken, "the bearer token's typ is not a string")
			}
			t := strings.TrimPrefix(strings.ToLower(s), "application/")
			if strings.HasSuffix(t, "+jwt") && t != "at+jwt" {
				return invalidToken(reason.MalformedToken, "the bearer token is typed as another kind of JWT ("+t+")")
			}
		}
	}
	return nil
}

// jwtClaims are the claims tokenagent reads from a JWT payload.
type jwtClaims struct {
	Iss, Sub, ClientID string
	Aud                audience
	Exp, Nbf, Iat      numericDate
	scope              string
	hasScope           bool
	scp                audience // `scp`: a string or a list of strings
	hasScp             bool
}

// scopes returns the token's scopes: `scope` split on U+0020 (RFC 6749 §3.3, RFC 9068); without `scope`,
// `scp` as a space-separated string or a list of strings (Okta, Azure AD). ok is false when
// they hold control characters.
func (c *jwtClaims) scopes() ([]string, bool) {
	if c.hasScope {
		return splitScopes(nil, c.scope)
	}
	if !c.hasScp {
		return nil, true
	}
	out, ok := splitScopes(nil, c.scp.one)
	for _, e := range c.scp.many {
		if !ok {
			break
		}
		out, ok = splitScopes(out, e)
	}
	return out, ok
}

func splitScopes(out []string, s string) ([]string, bool) {
	if !headerSafe(s) {
		return nil, false
	}
	// RFC 6749 §3.3: scopes are separated by the space character U+0020 only; any other
	// space (U+00A0, a tab) is part of a scope (SPEC §3.4).
	for f := range strings.SplitSeq(s, " ") {
		if f != "" {
			out = append(out, f)
		}
	}
	return out, true
}

// audience is the `aud` claim: one string or a list of strings.
type audience struct {
	one  string
	many []string
	set  bool
}

func (a *audience) contains(want string) bool {
	if want == "" || !a.set {
		return false
	}
	if a.one == want {
		return true
	}
	for _, s := range a.many {
		if s == want {
			return true
		}
	}
	return false
}

// numericDate is a JWT NumericDate (RFC 7519 §2): seconds since the epoch, possibly
// fractional.
type numericDate struct {
	secs float64
	set  bool
}

// maxNumericDate bounds dates so conversions cannot overflow (2^62 s, as go-jose does).
const maxNumericDate = 1 << 62

func (n *numericDate) time() time.Time {
	s := math.Floor(n.secs)
	return time.Unix(int64(s), int64((n.secs-s)*1e9))
}

// parseClaims decodes the claims tokenagent reads from a JWT payload: a JSON object (RFC 8259)
// whose members are matched by exact, case-sensitive name after unescaping, like go-jose's
// JSON package and unlike encoding/json (so "ISS" never stands in for "iss"). It refuses:
// anything but one JSON object; a claim it reads given twice; `iss`, `sub`, `client_id`,
// `scope` that are not strings (null counts as absent); `aud`, `scp` that are not a string or
// a list of strings; `exp`, `nbf`, `iat` that are not numbers within ±2^62; strings that are
// not valid UTF-8; nesting deeper than 32. Other members are checked as JSON and skipped. It
// allocates only the strings it keeps.
func parseClaims(b []byte, c *jwtClaims) bool {
	s := jsonScanner{b: b}
	return s.object(claimBit, func(key string) bool {
		switch key {
		case "iss":
			return s.optString(&c.Iss, nil)
		case "sub":
			return s.optString(&c.Sub, nil)
		case "client_id":
			return s.optString(&c.ClientID, nil)
		case "scope":
			return s.optString(&c.scope, &c.hasScope)
		case "aud":
			return s.stringOrList(&c.Aud)
		case "scp":
			ok := s.stringOrList(&c.scp)
			c.hasScp = c.scp.set
			return ok
		case "exp":
			return s.date(&c.Exp)
		case "nbf":
			return s.date(&c.Nbf)
		case "iat":
			return s.date(&c.Iat)
		default:
			return s.skip(0)
		}
	})
}

// object walks one JSON object and nothing after it: for each member it reads the name and
// calls value, which must consume the member's value. A name for which bit is not 0 may
// appear once only (a claim read twice is refused). It reports whether all was well formed.
func (s *jsonScanner) object(bit func(string) uint16, value func(key string) bool) bool {
	s.ws()
	if !s.eat('{') {
		return false
	}
	var seen uint16
	s.ws()
	if !s.eat('}') {
		for {
			s.ws()
			key, ok := s.str()
			if !ok {
				return false
			}
			s.ws()
			if !s.eat(':') {
				return false
			}
			s.ws()
			if b := bit(key); b != 0 {
				if seen&b != 0 {
					return false // a claim we read, given twice
				}
				seen |= b
			}
			if !value(key) {
				return false
			}
			s.ws()
			if s.eat(',') {
				continue
			}
			if s.eat('}') {
				break
			}
			return false
		}
	}
	s.ws()
	return s.i == len(s.b)
}

func claimBit(key string) uint16 {
	switch key {
	case "iss":
		return 1 << 0
	case "sub":
		return 1 << 1
	case "client_id":
		return 1 << 2
	case "scope":
		return 1 << 3
	case "aud":
		return 1 << 4
	case "scp":
		return 1 << 5
	case "exp":
		return 1 << 6
	case "nbf":
		return 1 << 7
	case "iat":
		return 1 << 8
	}
	return 0
}

// jsonScanner reads JSON (RFC 8259) from b at i.
type jsonScanner struct {
	b []byte
	i int
}

// maxJSONDepth bounds the nesting of skipped values.
const maxJSONDepth = 32

func (s *jsonScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *jsonScanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *jsonScanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// literal consumes lit ("null", "true", "false").
func (s *jsonScanner) literal(lit string) bool {
	if len(s.b)-s.i >= len(lit) && string(s.b[s.i:s.i+len(lit)]) == lit {
		s.i += len(lit)
		return true
	}
	return false
}

// strEnd checks the string starting at s.i (at its opening quote) and returns the index of its
// closing quote and whether it holds escapes.
func (s *jsonScanner) strEnd() (end int, escaped, ok bool) {
	if s.peek() != '"' {
		return 0, false, false
	}
	for j := s.i + 1; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			return j, escaped, true
		case c < 0x20:
			return 0, false, false
		case c == '\\':
			escaped = true
			j++
			if j >= len(s.b) {
				return 0, false, false
			}
			switch s.b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(s.b) || !isHexDigit(s.b[j+1]) || !isHexDigit(s.b[j+2]) || !isHexDigit(s.b[j+3]) || !isHexDigit(s.b[j+4]) {
					return 0, false, false
				}
				j += 4
			default:
				return 0, false, false
			}
		}
	}
	return 0, false, false
}

// str reads a string and returns it unescaped; it must be valid UTF-8.
func (s *jsonScanner) str() (string, bool) {
	end, escaped, ok := s.strEnd()
	if !ok {
		return "", false
	}
	raw := s.b[s.i : end+1]
	s.i = end + 1
	if !escaped {
		if !utf8.Valid(raw[1 : len(raw)-1]) {
			return "", false
		}
		return string(raw[1 : len(raw)-1]), true
	}
	var out string // the rare escaped string: encoding/json unescapes a string literal exactly
	if !utf8.Valid(raw) || json.Unmarshal(raw, &out) != nil || !utf8.ValidString(out) {
		return "", false
	}
	return out, true
}

// optString reads a string, or null (absent), into dst; has (when given) tells which.
func (s *jsonScanner) optString(dst *string, has *bool) bool {
	if s.literal("null") {
		return true
	}
	v, ok := s.str()
	if ok {
		*dst = v
		if has != nil {
			*has = true
		}
	}
	return ok
}

// stringOrList reads a string, a list of strings, or null (absent).
func (s *jsonScanner) stringOrList(a *audience) bool {
	switch s.peek() {
	case 'n':
		return s.literal("null")
	case '"':
		v, ok := s.str()
		a.one, a.set = v, ok
		return ok
	case '[':
		s.i++
		a.set = true
		s.ws()
		if s.eat(']') {
			return true
		}
		for {
			s.ws()
			v, ok := s.str()
			if !ok {
				return false
			}
			a.many = append(a.many, v)
			s.ws()
			if s.eat(',') {
				continue
			}
			return s.eat(']')
		}
	}
	return false
}

// date reads a NumericDate: a JSON number (not null, not a string).
func (s *jsonScanner) date(n *numericDate) bool {
	start := s.i
	if !s.number() {
		return false
	}
	f, err := strconv.ParseFloat(unsafe.String(&s.b[start], s.i-start), 64)
	if err != nil || f >= maxNumericDate || f <= -maxNumericDate {
		return false
	}
	n.secs, n.set = f, true
	return true
}

// number consumes a JSON number: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
func (s *jsonScanner) number() bool {
	s.eat('-')
	switch c := s.peek(); {
	case c == '0':
		s.i++
	case '1' <= c && c <= '9':
		s.digits()
	default:
		return false
	}
	if s.eat('.') && !s.digits() {
		return false
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if !s.eat('+') {
			s.eat('-')
		}
		if !s.digits() {
			return false
		}
	}
	return true
}

// digits consumes one or more digits.
func (s *jsonScanner) digits() bool {
	start := s.i
	for s.i < len(s.b) && '0' <= s.b[s.i] && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i > start
}

// skip checks and consumes any JSON value.
func (s *jsonScanner) skip(depth int) bool {
	if depth > maxJSONDepth {
		return false
	}
	switch c := s.peek(); {
	case c == '"':
		_, ok := s.str()
		return ok
	case c == '{':
		s.i++
		s.ws()
		if s.eat('}') {
			return true
		}
		for {
			s.ws()
			if _, ok := s.str(); !ok {
				return false
			}
			s.ws()
			if !s.eat(':') {
				return false
			}
			s.ws()
			if !s.skip(depth + 1) {
				return false
			}
			s.ws()
			if s.eat(',') {
				continue
			}
			return s.eat('}')
		}
	case c == '[':
		s.i++
		s.ws()
		if s.eat(']') {
			return true
		}
		for {
			s.ws()
			if !s.skip(depth + 1) {
				return false
			}
			s.ws()
			if s.eat(',') {
				continue
			}
			return s.eat(']')
		}
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || '0' <= c && c <= '9':
		return s.number()
	}
	return false
}

// ---- minting ----

// MintJWT signs claims with key, a private JWK (RSA, EC P-256, Ed25519, or a symmetric key of
// at least 32 bytes), and returns the JWS compact serialization, for tests and `tokenagent
// mint jwt`. The algorithm is key.Algorithm, or RS256, ES256, EdDSA or HS256 by the key's
// type when it gives none; the header carries `kid` (key.KeyID, when set) and
// `typ: at+jwt` (RFC 9068).
func MintJWT(key jose.JSONWebKey, claims map[string]any) (string, error) {
	alg := jose.SignatureAlgorithm(key.Algorithm)
	if alg == "" {
		switch key.Key.(type) {
		case []byte:
			alg = jose.HS256
		default:
			if key.IsPublic() {
				return "", errors.New("token: MintJWT needs a private key")
			}
			switch key.Public().Key.(type) {
			case *rsa.PublicKey:
				alg = jose.RS256
			case *ecdsa.PublicKey:
				alg = jose.ES256
			case ed25519.PublicKey:
				alg = jose.EdDSA
			default:
				return "", errors.New("token: MintJWT: unsupported key type")
			}
		}
	}
	if !slices.Contains(jwks.Algorithms, alg) {
		return "", errors.New("token: MintJWT: algorithm " + string(alg) + " is not accepted by tokenagent")
	}
	opts := (&jose.SignerOptions{}).WithType("at+jwt")
	if _, sym := key.Key.([]byte); sym && key.KeyID != "" {
		opts = opts.WithHeader("kid", key.KeyID) // go-jose names only asymmetric keys itself
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return obj.CompactSerialize()
}

package token

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"
	"weak"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/agent/internal/clock"
	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/jwks"
	"github.com/tokenagent/tokenagent/vault/spans"
)

// OAuthVerifier verifies OAuth API Tokens and long-term JWTs (`Authorization: Bearer <JWS>`,
// SPEC §3.4) against the site's own issuer (`oauth` record) and its external issuers
// (`issuers/<name>`).
//
//	v := &token.OAuthVerifier{Keys: store, JWKS: keySets, Cache: verified, Metrics: m}
//	id, err := v.Verify(ctx, site, bearer)
//
// The steps, each failing with its own reason:
//
//  1. size (at most MaxJWTLen) and shape: three canonical base64url segments (malformed_token);
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
//   - Safe for concurrent use; do not copy after first use. An OAuthVerifier holds one
//     config's view of the issuers (rebuilt when the store hands out new records); the key
//     sets (JWKS) and the verified tokens (Cache) outlive it and are shared.
//   - The Identity returned shares its Scopes slice with the cache: callers must not modify it.
//   - Every 401 it returns carries `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750
//     §3.1); keys_unavailable (503) carries `Retry-After`.
type OAuthVerifier struct {
	// Keys looks up the site's issuer records (required).
	Keys Issuers
	// JWKS holds the issuers' key sets (required).
	JWKS *jwks.Cache
	// Cache holds verified tokens (nil: every token is verified in full).
	Cache *VerifiedTokens
	// MaxCacheAge bounds how long a verified token is served from Cache: the key store's
	// refresh interval, so a revoked issuer or key takes effect within it (default 30 s).
	MaxCacheAge time.Duration
	// Metrics counts full verifications (required when Cache is set, else optional).
	Metrics *OAuthMetrics
	// Logger receives reports of unusable issuer keys (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time

	views sync.Map // site ID -> *issuerView
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
func NewOAuthMetrics(reg prometheus.Registerer) (*OAuthMetrics, error) {
	m := &OAuthMetrics{
		TokenCache: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenagent_oauth_token_cache_total",
			Help: "Verified-token cache lookups of OAuth bearer tokens by result (hit, miss)."}, []string{"result"}),
		Verifications: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenagent_oauth_verifications_total",
			Help: "Full verifications of OAuth bearer tokens (cache misses) by result (ok or the denial's reason)."}, []string{"result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.TokenCache, m.Verifications} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// OAuthLeeway is the clock skew allowed on every time check of a JWT (SPEC §3.4).
const OAuthLeeway = ClockSkew

// trustedIssuer is one issuer record of a site with its key set.
type trustedIssuer struct {
	rec  *vault.Issuer
	own  bool // the site's `oauth` record (else one of `issuers/<name>`)
	keys issuerKeys
}

// issuerView is a site's trusted issuers as of the store records it was built from.
type issuerView struct {
	own      *vault.Issuer
	ext      []*vault.Issuer
	list     []*trustedIssuer
	warnings []string
}

// Verify checks the bearer JWT tok for site and returns the identity it proves, or a
// *reason.Error: malformed_token, unsupported_algorithm, unknown_issuer, unknown_key,
// bad_signature, invalid_audience, token_expired, token_not_yet_valid or keys_unavailable.
func (v *OAuthVerifier) Verify(ctx context.Context, site *SiteSettings, tok string) (Identity, error) {
	if len(tok) == 0 || len(tok) > MaxJWTLen {
		return Identity{}, invalidToken(reason.MalformedToken, "the bearer token is empty or longer than 8 KiB")
	}
	now := clock.Now(v.Now)
	var h uint64
	if v.Cache != nil {
		h = v.Cache.key(site.ID, tok)
		if e, ok := v.Cache.get(h, site.ID, tok); ok {
			if now.Before(e.until) && v.stillTrusted(ctx, site.ID, e) {
				v.Cache.hit.Inc()
				if s := spans.Recording(ctx); s != nil {
					s.SetAttributes(spans.CacheHit.Bool(true))
				}
				return e.id, nil
			}
			v.Cache.del(h) // expired, or its issuer or keys changed
		}
		v.Cache.miss.Inc()
		if s := spans.Recording(ctx); s != nil {
			s.SetAttributes(spans.CacheHit.Bool(false))
		}
	}
	e, err := v.verify(ctx, site, tok, now)
	if v.Metrics != nil {
		result := "ok"
		if err != nil {
			result = string(err.Reason)
		}
		v.Metrics.Verifications.WithLabelValues(result).Inc()
	}
	if err != nil {
		return Identity{}, err
	}
	if v.Cache != nil {
		v.Cache.set(h, e)
	}
	return e.id, nil
}

// stillTrusted reports whether a cached token's issuer record is still the store's current
// one, and its key set still the issuer's current one.
func (v *OAuthVerifier) stillTrusted(ctx context.Context, site string, e *verifiedToken) bool {
	want := e.rec.Value()
	if want == nil {
		return false
	}
	if e.own {
		if rec, err := v.Keys.OAuthIssuer(ctx, site); err != nil || rec != want {
			return false
		}
	} else if recs, err := v.Keys.Issuers(ctx, site); err != nil || !slices.Contains(recs, want) {
		return false
	}
	if e.remote != nil {
		cur := e.remote.Current()
		return cur != nil && e.set.Value() == cur
	}
	return true
}

// verify does the full verification of a token not found in the cache.
func (v *OAuthVerifier) verify(ctx context.Context, site *SiteSettings, tok string, now time.Time) (*verifiedToken, *reason.Error) {
	p, rerr := parseJWS(tok, accessTokenKind)
	if rerr != nil {
		return nil, rerr
	}
	var c accessClaims
	if !decodeClaims(p.payload, &c) {
		return nil, invalidToken(reason.MalformedToken, "the bearer token's claims are not a valid JSON object")
	}
	view, verr := v.view(ctx, site.ID)
	ti, found := findIssuer(view.list, c.Iss, &c.Aud,
		func(t *trustedIssuer) string { return t.rec.Issuer }, func(t *trustedIssuer) string { return t.rec.Audience })
	if !found {
		if verr != nil {
			return nil, verr
		}
		return nil, invalidToken(reason.UnknownIssuer, "")
	}
	set, rerr := verifySignature(ctx, ti.keys, p, accessTokenKind)
	if rerr != nil {
		return nil, rerr
	}
	id, until, rerr := checkAccessClaims(&c, ti.rec.Audience, now)
	if rerr != nil {
		return nil, rerr
	}
	maxAge := v.MaxCacheAge
	if maxAge <= 0 {
		maxAge = 30 * time.Second
	}
	if until.After(now.Add(maxAge)) {
		until = now.Add(maxAge)
	}
	e := &verifiedToken{site: site.ID, token: tok, id: id, until: until, own: ti.own, rec: weak.Make(ti.rec),
		remote: ti.keys.remote}
	if ti.keys.remote != nil {
		e.set = weak.Make(set)
	}
	return e, nil
}

// checkAccessClaims applies the claim rules to a token whose signature verified. It returns
// the identity and until when the token may be served from the cache (exp + leeway).
func checkAccessClaims(c *accessClaims, audience string, now time.Time) (Identity, time.Time, *reason.Error) {
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
	if c.Iat.set {
		id.IssuedAt = c.Iat.time()
	}
	if c.ClientID != "" && (c.Sub == "" || c.Sub == c.ClientID) {
		id.User, id.Application = "", true
	}
	return id, exp.Add(OAuthLeeway), nil
}

// view returns the site's trusted issuers, rebuilt when the store hands out new records.
// When a record could not be read, the view holds what could be, and the error is returned
// with it.
func (v *OAuthVerifier) view(ctx context.Context, site string) (*issuerView, *reason.Error) {
	own, ownErr := v.Keys.OAuthIssuer(ctx, site)
	if errors.Is(ownErr, vault.ErrNotFound) {
		own, ownErr = nil, nil
	}
	ext, extErr := v.Keys.Issuers(ctx, site)
	if errors.Is(extErr, vault.ErrNotFound) {
		ext, extErr = nil, nil
	}
	err := errors.Join(ownErr, extErr)
	if cur, ok := v.views.Load(site); ok && err == nil {
		if cv := cur.(*issuerView); cv.own == own && sameIssuers(cv.ext, ext) {
			return cv, nil
		}
	}
	nv := &issuerView{own: own, ext: ext}
	add := func(rec *vault.Issuer, isOwn bool) {
		ti := &trustedIssuer{rec: rec, own: isOwn}
		ti.keys, nv.warnings = resolveKeys(v.JWKS, "site "+site+" issuer "+rec.Name, rec.JWKS, rec.JWKSURI, nv.warnings)
		nv.list = append(nv.list, ti)
	}
	if own != nil {
		add(own, true)
	}
	for _, rec := range ext {
		add(rec, false)
	}
	if err != nil {
		return nv, unavailable(err, "")
	}
	if old, loaded := v.views.Swap(site, nv); !loaded || !slices.Equal(old.(*issuerView).warnings, nv.warnings) {
		for _, w := range nv.warnings {
			v.logger().Warn("issuer key left out", "problem", w)
		}
	}
	return nv, nil
}

// resolveKeys resolves the keys of a record called what: its jwks_uri through cache, or its
// inline jwks, whose problems are added to warnings (an unusable set is an empty one).
func resolveKeys(cache *jwks.Cache, what string, inline []byte, uri string, warnings []string) (issuerKeys, []string) {
	if uri != "" {
		return issuerKeys{remote: cache.Remote(uri)}, warnings
	}
	set, err := cache.Inline(inline)
	if err != nil {
		return issuerKeys{inline: &jwks.Set{}}, append(warnings, what+": jwks: "+err.Error())
	}
	for _, p := range set.Problems {
		warnings = append(warnings, what+": jwks "+p)
	}
	if set.Len() == 0 {
		warnings = append(warnings, what+": jwks holds no usable key")
	}
	return issuerKeys{inline: set}, warnings
}

func sameIssuers(a, b []*vault.Issuer) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

func (v *OAuthVerifier) logger() *slog.Logger {
	if v.Logger == nil {
		return slog.Default()
	}
	return v.Logger
}

// Prefetch fetches the remote key sets of the given sites' issuers now, so that /readyz
// reports a jwks_uri that cannot be fetched before any token needs it. It waits at most until
// ctx ends.
func (v *OAuthVerifier) Prefetch(ctx context.Context, sites ...string) {
	var remotes []*jwks.Remote
	for _, s := range sites {
		view, _ := v.view(ctx, s)
		for _, ti := range view.list {
			if ti.keys.remote != nil {
				remotes = append(remotes, ti.keys.remote)
			}
		}
	}
	fetchAll(ctx, remotes)
}

// fetchAll fetches remote key sets concurrently, waiting at most until ctx ends.
func fetchAll(ctx context.Context, remotes []*jwks.Remote) {
	var wg sync.WaitGroup
	for _, r := range remotes {
		wg.Go(func() { _, _ = r.Keys(ctx) })
	}
	wg.Wait()
}

// Warnings lists problems that do not stop serving: remote key sets that cannot be fetched,
// and keys of stored sets left out as unusable (sorted, one line each, no key material).
func (v *OAuthVerifier) Warnings() []string {
	out := v.JWKS.Warnings()
	v.views.Range(func(_, val any) bool {
		out = append(out, val.(*issuerView).warnings...)
		return true
	})
	sort.Strings(out)
	return out
}

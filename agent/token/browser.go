package token

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/vault"
)

// Header is one HTTP header name and value: of an answer the agent gives, of a request it
// lets through (the x-auth-* headers) or of a response it adds to (CORS). Names are in lower
// case, the form HTTP/2 and Envoy use. It is the one header type of the pipeline: package
// agent's Decision and package extauthz's answers carry it as it is.
type Header struct {
	Name, Value string
}

// The CORS answer of SPEC §3.3.
const (
	// PreflightMaxAge is how long (seconds) a browser may cache a preflight answer.
	PreflightMaxAge = "600"
	// PreflightAllowMethods are the methods every allowed preflight names; a requested method
	// outside this list is added to the answer when it is a valid method token.
	PreflightAllowMethods = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
	// PreflightAllowHeaders are the request headers every allowed preflight names: the
	// credentials' headers and Content-Type.
	PreflightAllowHeaders = "X-Deki-Token, Authorization, Content-Type, X-Authtoken"
)

// preflightExtraHeaders are the further request headers a preflight answer names when, and
// only when, the browser asks for them (Access-Control-Request-Headers). Anything else is left
// out, and the browser then refuses to send the request: in particular `x-auth-*` (the agent's
// own upstream headers) and method-override headers (which would let a request run under a
// method the route rules never saw).
var preflightExtraHeaders = map[string]string{
	"accept":              "Accept",
	"accept-language":     "Accept-Language",
	"content-language":    "Content-Language",
	"cache-control":       "Cache-Control",
	"pragma":              "Pragma",
	"if-match":            "If-Match",
	"if-none-match":       "If-None-Match",
	"if-modified-since":   "If-Modified-Since",
	"if-unmodified-since": "If-Unmodified-Since",
	"range":               "Range",
	"x-requested-with":    "X-Requested-With",
}

// preflightBaseHeaders are the lower-case names of PreflightAllowHeaders.
var preflightBaseHeaders = map[string]bool{
	"x-deki-token": true, "authorization": true, "content-type": true, "x-authtoken": true,
}

// BrowserVerifier verifies the Browser API Token `X-Deki-Token: {key}` (SPEC §3.3) and the
// request's `Origin` against the key's trusted origins and the site's own hostnames, and
// answers CORS preflights from a per-site index of every browser key's origins.
//
//	v := &token.BrowserVerifier{Keys: store}
//	id, err := v.Verify(ctx, site, key, req.Headers["origin"])
//	if err == nil {
//		resp = append(resp, token.CORSHeaders(origin, host)...) // host: the request's canonical host
//	}
//
// # Notes
//
//   - Safe for concurrent use; do not copy after first use. Fill Keys and Logger before.
//   - A key's origin patterns are compiled once per record read from the key source (the
//     compiled form is kept per record pointer, so a refreshed record is compiled again and
//     the old one dropped); the preflight index is built once per BrowserKeySet pointer,
//     which the store replaces on each refresh. A request never scans the patterns.
//   - A pattern that does not compile is left out and logged once as a warning.
//   - The key is not a secret (it ships in web pages), so it is compared with ordinary map
//     lookups, and an unknown key answers unknown_key.
type BrowserVerifier struct {
	// Keys looks up the site's browser keys (required).
	Keys BrowserKeys
	// Logger receives warnings about origin patterns that do not compile (default
	// slog.Default()).
	Logger *slog.Logger

	compiled sync.Map // *vault.BrowserKey -> *OriginMatcher
	sites    atomic.Pointer[map[string]*siteOrigins]

	mu     sync.Mutex                       // guards the maps below and writes to sites
	latest map[browserRef]*vault.BrowserKey // the record each compiled entry was built from
	warned map[string]struct{}              // patterns already reported
}

// browserRef names one browser key of one site.
type browserRef struct{ site, name string }

// siteOrigins are the compiled origins of one site: its own hostnames, and the union of every
// browser key's origins (for preflights), rebuilt whenever the store hands out a new set.
type siteOrigins struct {
	hosts []string // the Site.Hosts own was built from
	own   *OriginMatcher
	pre   atomic.Pointer[preflightIndex]
}

type preflightIndex struct {
	set *vault.BrowserKeySet
	m   *OriginMatcher
}

// Verify checks a Browser API Token key for site and, when origin (the `Origin` header) is
// not empty, that the origin is one of the key's trusted origins or one of the site's own
// hostnames. An empty origin (no header) is accepted. The identity is of kind browser and
// names no user: the agent takes the user from an Auth Token that comes along.
//
// Reasons: malformed_token (the key is not 1 to 255 letters and digits), unknown_key,
// origin_not_allowed (403; also for `null` and a malformed origin), keys_unavailable.
func (v *BrowserVerifier) Verify(ctx context.Context, site *SiteSettings, key, origin string) (Identity, error) {
	if len(key) > MaxTokenLen || !isAlnum(key) {
		return Identity{}, reason.New(reason.MalformedToken)
	}
	rec, err := v.Keys.BrowserKey(ctx, site.ID, key)
	if err != nil {
		if errors.Is(err, vault.ErrNotFound) {
			return Identity{}, reason.New(reason.UnknownKey)
		}
		return Identity{}, unavailable(err, "")
	}
	if origin != "" {
		o, err := ParseOrigin(origin)
		if err != nil {
			return Identity{}, reason.Newf(reason.OriginNotAllowed, "the Origin header is not a valid http(s) origin")
		}
		if !v.siteFor(site).own.Match(o) && !v.keyMatcher(site.ID, rec).Match(o) {
			return Identity{}, reason.New(reason.OriginNotAllowed)
		}
	}
	return Identity{Kind: KindBrowser}, nil
}

// OriginAllowed reports whether origin may make browser requests to site at all (SPEC §3.3):
// the site has at least one browser key, and the origin is one of the site's own hostnames
// or matches an origin of any of its browser keys. A site without browser keys allows no
// origin, not even its own hostnames on another port or scheme: no page may then send it
// credentialed cross-origin requests. An origin that does not parse is not allowed. The error
// is a keys_unavailable denial when the key set cannot be read.
func (v *BrowserVerifier) OriginAllowed(ctx context.Context, site *SiteSettings, origin string) (bool, error) {
	o, err := ParseOrigin(origin)
	if err != nil {
		return false, nil
	}
	set, err := v.Keys.BrowserKeys(ctx, site.ID)
	switch {
	case errors.Is(err, vault.ErrNotFound):
		return false, nil
	case err != nil:
		return false, unavailable(err, "")
	case len(set.Keys) == 0:
		return false, nil
	}
	so := v.siteFor(site)
	if so.own.Match(o) {
		return true, nil
	}
	return v.preflightMatcher(site.ID, so, set).Match(o), nil
}

// Preflight answers a CORS preflight (`OPTIONS` with `Origin` and
// `Access-Control-Request-Method`) for site: the headers of the agent's 204 answer when the
// origin is allowed (see OriginAllowed), or an origin_not_allowed denial (403).
//
// The answer allows the origin (echoed as sent) with credentials, the methods of
// PreflightAllowMethods plus the requested method, the headers of PreflightAllowHeaders plus
// those requested headers that are in a short allow list (Accept, Accept-Language,
// Content-Language, Cache-Control, Pragma, If-Match, If-None-Match, If-Modified-Since,
// If-Unmodified-Since, Range, X-Requested-With), a max age of PreflightMaxAge seconds and
// `Vary: Origin`.
func (v *BrowserVerifier) Preflight(ctx context.Context, site *SiteSettings, origin, method, requestHeaders string) ([]Header, error) {
	ok, err := v.OriginAllowed(ctx, site, origin)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, reason.New(reason.OriginNotAllowed)
	}
	return []Header{
		{"access-control-allow-origin", origin},
		{"access-control-allow-credentials", "true"},
		{"access-control-allow-methods", preflightMethods(method)},
		{"access-control-allow-headers", preflightHeaders(requestHeaders)},
		{"access-control-max-age", PreflightMaxAge},
		{"vary", "Origin"},
	}, nil
}

// CORSHeaders returns the response headers of an allowed request whose Origin is cross-origin to
// requestHost, the request's canonical host (hostname.ParseAuthority of its authority): whose
// host differs from it (SPEC §3.3; schemes and ports are not compared): `Access-Control-Allow-Origin: <origin>` (as
// sent), `Access-Control-Allow-Credentials: true` and `Vary: Origin`. It returns nil for a
// same-origin request, no origin, or an origin that does not parse (which Verify refuses).
func CORSHeaders(origin, requestHost string) []Header {
	if origin == "" {
		return nil
	}
	o, err := ParseOrigin(origin)
	if err != nil || o.Host == requestHost {
		return nil
	}
	return []Header{
		{"access-control-allow-origin", origin},
		{"access-control-allow-credentials", "true"},
		{"vary", "Origin"},
	}
}

// preflightMethods is PreflightAllowMethods plus method when it is another valid method
// token.
func preflightMethods(method string) string {
	if method == "" || len(method) > 32 || !isHTTPToken(method) {
		return PreflightAllowMethods
	}
	for _, m := range strings.Split(PreflightAllowMethods, ", ") {
		if m == method {
			return PreflightAllowMethods
		}
	}
	return PreflightAllowMethods + ", " + method
}

// preflightHeaders is PreflightAllowHeaders plus the requested headers of the extra allow
// list, each once.
func preflightHeaders(requested string) string {
	out := PreflightAllowHeaders
	if len(requested) > 4096 {
		return out
	}
	var seen map[string]bool
	for requested != "" {
		var name string
		name, requested, _ = strings.Cut(requested, ",")
		name = strings.ToLower(strings.Trim(name, " \t"))
		canon, ok := preflightExtraHeaders[name]
		if !ok || preflightBaseHeaders[name] || seen[name] {
			continue
		}
		if seen == nil {
			seen = map[string]bool{}
		}
		seen[name] = true
		out += ", " + canon
	}
	return out
}

// isHTTPToken reports whether s is an RFC 9110 token (a method or header name).
func isHTTPToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// keyMatcher returns the compiled origins of rec, compiling them on the record's first use.
func (v *BrowserVerifier) keyMatcher(site string, rec *vault.BrowserKey) *OriginMatcher {
	if m, ok := v.compiled.Load(rec); ok {
		return m.(*OriginMatcher)
	}
	m, errs := CompileOrigins(rec.Origins)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.reportLocked(site, rec.Name, errs)
	if v.latest == nil {
		v.latest = map[browserRef]*vault.BrowserKey{}
	}
	ref := browserRef{site, rec.Name}
	if old := v.latest[ref]; old != nil && old != rec {
		v.compiled.Delete(old) // the record was refreshed: drop the old compiled form
	}
	v.latest[ref] = rec
	v.compiled.Store(rec, m)
	return m
}

// siteFor returns the compiled origins of site, building them on first use and again when the
// site's hostnames change (a config reload).
func (v *BrowserVerifier) siteFor(site *SiteSettings) *siteOrigins {
	if m := v.sites.Load(); m != nil {
		if so := (*m)[site.ID]; so != nil && slices.Equal(so.hosts, site.Hosts) {
			return so
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	var cur map[string]*siteOrigins
	if m := v.sites.Load(); m != nil {
		cur = *m
		if so := cur[site.ID]; so != nil && slices.Equal(so.hosts, site.Hosts) {
			return so
		}
	}
	so := &siteOrigins{hosts: slices.Clone(site.Hosts), own: &OriginMatcher{}}
	var errs []error
	for _, h := range site.Hosts {
		if err := so.own.AddHostPattern(h); err != nil {
			errs = append(errs, err)
		}
	}
	v.reportLocked(site.ID, "", errs)
	next := make(map[string]*siteOrigins, len(cur)+1)
	for k, s := range cur {
		next[k] = s
	}
	next[site.ID] = so
	v.sites.Store(&next)
	return so
}

// preflightMatcher returns the union of the origins of every key in set, building it when set
// is not the set it was last built from.
func (v *BrowserVerifier) preflightMatcher(site string, so *siteOrigins, set *vault.BrowserKeySet) *OriginMatcher {
	if set == nil {
		return nil
	}
	if p := so.pre.Load(); p != nil && p.set == set {
		return p.m
	}
	m := &OriginMatcher{}
	type bad struct {
		name string
		errs []error
	}
	var bads []bad
	for _, k := range set.Keys {
		var errs []error
		for _, p := range k.Origins {
			if err := m.Add(p); err != nil {
				errs = append(errs, err)
			}
		}
		if errs != nil {
			bads = append(bads, bad{k.Name, errs})
		}
	}
	if bads != nil {
		v.mu.Lock()
		for _, b := range bads {
			v.reportLocked(site, b.name, b.errs)
		}
		v.mu.Unlock()
	}
	so.pre.Store(&preflightIndex{set: set, m: m})
	return m
}

// reportLocked logs each pattern error once per site and key. v.mu must be held.
func (v *BrowserVerifier) reportLocked(site, key string, errs []error) {
	for _, err := range errs {
		id := site + "\x00" + key + "\x00" + err.Error()
		if _, seen := v.warned[id]; seen {
			continue
		}
		if v.warned == nil {
			v.warned = map[string]struct{}{}
		}
		v.warned[id] = struct{}{}
		log := v.Logger
		if log == nil {
			log = slog.Default()
		}
		if key == "" {
			log.Warn("site hostname cannot be used as a CORS origin; ignored", "site", site, "problem", err.Error())
		} else {
			log.Warn("browser token origin pattern ignored", "site", site, "key", key, "problem", err.Error())
		}
	}
}

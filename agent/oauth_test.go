package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file/filetest"
)

// The OAuth tests' sites: docs trusts its own issuer (EC key) and the external issuer
// "partner" (Ed25519 key); its routes are those of SPEC §7's example and more. Site other
// trusts only "down", whose jwks_uri answers 503.
const oaAgentConfig = `
keys: {source: file, file: keys.yaml}
sites:
  - id: docs
    hosts: [docs.example.com]
    routes:
      - {methods: [POST, PUT, DELETE], path: "/@api/deki/pages/*", require: user, scopes: [write]}
      - {path: "/@api/deki/site/*", require: authenticated}
      - {path: "/@api/deki/files/*", require: authenticated, scopes: [files]}
      - {path: "/admin", require: user}
  - id: other
    hosts: [other.example.com]
`

type oaAgent struct {
	a       *Agent
	ec      *ecdsa.PrivateKey
	ed      ed25519.PrivateKey
	down    *httptest.Server
	downHit atomic.Int64
}

func newOAAgent(t *testing.T) *oaAgent {
	t.Helper()
	f := &oaAgent{}
	var err error
	if f.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if _, f.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	f.down = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		f.downHit.Add(1)
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
	}))
	t.Cleanup(f.down.Close)
	pub := func(key any, kid string) string {
		b, err := (&jose.JSONWebKey{Key: key, KeyID: kid}).MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	keys := `
sites:
  docs:
    oauth:
      issuer: "https://docs.example.com"
      audience: docs
      jwks: {keys: [` + pub(&f.ec.PublicKey, "docs-1") + `]}
    issuers:
      partner:
        issuer: "https://partner.example.com"
        audience: docs
        jwks: {keys: [` + pub(f.ed.Public(), "partner-1") + `]}
  other:
    issuers:
      down: {issuer: "https://down.example.com", audience: other, jwks_uri: "` + f.down.URL + `/jwks"}
`
	cfg, err := config.Parse([]byte(oaAgentConfig), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	clock := func() time.Time { return testNow }
	store := filetest.Store(t, keys, vault.StoreOptions{Now: clock, Logger: slog.New(slog.DiscardHandler)})
	f.a, err = New(newRuntime(t, RuntimeOptions{Keys: store, Now: clock, Logger: slog.New(slog.DiscardHandler)}), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// jwt mints a docs token (own issuer) with claims changed by kv (nil deletes).
func (f *oaAgent) jwt(t *testing.T, kv map[string]any) string {
	t.Helper()
	c := map[string]any{"iss": "https://docs.example.com", "aud": "docs", "sub": "user-1", "client_id": "app-1",
		"scope": "read write", "iat": testNow.Unix(), "exp": testNow.Add(time.Hour).Unix()}
	for k, v := range kv {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	key, kid := any(f.ec), "docs-1"
	if c["iss"] == "https://partner.example.com" {
		key, kid = f.ed, "partner-1"
	}
	tok, err := token.MintJWT(jose.JSONWebKey{Key: key, KeyID: kid}, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestOAuthThroughAgent(t *testing.T) {
	f := newOAAgent(t)
	user := f.jwt(t, nil)
	readOnly := f.jwt(t, map[string]any{"scope": "read"})
	app := f.jwt(t, map[string]any{"sub": "app-1"})
	appNoSub := f.jwt(t, map[string]any{"sub": nil, "scope": "files write"})
	partner := f.jwt(t, map[string]any{"iss": "https://partner.example.com", "scope": nil, "scp": []string{"write"}})
	expired := f.jwt(t, map[string]any{"exp": testNow.Add(-time.Hour).Unix()})
	none := strings.Join([]string{b64j(map[string]any{"alg": "none"}), b64j(map[string]any{"iss": "https://docs.example.com",
		"aud": "docs", "sub": "admin", "exp": testNow.Add(time.Hour).Unix()}), ""}, ".")
	bearer := func(tok string) map[string]string { return map[string]string{"authorization": "Bearer " + tok} }
	for _, tc := range []struct {
		name         string
		method, path string
		host         string
		headers      map[string]string
		status       int
		reason       reason.Reason
		user, client string
		scopes       string
		challenge    string // expected WWW-Authenticate of a denial
	}{
		{name: "user token, write route, write scope", method: "POST", path: "/@api/deki/pages/home", headers: bearer(user),
			status: 200, user: "user-1", client: "app-1", scopes: "read write"},
		{name: "user token without the route's scope", method: "POST", path: "/@api/deki/pages/home", headers: bearer(readOnly),
			status: 403, reason: reason.InsufficientScope, challenge: `Bearer error="insufficient_scope", scope="write"`},
		{name: "scopes do not limit a route's other methods", method: "GET", path: "/@api/deki/pages/home", headers: bearer(readOnly),
			status: 200, user: "user-1", client: "app-1", scopes: "read"},
		{name: "application token on a user route", method: "POST", path: "/@api/deki/pages/home", headers: bearer(app),
			status: 403, reason: reason.UserTokenRequired},
		{name: "application token without sub on a user route", method: "PUT", path: "/@api/deki/pages/home", headers: bearer(appNoSub),
			status: 403, reason: reason.UserTokenRequired},
		{name: "application token on an exact user route", method: "GET", path: "/admin", headers: bearer(app),
			status: 403, reason: reason.UserTokenRequired},
		{name: "application token on an authenticated route", method: "GET", path: "/@api/deki/site/settings", headers: bearer(app),
			status: 200, client: "app-1", scopes: "read write"},
		{name: "application token with the scope an authenticated route names", method: "GET", path: "/@api/deki/files/a.png", headers: bearer(appNoSub),
			status: 200, client: "app-1", scopes: "files write"},
		{name: "application token lacking the scope an authenticated route names", method: "GET", path: "/@api/deki/files/a.png", headers: bearer(app),
			status: 403, reason: reason.InsufficientScope, challenge: `Bearer error="insufficient_scope", scope="files"`},
		{name: "application token, no rule", method: "GET", path: "/page", headers: bearer(app),
			status: 200, client: "app-1", scopes: "read write"},
		{name: "external issuer, scp list", method: "POST", path: "/@api/deki/pages/home", headers: bearer(partner),
			status: 200, user: "user-1", client: "app-1", scopes: "write"},
		{name: "user token on an exact user route", method: "GET", path: "/admin", headers: bearer(user),
			status: 200, user: "user-1", client: "app-1", scopes: "read write"},
		{name: "expired token", method: "GET", path: "/page", headers: bearer(expired),
			status: 401, reason: reason.TokenExpired, challenge: `Bearer error="invalid_token", error_description="token expired"`},
		{name: "alg none", method: "GET", path: "/page", headers: bearer(none),
			status: 401, reason: reason.UnsupportedAlgorithm, challenge: `Bearer error="invalid_token"`},
		{name: "an invalid token never falls back to anonymous", method: "GET", path: "/page", headers: bearer(user[:len(user)-4] + "AAAA"),
			status: 401, reason: reason.BadSignature, challenge: `Bearer error="invalid_token"`},
		{name: "docs token at site other", method: "GET", path: "/page", host: "other.example.com", headers: bearer(user),
			status: 401, reason: reason.UnknownIssuer},
		{name: "bearer and a server token", method: "GET", path: "/page", headers: map[string]string{"authorization": "Bearer " + user,
			"x-deki-token": serverToken("s3cret", "42", testNow)}, status: 400, reason: reason.MultipleCredentials},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := tc.host
			if host == "" {
				host = "docs.example.com"
			}
			d := check(t, f.a, tc.method, host, tc.path, tc.headers)
			if d.Status != tc.status || d.Reason != tc.reason {
				t.Fatalf("status %d reason %q, want %d %q (body %s)", d.Status, d.Reason, tc.status, tc.reason, d.Body)
			}
			if !d.Allowed {
				assertDenial(t, d, tc.reason)
				if tc.challenge != "" {
					if v, _ := header(d.Headers, "www-authenticate"); v != tc.challenge {
						t.Fatalf("www-authenticate %q, want %q", v, tc.challenge)
					}
				}
				return
			}
			for _, h := range []struct{ name, want string }{{HeaderKind, "oauth"}, {HeaderUser, tc.user},
				{HeaderClientID, tc.client}, {HeaderScopes, tc.scopes}, {HeaderSite, "docs"}} {
				v, ok := header(d.UpstreamHeaders, h.name)
				if v != h.want || ok != (h.want != "") {
					t.Errorf("%s = %q (set %v), want %q", h.name, v, ok, h.want)
				}
			}
			if d.Identity.Application != (tc.user == "") {
				t.Errorf("identity %+v", d.Identity)
			}
		})
	}
}

// An application token's request carries no x-auth-user, even a spoofed one.
func TestOAuthApplicationTokenSpoofedUser(t *testing.T) {
	f := newOAAgent(t)
	d := check(t, f.a, "GET", "docs.example.com", "/page", map[string]string{
		"authorization": "Bearer " + f.jwt(t, map[string]any{"sub": "app-1"}), "x-auth-user": "1"})
	if !d.Allowed {
		t.Fatalf("denied: %s", d.Body)
	}
	if _, ok := header(d.UpstreamHeaders, HeaderUser); ok || !slices.Contains(d.RemoveHeaders, "x-auth-user") {
		t.Fatalf("upstream %v, removed %v", d.UpstreamHeaders, d.RemoveHeaders)
	}
}

func TestOAuthKeysUnavailableThroughAgent(t *testing.T) {
	f := newOAAgent(t)
	tok, err := token.MintJWT(jose.JSONWebKey{Key: f.ed, KeyID: "k"}, map[string]any{
		"iss": "https://down.example.com", "aud": "other", "sub": "u", "exp": testNow.Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	d := check(t, f.a, "GET", "other.example.com", "/", map[string]string{"authorization": "Bearer " + tok})
	if d.Status != http.StatusServiceUnavailable || d.Reason != reason.KeysUnavailable {
		t.Fatalf("status %d reason %q", d.Status, d.Reason)
	}
	if v, _ := header(d.Headers, "retry-after"); v == "" {
		t.Fatal("no retry-after")
	}
	w := strings.Join(f.a.Warnings(), "\n")
	if !strings.Contains(w, f.down.URL) {
		t.Fatalf("warnings %q do not name the jwks_uri", w)
	}
	if strings.Contains(w, tok) {
		t.Fatal("a warning holds the token")
	}
}

// The first Warnings (the first /readyz) fetches the external key sets, before any token
// needs them, and reports the one that cannot be fetched.
func TestOAuthPrefetchOnFirstWarnings(t *testing.T) {
	f := newOAAgent(t)
	if n := f.downHit.Load(); n != 0 {
		t.Fatalf("New fetched %d times; only the first Warnings should", n)
	}
	w := strings.Join(f.a.Warnings(), "\n")
	if f.downHit.Load() != 1 || !strings.Contains(w, f.down.URL) {
		t.Fatalf("%d fetches, warnings %q", f.downHit.Load(), w)
	}
	_ = f.a.Warnings()
	if n := f.downHit.Load(); n != 1 {
		t.Fatalf("%d fetches after a second Warnings, want 1", n)
	}
}

// A config reload builds a new Agent over the same Runtime: it shares the fetched key sets (no
// new fetch inside the refetch interval).
func TestOAuthReloadSharesKeySets(t *testing.T) {
	f := newOAAgent(t)
	_ = f.a.Warnings() // fetches the key sets
	b, err := New(f.a.rt, f.a.Config())
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := token.MintJWT(jose.JSONWebKey{Key: f.ed, KeyID: "k"}, map[string]any{
		"iss": "https://down.example.com", "aud": "other", "sub": "u", "exp": testNow.Add(time.Hour).Unix()})
	_ = b.Warnings()
	for range 3 {
		if d := b.Check(context.Background(), &Request{Method: "GET", Host: "other.example.com", Path: "/",
			Headers: map[string]string{"authorization": "Bearer " + tok}}); d.Reason != reason.KeysUnavailable {
			t.Fatalf("reason %q", d.Reason)
		}
	}
	if n := f.downHit.Load(); n != 1 {
		t.Fatalf("%d fetches across the reload, want 1", n)
	}
}

func b64j(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

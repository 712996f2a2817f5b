package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file/filetest"
)

// The browser and legacy tests' sites: docs (legacy off) and legacy (legacy on), each with
// its own keys.
var (
	blNow       = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	blDocsKey   = []byte("browser-docs-auth-token-key-32by")
	blLegacyKey = []byte("browser-legacy-auth-token-key-32")
)

const (
	blDocsAPIKey   = "docs-legacy-api-key-not-enabled"
	blLegacyAPIKey = "legacy-site-api-key-0123456789"
)

const blConfig = `
keys: {source: file, file: keys.yaml}
sites:
  - id: docs
    hosts: [docs.example.com, "*.docs.example.com"]
    routes:
      - {path: "/@api/deki/site/*", require: authenticated}
      - {path: "/admin", require: user}
  - id: legacy
    hosts: [legacy.example.com]
    legacy: {impersonation: true, apikey: true}
    routes:
      - {path: "/auth", require: authenticated}
      - {path: "/admin", require: user}
`

func blKeysYAML() string {
	return `
sites:
  docs:
    authtoken:
      - {key: "` + base64.StdEncoding.EncodeToString(blDocsKey) + `", created: "2026-11-01T00:00:00Z"}
    browser-tokens:
      pub1: {origins: ["*.example.com", "https://app.example.org"]}
      pub2: {origins: ["partner.example.net"]}
    legacy: {apikey: "` + blDocsAPIKey + `"}
  legacy:
    authtoken:
      - {key: "` + base64.StdEncoding.EncodeToString(blLegacyKey) + `", created: "2026-11-01T00:00:00Z"}
    browser-tokens:
      lpub: {origins: ["https://portal.example.io"]}
    legacy: {apikey: "` + blLegacyAPIKey + `"}
`
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type blFixture struct {
	a    *Agent
	reg  *prometheus.Registry
	logs *syncBuffer
}

func newBLAgent(t testing.TB) *blFixture {
	t.Helper()
	cfg, err := config.Parse([]byte(blConfig), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	clock := func() time.Time { return blNow }
	store := filetest.Store(t, blKeysYAML(), vault.StoreOptions{Now: clock, Logger: slog.New(slog.DiscardHandler)})
	f := &blFixture{reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	f.a, err = New(newRuntime(t, RuntimeOptions{Keys: store, Now: clock, Registerer: f.reg,
		Logger: slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *blFixture) check(method, host, path string, h map[string]string) *Decision {
	if h == nil {
		h = map[string]string{}
	}
	return f.a.Check(context.Background(), &Request{Method: method, Scheme: "https", Host: host, Path: path, Headers: h})
}

func blHeader(hs []token.Header, name string) (string, bool) {
	for _, h := range hs {
		if h.Name == name {
			return h.Value, true
		}
	}
	return "", false
}

func blAuthToken(key []byte, user string) string {
	return token.MintAuthToken(vault.NewSecret(key), user, blNow.Add(-time.Hour))
}

func blWantDenial(t *testing.T, d *Decision, r reason.Reason, status int) {
	t.Helper()
	if d.Allowed || d.Answered || d.Reason != r || d.Status != status {
		t.Fatalf("decision allowed=%v answered=%v status=%d reason=%q, want denial %d %q",
			d.Allowed, d.Answered, d.Status, d.Reason, status, r)
	}
	if v, _ := blHeader(d.Headers, HeaderReason); v != string(r) {
		t.Fatalf("x-auth-reason %q, want %q", v, r)
	}
}

func blWantAllowed(t *testing.T, d *Decision, kind token.Kind, user string) {
	t.Helper()
	if !d.Allowed {
		t.Fatalf("denied %d %q, want allowed", d.Status, d.Reason)
	}
	if v, _ := blHeader(d.UpstreamHeaders, HeaderKind); v != string(kind) {
		t.Fatalf("x-auth-kind %q, want %q", v, kind)
	}
	v, ok := blHeader(d.UpstreamHeaders, HeaderUser)
	if v != user || ok != (user != "") {
		t.Fatalf("x-auth-user %q (set %v), want %q", v, ok, user)
	}
	for _, q := range []string{"apikey", "authtoken"} {
		found := false
		for _, r := range d.RemoveQuery {
			found = found || r == q
		}
		if !found {
			t.Fatalf("query_parameters_to_remove %v lacks %q", d.RemoveQuery, q)
		}
	}
}

func wantCORS(t *testing.T, d *Decision, origin string) {
	t.Helper()
	if origin == "" {
		if len(d.ResponseHeaders) != 0 {
			t.Fatalf("response headers %v on a same-origin request", d.ResponseHeaders)
		}
		return
	}
	want := map[string]string{
		"access-control-allow-origin":      origin,
		"access-control-allow-credentials": "true",
		"vary":                             "Origin",
	}
	if len(d.ResponseHeaders) != len(want) {
		t.Fatalf("response headers %v, want %v", d.ResponseHeaders, want)
	}
	for n, v := range want {
		if got, _ := blHeader(d.ResponseHeaders, n); got != v {
			t.Fatalf("%s: %q, want %q", n, got, v)
		}
	}
}

func TestBrowserTokenWithAuthToken(t *testing.T) {
	f := newBLAgent(t)
	valid := blAuthToken(blDocsKey, "42")
	forged := blAuthToken(blLegacyKey, "42") // signed with another site's key
	tests := []struct {
		name    string
		host    string
		path    string
		headers map[string]string
		// want: "" allowed, else the denial
		want    reason.Reason
		status  int
		user    string
		corsFor string // the Origin expected in CORS headers; "" for none
	}{
		{name: "no auth token, no origin", path: "/",
			headers: map[string]string{"x-deki-token": "pub1"}},
		{name: "valid auth token cookie, cross origin", path: "/@api/deki/pages/1",
			headers: map[string]string{"x-deki-token": "pub1", "cookie": "a=b; authtoken=" + valid, "origin": "https://app.example.com"},
			user:    "42", corsFor: "https://app.example.com"},
		{name: "valid auth token header, exact origin", path: "/",
			headers: map[string]string{"x-deki-token": "pub1", "x-authtoken": valid, "origin": "https://app.example.org"},
			user:    "42", corsFor: "https://app.example.org"},
		{name: "valid auth token query", path: "/?authtoken=" + valid + "&x=1",
			headers: map[string]string{"x-deki-token": "pub1"}, user: "42"},
		{name: "valid auth token, route requires a user", path: "/admin",
			headers: map[string]string{"x-deki-token": "pub1", "x-authtoken": valid}, user: "42"},
		{name: "invalid auth token", path: "/",
			headers: map[string]string{"x-deki-token": "pub1", "x-authtoken": forged, "origin": "https://app.example.com"},
			want:    reason.BadSignature, status: http.StatusUnauthorized},
		{name: "malformed auth token", path: "/",
			headers: map[string]string{"x-deki-token": "pub1", "x-authtoken": "garbage"},
			want:    reason.MalformedToken, status: http.StatusUnauthorized},
		{name: "empty auth token", path: "/?authtoken=",
			headers: map[string]string{"x-deki-token": "pub1"},
			want:    reason.MalformedToken, status: http.StatusUnauthorized},
		{name: "absent auth token, route requires authentication", path: "/@api/deki/site/x",
			headers: map[string]string{"x-deki-token": "pub1"},
			want:    reason.AuthenticationRequired, status: http.StatusUnauthorized},
		{name: "absent auth token, route requires a user", path: "/admin",
			headers: map[string]string{"x-deki-token": "pub1"},
			want:    reason.AuthenticationRequired, status: http.StatusUnauthorized},
		{name: "same origin: no CORS headers", path: "/",
			headers: map[string]string{"x-deki-token": "pub2", "origin": "https://docs.example.com", "x-authtoken": valid}, user: "42"},
		{name: "same host other port: no CORS headers", path: "/",
			headers: map[string]string{"x-deki-token": "pub2", "origin": "http://docs.example.com:8080"}},
		{name: "site subdomain is cross origin", path: "/",
			headers: map[string]string{"x-deki-token": "pub2", "origin": "https://eu.docs.example.com"},
			corsFor: "https://eu.docs.example.com"},
		{name: "request on a subdomain host, same origin", host: "eu.docs.example.com:443", path: "/",
			headers: map[string]string{"x-deki-token": "pub2", "origin": "https://eu.docs.example.com"}},
		{name: "origin not allowed", path: "/",
			headers: map[string]string{"x-deki-token": "pub2", "origin": "https://app.example.com", "x-authtoken": valid},
			want:    reason.OriginNotAllowed, status: http.StatusForbidden},
		{name: "bare suffix not allowed", path: "/",
			headers: map[string]string{"x-deki-token": "pub1", "origin": "https://example.com"},
			want:    reason.OriginNotAllowed, status: http.StatusForbidden},
		{name: "null origin", path: "/",
			headers: map[string]string{"x-deki-token": "pub1", "origin": "null"},
			want:    reason.OriginNotAllowed, status: http.StatusForbidden},
		{name: "empty origin header", path: "/",
			headers: map[string]string{"x-deki-token": "pub1", "origin": ""},
			want:    reason.OriginNotAllowed, status: http.StatusForbidden},
		{name: "unknown key", path: "/",
			headers: map[string]string{"x-deki-token": "nope"},
			want:    reason.UnknownKey, status: http.StatusUnauthorized},
		{name: "other site's key", path: "/",
			headers: map[string]string{"x-deki-token": "lpub"},
			want:    reason.UnknownKey, status: http.StatusUnauthorized},
		{name: "empty key", path: "/",
			headers: map[string]string{"x-deki-token": ""},
			want:    reason.MalformedToken, status: http.StatusUnauthorized},
		{name: "key with bad characters", path: "/",
			headers: map[string]string{"x-deki-token": "pub-1"},
			want:    reason.MalformedToken, status: http.StatusUnauthorized},
		{name: "browser key with API key", path: "/?apikey=" + blDocsAPIKey,
			headers: map[string]string{"x-deki-token": "pub1"},
			want:    reason.MultipleCredentials, status: http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := tt.host
			if host == "" {
				host = "docs.example.com"
			}
			d := f.check("GET", host, tt.path, tt.headers)
			if tt.want != "" {
				blWantDenial(t, d, tt.want, tt.status)
				if len(d.ResponseHeaders) != 0 {
					t.Fatalf("CORS headers on a denial: %v", d.ResponseHeaders)
				}
				return
			}
			blWantAllowed(t, d, token.KindBrowser, tt.user)
			if d.Identity.Kind != token.KindBrowser {
				t.Fatalf("identity kind %q", d.Identity.Kind)
			}
			wantCORS(t, d, tt.corsFor)
		})
	}
}

func TestBrowserTokenWithImpersonationToken(t *testing.T) {
	f := newBLAgent(t)
	imp := token.MintImpersonationToken(vault.NewSecret([]byte(blLegacyAPIKey)), "=jdoe", blNow)
	d := f.check("GET", "legacy.example.com", "/admin", map[string]string{
		"x-deki-token": "lpub", "x-authtoken": imp, "origin": "https://portal.example.io"})
	blWantAllowed(t, d, token.KindBrowser, "=jdoe")
	wantCORS(t, d, "https://portal.example.io")

	// On a site with the legacy switch off, the impersonation token is refused.
	imp = token.MintImpersonationToken(vault.NewSecret([]byte(blDocsAPIKey)), "42", blNow)
	d = f.check("GET", "docs.example.com", "/", map[string]string{"x-deki-token": "pub1", "x-authtoken": imp})
	blWantDenial(t, d, reason.LegacyTokenDisabled, http.StatusUnauthorized)
}

func TestPreflightAnswers(t *testing.T) {
	f := newBLAgent(t)
	tests := []struct {
		name, host, origin string
		reqHeaders         string
		want               reason.Reason
		allowHeaders       string
	}{
		{name: "key origin", host: "docs.example.com", origin: "https://app.example.com",
			reqHeaders: "x-deki-token, content-type", allowHeaders: token.PreflightAllowHeaders},
		{name: "key origin with allow-listed header", host: "docs.example.com", origin: "https://app.example.org",
			reqHeaders: "X-Requested-With, X-Custom", allowHeaders: token.PreflightAllowHeaders + ", X-Requested-With"},
		{name: "second key's bare host, any port", host: "docs.example.com", origin: "http://partner.example.net:8080",
			allowHeaders: token.PreflightAllowHeaders},
		{name: "site hostname", host: "docs.example.com", origin: "https://eu.docs.example.com",
			allowHeaders: token.PreflightAllowHeaders},
		{name: "not allowed", host: "docs.example.com", origin: "https://evil.example.net", want: reason.OriginNotAllowed},
		{name: "other site's key origin", host: "docs.example.com", origin: "https://portal.example.io", want: reason.OriginNotAllowed},
		{name: "bare suffix", host: "docs.example.com", origin: "https://example.com", want: reason.OriginNotAllowed},
		{name: "null", host: "docs.example.com", origin: "null", want: reason.OriginNotAllowed},
		{name: "legacy site key", host: "legacy.example.com", origin: "https://portal.example.io",
			allowHeaders: token.PreflightAllowHeaders},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{"origin": tt.origin, "access-control-request-method": "PUT"}
			if tt.reqHeaders != "" {
				h["access-control-request-headers"] = tt.reqHeaders
			}
			d := f.check("OPTIONS", tt.host, "/@api/deki/pages/1", h)
			if tt.want != "" {
				blWantDenial(t, d, tt.want, http.StatusForbidden)
				return
			}
			if d.Allowed || !d.Answered || d.Status != http.StatusNoContent || len(d.Body) != 0 {
				t.Fatalf("decision allowed=%v answered=%v status=%d body=%q, want the agent's 204",
					d.Allowed, d.Answered, d.Status, d.Body)
			}
			want := map[string]string{
				"access-control-allow-origin":      tt.origin,
				"access-control-allow-credentials": "true",
				"access-control-allow-methods":     token.PreflightAllowMethods,
				"access-control-allow-headers":     tt.allowHeaders,
				"access-control-max-age":           "600",
				"vary":                             "Origin",
			}
			for n, v := range want {
				if got, _ := blHeader(d.Headers, n); got != v {
					t.Errorf("%s: %q, want %q", n, got, v)
				}
			}
			for _, need := range []string{"X-Deki-Token", "Authorization", "Content-Type"} {
				if v, _ := blHeader(d.Headers, "access-control-allow-headers"); !strings.Contains(v, need) {
					t.Errorf("allow-headers %q lacks %s", v, need)
				}
			}
		})
	}
	// An OPTIONS request without Access-Control-Request-Method is not a preflight: it goes
	// through the pipeline as an anonymous request.
	d := f.check("OPTIONS", "docs.example.com", "/", map[string]string{"origin": "https://evil.example.net"})
	if !d.Allowed {
		t.Fatalf("plain OPTIONS denied: %d %q", d.Status, d.Reason)
	}
}

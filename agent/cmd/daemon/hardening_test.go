package daemon_test

import (
	"encoding/base64"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/codes"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/plugins/plugintest"
	"github.com/tokenagent/tokenagent/vault"
)

// The adversarial review's findings (issue "Hardening, round 2"), each checked over real gRPC
// as Envoy would send it. Every case would pass its request, or answer it differently, without
// its fix.

var hardeningHS256 = []byte("hardening-test-hs256-key-32bytes")

func hardeningConfig(policy string) string {
	return `
grpc_addr: 127.0.0.1:0
http_addr: 127.0.0.1:0
keys: {source: file, file: keys.yaml, refresh: 1s, max_stale: 1h}
sites:
  - id: docs
    hosts: [docs.example.com]
    policy: ` + policy + `
    policy_deadline: 5s
    routes:
      - {methods: [POST], path: "/@api/deki/pages/*", require: user}
      - {path: "/@api/deki/users/current", require: user}
      - {path: "/admin", require: user}
      - {path: "/admin/*", require: user}
      - {methods: [GET], path: "/reports/*", require: user}
      - {path: "/scoped/*", scopes: [write]}
  - id: bare
    hosts: [bare.example.com]
`
}

func hardeningKeys() string {
	return `
sites:
  docs:
    authtoken:
      - {key: "` + base64.StdEncoding.EncodeToString(authKey) + `", created: "2026-01-01T00:00:00Z"}
    server-tokens:
      k1: {secret: "s3cret"}
    oauth:
      issuer: "https://docs.example.com"
      audience: docs
      jwks: {keys: [{kty: oct, kid: hs, alg: HS256, k: "` + base64.RawURLEncoding.EncodeToString(hardeningHS256) + `"}]}
  bare:
    authtoken:
      - {key: "` + base64.StdEncoding.EncodeToString(authKey) + `", created: "2026-01-01T00:00:00Z"}
`
}

// startHardening runs the daemon with the echoing Go test policy at site docs; logs holds the
// agent's log.
func startHardening(t *testing.T) (*daemontest.Env, *daemontest.Buffer) {
	t.Helper()
	echo := plugintest.BuildGo(t, "../../../plugins/testdata/goguest")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "tokenagent.yaml")
	daemontest.WriteFile(t, cfgPath, hardeningConfig(echo))
	daemontest.WriteFile(t, filepath.Join(dir, "keys.yaml"), hardeningKeys())
	logs := &daemontest.Buffer{}
	return daemontest.StartFile(t, cfgPath, daemontest.Options{Daemon: daemon.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))}}), logs
}

func okHeaders(r *authv3.CheckResponse) map[string]string {
	out := map[string]string{}
	for _, h := range r.GetOkResponse().GetHeaders() {
		out[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	return out
}

func TestHardeningIdentitySpoofing(t *testing.T) {
	e, _ := startHardening(t)
	// Anonymous: every client-sent x-auth-* header, in any spelling, is removed under the
	// exact name the client used (Envoy passes underscore headers by default).
	resp := e.Check(t, "GET", "docs.example.com", "/", map[string]string{
		"x_auth_user": "42", "x-auth_user": "42", "x_auth-elevated": "true", "x-auth-admin": "1",
		"x_auth_site": "other", "x-authtoken-ish": "kept",
	})
	if resp.GetOkResponse() == nil {
		t.Fatalf("anonymous read: %v", resp)
	}
	got := resp.GetOkResponse().GetHeadersToRemove()
	want := []string{"x-auth-admin", "x-auth_user", "x_auth-elevated", "x_auth_site", "x_auth_user"}
	if !slices.Equal(got, want) {
		t.Errorf("headers_to_remove = %q, want %q", got, want)
	}
	// The policy never sees them either.
	if h := okHeaders(resp)["x-headers"]; strings.Contains(h, "auth_") || strings.Contains(h, "x-auth-admin") {
		t.Errorf("the policy saw a spoofed identity header: %s", h)
	}

	// An authority that is not a plain host[:port] names no site (SPEC §1).
	for _, host := range []string{"docs.example.com:1@evil.example.com", "evil.example.com@docs.example.com",
		"docs.example.com:99999", "docs.example.com/x", "docs.example.com :443"} {
		if r := e.Check(t, "GET", host, "/", nil); daemontest.Reason(r) != "unknown_site" || r.GetDeniedResponse().GetStatus().GetCode() != 404 {
			t.Errorf(":authority %q: %v, want 404 unknown_site", host, daemontest.Reason(r))
		}
	}
}

func TestHardeningRequestReadOneWay(t *testing.T) {
	e, _ := startHardening(t)
	auth := token.MintAuthToken(authKeySecret(), "7", time.Now())
	tests := []struct {
		name, method, path string
		headers            map[string]string
		want               string // reason, or "allowed"
	}{
		// Methods are compared case-insensitively (SPEC §2a).
		{"lower-case post on a POST rule", "post", "/@api/deki/pages/home", nil, "authentication_required"},
		{"mixed-case Post", "Post", "/@api/deki/pages/home", nil, "authentication_required"},
		{"a GET rule covers HEAD", "HEAD", "/reports/q3", nil, "authentication_required"},
		{"a GET rule covers head", "head", "/reports/q3", nil, "authentication_required"},
		{"not a method token", "GE T", "/", nil, "malformed_request"},
		// Paths an upstream reads differently (SPEC §2a).
		{"encoded NUL", "GET", "/@api/deki/users/current%00", nil, "malformed_request"},
		{"encoded control", "GET", "/@api/deki/users/current%0d%0a", nil, "malformed_request"},
		{"DEL", "GET", "/@api/deki/users/current%7F", nil, "malformed_request"},
		{"raw backslash", "GET", `/@api/deki/users\current`, nil, "malformed_request"},
		{"encoded backslash", "GET", "/@api/deki/users%5Ccurrent", nil, "malformed_request"},
		{"encoded backslash, lower case", "GET", "/@api/deki/users%5ccurrent", nil, "malformed_request"},
		{"fragment", "GET", "/@api/deki/users/current#x", nil, "malformed_request"},
		{"absolute form", "GET", "https://docs.example.com/@api/deki/users/current", nil, "malformed_request"},
		{"no leading slash", "GET", "@api/deki/users/current", nil, "malformed_request"},
		{"* for GET", "GET", "*", nil, "malformed_request"},
		{"* for OPTIONS", "OPTIONS", "*", nil, "allowed"},
		// Matrix parameters and the trailing slash (SPEC §5).
		{"matrix parameter in a segment", "GET", "/admin;x=1/secret", nil, "authentication_required"},
		{"jsessionid", "GET", "/@api/deki/users/current;jsessionid=1", nil, "authentication_required"},
		{"dot-dot with a matrix parameter", "GET", "/public/..;/admin", nil, "authentication_required"},
		{"exact rule covers one trailing slash", "GET", "/admin/", nil, "authentication_required"},
		{"exact rule, with a user", "GET", "/admin/", map[string]string{"x-authtoken": auth}, "allowed"},
		// Two different values of one credential (SPEC §2).
		{"cookie tossing", "GET", "/", map[string]string{"cookie": "authtoken=" + auth + "; authtoken=" + token.MintAuthToken(authKeySecret(), "8", time.Now())}, "multiple_credentials"},
		{"the same cookie twice", "GET", "/", map[string]string{"cookie": "authtoken=" + auth + "; authtoken=" + auth}, "allowed"},
		{"two authtoken parameters", "GET", "/?authtoken=" + auth + "&authtoken=1_2_3", nil, "multiple_credentials"},
		{"two apikey parameters", "GET", "/?apikey=a&apikey=b", nil, "multiple_credentials"},
		{"two X-Deki-Token values", "GET", "/", map[string]string{"x-deki-token": serverToken("s3cret", "1") + "," + serverToken("s3cret", "2")}, "multiple_credentials"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.Check(t, tc.method, "docs.example.com", tc.path, tc.headers)
			if got := daemontest.Reason(r); got != tc.want {
				t.Fatalf("%s %s: %s, want %s", tc.method, tc.path, got, tc.want)
			}
			if tc.want == "malformed_request" && (r.GetDeniedResponse().GetStatus().GetCode() != 400 ||
				codes.Code(r.GetStatus().GetCode()) != codes.InvalidArgument) {
				t.Errorf("malformed_request answered %v", r.GetDeniedResponse().GetStatus())
			}
		})
	}
	// A policy sees the method upper-case.
	r := e.Check(t, "get", "docs.example.com", "/x", nil)
	if m := okHeaders(r)["x-method"]; m != "GET" {
		t.Errorf("the policy saw method %q, want GET", m)
	}
}

// authKeySecret is the Auth Token key of hardeningKeys as the minting API takes it.
func authKeySecret() *vault.Secret { return vault.NewSecret(authKey) }

func TestHardeningNoCredentialReachesAPolicy(t *testing.T) {
	e, logs := startHardening(t)
	auth := token.MintAuthToken(authKeySecret(), "7", time.Now())
	for _, tc := range []struct {
		name    string
		path    string
		headers map[string]string
	}{
		{"query", "/logrequest?authtoken=" + auth + "&x=1", map[string]string{
			"x-envoy-original-path": "/logrequest?authtoken=" + auth,
			"referer":               "https://docs.example.com/page?x=1&authtoken=" + auth + "#top",
			"x-forwarded-uri":       "/logrequest?AuthToken=" + auth,
			"x-original-uri":        "/logrequest?impersonateuserid=1&authtoken=" + auth,
		}},
		{"cookie", "/logrequest", map[string]string{"cookie": "lang=en; authtoken=" + auth}},
		{"header", "/logrequest", map[string]string{"x-authtoken": auth}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.Check(t, "GET", "docs.example.com", tc.path, tc.headers)
			h := okHeaders(r)
			if h["x-user"] != "7" {
				t.Fatalf("not allowed as 7: %v", r)
			}
			for k, v := range h {
				if strings.Contains(v, auth) {
					t.Errorf("the policy saw the credential in %s: %s", k, v)
				}
			}
			if !strings.Contains(h["x-headers"], ":path=/logrequest") {
				t.Errorf("the policy's :path lost its path: %s", h["x-headers"])
			}
		})
	}
	// The policy logged everything it saw: the credential is not in the agent's log.
	daemontest.Eventually(t, "the policy's log lines", func() bool { return strings.Contains(logs.String(), "GET /logrequest?") })
	if strings.Contains(logs.String(), auth) {
		t.Fatalf("the agent's log holds the credential:\n%s", logs.String())
	}
}

func TestHardeningScopesAndPreflight(t *testing.T) {
	e, _ := startHardening(t)
	key := jose.JSONWebKey{Key: hardeningHS256, KeyID: "hs", Algorithm: "HS256"}
	jwt := func(scope string) string {
		tok, err := token.MintJWT(key, map[string]any{"iss": "https://docs.example.com", "aud": "docs", "sub": "u1",
			"scope": scope, "exp": time.Now().Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	// Scopes are separated by U+0020 only (SPEC §3.4).
	for _, tc := range []struct{ scope, want string }{
		{"read write", "allowed"},
		{"read\u00a0write", "insufficient_scope"},
		{"read\u2003write", "insufficient_scope"},
		{"read\twrite", "malformed_token"}, // a control character: never put into x-auth-scopes
	} {
		r := e.Check(t, "GET", "docs.example.com", "/scoped/x", map[string]string{"authorization": "Bearer " + jwt(tc.scope)})
		if got := daemontest.Reason(r); got != tc.want {
			t.Errorf("scope %q: %s, want %s", tc.scope, got, tc.want)
		}
	}
	// A site with no browser token allows no preflight, not even from its own host on
	// another port (SPEC §3.3).
	for _, origin := range []string{"https://bare.example.com:8443", "http://bare.example.com", "https://bare.example.com"} {
		r := e.Check(t, "OPTIONS", "bare.example.com", "/api", map[string]string{
			"origin": origin, "access-control-request-method": "POST"})
		if got := daemontest.Reason(r); got != "origin_not_allowed" || r.GetDeniedResponse().GetStatus().GetCode() != 403 {
			t.Errorf("preflight from %s at a site without browser tokens: %s, want 403 origin_not_allowed", origin, got)
		}
	}
}

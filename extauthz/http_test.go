package extauthz

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/agent/agenttest"
	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file/filetest"
)

// The HTTP front's tests run a real agent (file key source) behind a real listener and call it
// the way each proxy does.
const httpTestConfig = `
keys: {source: file, file: keys.yaml}
sites:
  - id: docs
    hosts: [docs.example.com]
    routes:
      - {methods: [POST, PUT, DELETE], path: "/@api/deki/pages/*", require: user}
      - {path: "/private", require: authenticated}
  - id: other
    hosts: [other.example.com]
`

var (
	httpDocsKey  = []byte("http-front-docs-auth-token-key32")
	httpOtherKey = []byte("http-front-other-auth-token-key3")
)

func httpTestKeys() string {
	return `
sites:
  docs:
    authtoken:
      - {key: "` + base64.StdEncoding.EncodeToString(httpDocsKey) + `", created: "2026-01-01T00:00:00Z"}
    server-tokens:
      k1: {secret: "s3cret"}
    browser-tokens:
      pub1: {origins: ["https://app.example.org"]}
  other:
    authtoken:
      - {key: "` + base64.StdEncoding.EncodeToString(httpOtherKey) + `", created: "2026-01-01T00:00:00Z"}
    server-tokens:
      k1: {secret: "other-secret"}
`
}

func newHTTPTestAgent(t *testing.T) *agent.Agent {
	t.Helper()
	cfg, err := config.Parse([]byte(httpTestConfig), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	store := filetest.Store(t, httpTestKeys(), vault.StoreOptions{Logger: quiet})
	a := agenttest.New(t, cfg, agent.RuntimeOptions{Keys: store, Logger: quiet})
	return a
}

type front struct {
	srv     *httptest.Server
	metrics *HTTPMetrics
}

func startFront(t *testing.T, c Checker, prefix string) *front {
	t.Helper()
	m := NewHTTPMetrics(prometheus.NewRegistry())
	h := NewHTTPHandler(c, HTTPOptions{EnvoyPathPrefix: prefix, Metrics: m, Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &front{srv: srv, metrics: m}
}

type answer struct {
	status  int
	headers http.Header
	body    string
}

func (a answer) reason() string { return a.headers.Get("x-auth-reason") }

func (a answer) jsonError(t *testing.T) string {
	t.Helper()
	var b struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.Unmarshal([]byte(a.body), &b); err != nil || b.Description == "" {
		t.Fatalf("body %q is not a JSON error (%v)", a.body, err)
	}
	return b.Error
}

// call sends one request to the front: method and target as the proxy sends them, host in
// the Host header, headers as given (repeated names via "\n"-separated values).
func (f *front) call(t *testing.T, method, target, host string, headers map[string]string, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for k, v := range headers {
		for _, one := range strings.Split(v, "\n") {
			req.Header.Add(k, one)
		}
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, headers: resp.Header, body: string(b)}
}

func mintServer(secret, user string) string {
	return token.MintServerToken("k1", vault.NewSecret([]byte(secret)), user, time.Now())
}

func wantDecisionID(t *testing.T, a answer) {
	t.Helper()
	if _, err := agent.ParseDecisionID(a.headers.Get(HeaderDecisionID)); err != nil {
		t.Errorf("%s = %q, want 16 hex digits", HeaderDecisionID, a.headers.Get(HeaderDecisionID))
	}
}

func wantAllowed(t *testing.T, a answer, want map[string]string) {
	t.Helper()
	if a.status != http.StatusOK {
		t.Fatalf("status %d (%s %s), want 200", a.status, a.reason(), a.body)
	}
	for k, v := range want {
		if got := a.headers.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	wantDecisionID(t, a)
}

func wantDenied(t *testing.T, a answer, status int, reason string) {
	t.Helper()
	if a.status != status || a.reason() != reason {
		t.Fatalf("answer %d %q (%s), want %d %s", a.status, a.reason(), a.body, status, reason)
	}
	if a.headers.Get("content-type") != "application/json" {
		t.Errorf("content-type = %q", a.headers.Get("content-type"))
	}
	if got := a.jsonError(t); got != reason {
		t.Errorf("body error = %q, want %q", got, reason)
	}
	wantDecisionID(t, a)
}

func TestHTTPFrontEnvoy(t *testing.T) {
	f := startFront(t, newHTTPTestAgent(t), "")
	tok := mintServer("s3cret", "42")

	t.Run("allowed, spoofed x-auth headers listed for removal", func(t *testing.T) {
		a := f.call(t, "GET", "/envoy/@api/deki/pages/home?x=1", "docs.example.com", map[string]string{
			"X-Deki-Token": tok, "X-Auth-User": "999", "X-Auth-Admin": "1"}, "")
		wantAllowed(t, a, map[string]string{"x-auth-site": "docs", "x-auth-kind": "server",
			"x-auth-user": "42", HeaderEnvoyRemove: "x-auth-admin"})
	})
	t.Run("spoofed x-auth headers in any spelling are listed for removal", func(t *testing.T) {
		a := f.call(t, "GET", "/envoy/page", "docs.example.com", map[string]string{
			"X_Auth_User": "42", "X-Auth_User": "42", "x_auth-elevated": "true"}, "")
		wantAllowed(t, a, map[string]string{"x-auth-kind": "anonymous",
			HeaderEnvoyRemove: "x-auth_user,x_auth-elevated,x_auth_user"})
	})
	t.Run("the method is compared upper-case", func(t *testing.T) {
		a := f.call(t, "post", "/envoy/@api/deki/pages/home", "docs.example.com", nil, "")
		wantDenied(t, a, http.StatusUnauthorized, "authentication_required")
	})
	t.Run("the path after the prefix is the original path", func(t *testing.T) {
		a := f.call(t, "POST", "/envoy/@api/deki/pages/home", "docs.example.com", nil, "")
		wantDenied(t, a, http.StatusUnauthorized, "authentication_required")
		// Encoded dot segments are normalised before the rules match, as over gRPC.
		a = f.call(t, "POST", "/envoy/@api/deki/x/%2E%2E/pages/home", "docs.example.com", nil, "")
		wantDenied(t, a, http.StatusUnauthorized, "authentication_required")
		a = f.call(t, "GET", "/envoy", "docs.example.com", nil, "")
		wantAllowed(t, a, map[string]string{"x-auth-kind": "anonymous"})
	})
	t.Run("denials keep their status, headers and body", func(t *testing.T) {
		wantDenied(t, f.call(t, "GET", "/envoy/", "elsewhere.example.com", nil, ""), http.StatusNotFound, "unknown_site")
		wantDenied(t, f.call(t, "GET", "/envoy/", "docs.example.com",
			map[string]string{"X-Deki-Token": mintServer("guess", "42")}, ""), http.StatusUnauthorized, "bad_signature")
	})
	t.Run("spoofed forwarding headers of other conventions are ignored", func(t *testing.T) {
		a := f.call(t, "POST", "/envoy/@api/deki/pages/home", "docs.example.com", map[string]string{
			"X-Original-URI": "/", "X-Original-Method": "GET", "X-Forwarded-Uri": "/", "X-Forwarded-Method": "GET",
			"X-Original-Host": "other.example.com", "X-Forwarded-Host": "other.example.com"}, "")
		wantDenied(t, a, http.StatusUnauthorized, "authentication_required")
		// A token of site other, sent to docs with other's host in a forwarding header: docs decides.
		a = f.call(t, "GET", "/envoy/", "docs.example.com", map[string]string{
			"X-Deki-Token": mintServer("other-secret", "1"), "X-Original-Host": "other.example.com",
			"X-Forwarded-Host": "other.example.com"}, "")
		wantDenied(t, a, http.StatusUnauthorized, "bad_signature")
	})
	t.Run("CORS headers of an allowed cross-origin request", func(t *testing.T) {
		a := f.call(t, "GET", "/envoy/page", "docs.example.com", map[string]string{
			"X-Deki-Token": "pub1", "Origin": "https://app.example.org"}, "")
		wantAllowed(t, a, map[string]string{"x-auth-kind": "browser",
			"access-control-allow-origin": "https://app.example.org", "access-control-allow-credentials": "true"})
	})
	t.Run("a CORS preflight is relayed as the agent's 204", func(t *testing.T) {
		a := f.call(t, "OPTIONS", "/envoy/@api/deki/pages/home", "docs.example.com", map[string]string{
			"Origin": "https://app.example.org", "Access-Control-Request-Method": "PUT"}, "")
		if a.status != http.StatusNoContent || a.headers.Get("access-control-allow-origin") != "https://app.example.org" ||
			!strings.Contains(a.headers.Get("access-control-allow-methods"), "PUT") {
			t.Fatalf("preflight: %d %v", a.status, a.headers)
		}
		wantDecisionID(t, a)
	})
	t.Run("repeated cookies are joined", func(t *testing.T) {
		auth := token.MintAuthToken(vault.NewSecret(httpDocsKey), "7", time.Now())
		a := f.call(t, "GET", "/envoy/private", "docs.example.com", map[string]string{
			"Cookie": "theme=dark\nauthtoken=" + auth}, "")
		wantAllowed(t, a, map[string]string{"x-auth-kind": "authtoken", "x-auth-user": "7"})
	})
}

func TestHTTPFrontEnvoyCustomPrefix(t *testing.T) {
	f := startFront(t, newHTTPTestAgent(t), "/ext-authz")
	wantAllowed(t, f.call(t, "GET", "/ext-authz/page", "docs.example.com", nil, ""),
		map[string]string{"x-auth-site": "docs"})
	wantDenied(t, f.call(t, "POST", "/ext-authz/@api/deki/pages/a", "docs.example.com", nil, ""),
		http.StatusUnauthorized, "authentication_required")
	if a := f.call(t, "GET", "/envoy/page", "docs.example.com", nil, ""); a.status != http.StatusNotFound || a.jsonError(t) != "not_found" {
		t.Fatalf("the default prefix still answers: %d %s", a.status, a.body)
	}
	if a := f.call(t, "GET", "/ext-authzx/page", "docs.example.com", nil, ""); a.status != http.StatusNotFound {
		t.Fatalf("a longer first segment matched the prefix: %d", a.status)
	}
}

func TestHTTPFrontNginx(t *testing.T) {
	f := startFront(t, newHTTPTestAgent(t), "")
	tok := mintServer("s3cret", "=jane")
	nginx := func(method, uri, host string, extra map[string]string) map[string]string {
		h := map[string]string{"X-Original-Method": method, "X-Original-URI": uri, "X-Original-Host": host}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}

	t.Run("allowed", func(t *testing.T) {
		// nginx's subrequest reaches the agent with the agent's own address as Host.
		a := f.call(t, "GET", "/nginx", "", nginx("POST", "/@api/deki/pages/home?a=1", "docs.example.com",
			map[string]string{"X-Deki-Token": tok}), "")
		wantAllowed(t, a, map[string]string{"x-auth-site": "docs", "x-auth-kind": "server", "x-auth-user": "=jane"})
		if a.headers.Get(HeaderEnvoyRemove) != "" {
			t.Error("nginx is sent Envoy's removal header")
		}
	})
	t.Run("Host when X-Original-Host is absent", func(t *testing.T) {
		a := f.call(t, "GET", "/nginx", "docs.example.com",
			map[string]string{"X-Original-URI": "/private", "X-Deki-Token": tok}, "")
		wantAllowed(t, a, map[string]string{"x-auth-site": "docs"})
	})
	t.Run("a 401 stays 401", func(t *testing.T) {
		a := f.call(t, "GET", "/nginx", "", nginx("POST", "/@api/deki/pages/home", "docs.example.com", nil), "")
		wantDenied(t, a, http.StatusUnauthorized, "authentication_required")
		if a.headers.Get(HeaderStatus) != "" {
			t.Errorf("a 401 carries %s", HeaderStatus)
		}
	})
	t.Run("other statuses are 403 with the real one in x-auth-status", func(t *testing.T) {
		a := f.call(t, "GET", "/nginx", "", nginx("GET", "/", "elsewhere.example.com", nil), "")
		wantDenied(t, a, http.StatusForbidden, "unknown_site")
		if a.headers.Get(HeaderStatus) != "404" {
			t.Errorf("%s = %q, want 404", HeaderStatus, a.headers.Get(HeaderStatus))
		}
		a = f.call(t, "GET", "/nginx", "", nginx("GET", "/?authtoken=x", "docs.example.com",
			map[string]string{"X-Deki-Token": tok}), "")
		wantDenied(t, a, http.StatusForbidden, "multiple_credentials")
		if a.headers.Get(HeaderStatus) != "400" {
			t.Errorf("%s = %q, want 400", HeaderStatus, a.headers.Get(HeaderStatus))
		}
	})
	t.Run("spoofed Traefik headers are ignored", func(t *testing.T) {
		a := f.call(t, "GET", "/nginx", "", nginx("POST", "/@api/deki/pages/home", "docs.example.com", map[string]string{
			"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/", "X-Forwarded-Host": "other.example.com"}), "")
		wantDenied(t, a, http.StatusUnauthorized, "authentication_required")
	})
	t.Run("absolute-form X-Original-URI", func(t *testing.T) {
		// SPEC §2a: the agent reads the target one way and refuses what an upstream may read
		// another way (nginx is told 403, the real status in x-auth-status).
		a := f.call(t, "GET", "/nginx", "", nginx("POST", "https://docs.example.com/@api/deki/pages/x", "docs.example.com", nil), "")
		wantDenied(t, a, http.StatusForbidden, "malformed_request")
		if a.headers.Get(HeaderStatus) != "400" {
			t.Errorf("%s = %q, want 400", HeaderStatus, a.headers.Get(HeaderStatus))
		}
	})
	t.Run("the original method is compared upper-case", func(t *testing.T) {
		a := f.call(t, "GET", "/nginx", "", nginx("post", "/@api/deki/pages/home", "docs.example.com", nil), "")
		wantDenied(t, a, http.StatusUnauthorized, "authentication_required")
	})
	t.Run("an encoded backslash in X-Original-URI", func(t *testing.T) {
		a := f.call(t, "GET", "/nginx", "", nginx("GET", "/%5Cadmin", "docs.example.com", nil), "")
		wantDenied(t, a, http.StatusForbidden, "malformed_request")
	})
	t.Run("without X-Original-URI the request is refused", func(t *testing.T) {
		a := f.call(t, "GET", "/nginx", "docs.example.com", map[string]string{"X-Deki-Token": tok}, "")
		if a.status != http.StatusBadRequest || a.jsonError(t) != "invalid_request" {
			t.Fatalf("answer %d %s, want 400 invalid_request", a.status, a.body)
		}
		a = f.call(t, "GET", "/nginx", "docs.example.com", map[string]string{"X-Original-URI": "pages"}, "")
		wantDenied(t, a, http.StatusForbidden, "malformed_request")
	})
	if got := counterValue(t, f.metrics.Responses.WithLabelValues("nginx", "403")); got != 5 {
		t.Errorf("nginx 403 answers counted %v, want 5", got)
	}
}

func TestHTTPFrontTraefik(t *testing.T) {
	f := startFront(t, newHTTPTestAgent(t), "")
	tok := mintServer("s3cret", "42")
	traefik := func(method, uri, host string, extra map[string]string) map[string]string {
		h := map[string]string{"X-Forwarded-Method": method, "X-Forwarded-Proto": "https",
			"X-Forwarded-Host": host, "X-Forwarded-Uri": uri, "X-Forwarded-For": "192.0.2.1"}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}

	t.Run("allowed", func(t *testing.T) {
		// Traefik calls forwardAuth with GET; the original method is in X-Forwarded-Method.
		a := f.call(t, "GET", "/traefik", "", traefik("PUT", "/@api/deki/pages/home", "docs.example.com",
			map[string]string{"X-Deki-Token": tok, "X-Auth-User": "999"}), "")
		wantAllowed(t, a, map[string]string{"x-auth-site": "docs", "x-auth-kind": "server", "x-auth-user": "42"})
	})
	t.Run("denied with status, headers and body", func(t *testing.T) {
		a := f.call(t, "GET", "/traefik", "", traefik("PUT", "/@api/deki/pages/home", "docs.example.com", nil), "")
		wantDenied(t, a, http.StatusUnauthorized, "authentication_required")
		a = f.call(t, "GET", "/traefik", "", traefik("GET", "/", "elsewhere.example.com", nil), "")
		wantDenied(t, a, http.StatusNotFound, "unknown_site")
	})
	t.Run("spoofed nginx headers are ignored", func(t *testing.T) {
		a := f.call(t, "GET", "/traefik", "docs.example.com", traefik("PUT", "/@api/deki/pages/home", "docs.example.com",
			map[string]string{"X-Original-Method": "GET", "X-Original-URI": "/", "X-Original-Host": "other.example.com"}), "")
		wantDenied(t, a, http.StatusUnauthorized, "authentication_required")
	})
	t.Run("the host is X-Forwarded-Host, not Host", func(t *testing.T) {
		a := f.call(t, "GET", "/traefik", "docs.example.com", traefik("GET", "/", "other.example.com",
			map[string]string{"X-Deki-Token": tok}), "")
		wantDenied(t, a, http.StatusUnauthorized, "bad_signature")
	})
	t.Run("without X-Forwarded-Uri the request is refused", func(t *testing.T) {
		a := f.call(t, "GET", "/traefik", "docs.example.com", map[string]string{"X-Forwarded-Host": "docs.example.com"}, "")
		if a.status != http.StatusBadRequest || a.jsonError(t) != "invalid_request" {
			t.Fatalf("answer %d %s, want 400 invalid_request", a.status, a.body)
		}
	})
}

func TestHTTPFrontAnswer(t *testing.T) {
	f := startFront(t, newHTTPTestAgent(t), "")
	a := f.call(t, "OPTIONS", "/answer/@api/deki/pages/home", "docs.example.com", map[string]string{
		"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST"}, "")
	if a.status != http.StatusNoContent || a.headers.Get("access-control-allow-origin") != "https://app.example.org" {
		t.Fatalf("preflight: %d %v", a.status, a.headers)
	}
	wantDenied(t, f.call(t, "GET", "/answer/", "elsewhere.example.com", nil, ""), http.StatusNotFound, "unknown_site")
	a = f.call(t, "GET", "/answer/page", "docs.example.com", nil, "")
	if a.status != http.StatusMisdirectedRequest || a.jsonError(t) != "misdirected_request" || a.headers.Get("x-auth-site") != "" {
		t.Fatalf("an allowed request on /answer: %d %v %s", a.status, a.headers, a.body)
	}
}

func TestHTTPFrontUnknownPath(t *testing.T) {
	f := startFront(t, newHTTPTestAgent(t), "")
	for _, p := range []string{"/", "/metrics", "/nginx/x", "/answers", "/envoyx"} {
		if a := f.call(t, "GET", p, "docs.example.com", nil, ""); a.status != http.StatusNotFound || a.jsonError(t) != "not_found" {
			t.Errorf("GET %s: %d %s", p, a.status, a.body)
		}
	}
	if got := counterValue(t, f.metrics.Responses.WithLabelValues("unknown", "404")); got != 5 {
		t.Errorf("unknown answers counted %v, want 5", got)
	}
}

// stubChecker returns a fixed decision and records the requests it saw.
type stubChecker struct {
	d    agent.Decision
	mu   sync.Mutex
	seen []*agent.Request
}

func (s *stubChecker) Check(_ context.Context, r *agent.Request) *agent.Decision {
	s.mu.Lock()
	s.seen = append(s.seen, r)
	s.mu.Unlock()
	d := s.d
	d.ID = agent.NewDecisionID()
	return &d
}

func (s *stubChecker) last() *agent.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[len(s.seen)-1]
}

// TestHTTPFrontOwnAnswers: the agent's own answers (token exchange 200, CORS preflight 204)
// are sent as they are where the proxy relays them, and never as an "allowed" the proxy would
// pass upstream.
func TestHTTPFrontOwnAnswers(t *testing.T) {
	exchange := agent.Decision{Answered: true, Status: 200, Site: "docs", Body: []byte(`{"@id":"5"}`),
		Headers: []token.Header{{Name: "content-type", Value: "application/json"}, {Name: "set-cookie", Value: "authtoken=x; Path=/"}}}
	preflight := agent.Decision{Answered: true, Status: 204, Site: "docs",
		Headers: []token.Header{{Name: "access-control-allow-origin", Value: "https://app.example.org"}}}
	nginxH := map[string]string{"X-Original-URI": "/x", "X-Original-Method": "POST", "X-Original-Host": "docs.example.com"}
	traefikH := map[string]string{"X-Forwarded-Uri": "/x", "X-Forwarded-Method": "POST", "X-Forwarded-Host": "docs.example.com"}
	tests := []struct {
		name       string
		d          agent.Decision
		target     string
		headers    map[string]string
		status     int
		realStatus string // x-auth-status (nginx)
		cookie     bool
	}{
		{"exchange via envoy", exchange, "/envoy/x", nil, 421, "", false},
		{"exchange via nginx", exchange, "/nginx", nginxH, 403, "421", false},
		{"exchange via traefik", exchange, "/traefik", traefikH, 421, "", false},
		{"exchange via answer", exchange, "/answer/x", nil, 200, "", true},
		{"preflight via envoy", preflight, "/envoy/x", nil, 204, "", false},
		{"preflight via nginx", preflight, "/nginx", nginxH, 403, "421", false},
		{"preflight via traefik", preflight, "/traefik", traefikH, 421, "", false},
		{"preflight via answer", preflight, "/answer/x", nil, 204, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := startFront(t, &stubChecker{d: tc.d}, "")
			a := f.call(t, "POST", tc.target, "docs.example.com", tc.headers, "")
			if a.status != tc.status || a.headers.Get(HeaderStatus) != tc.realStatus {
				t.Fatalf("answer %d (x-auth-status %q) %s, want %d (%q)", a.status, a.headers.Get(HeaderStatus), a.body, tc.status, tc.realStatus)
			}
			if got := a.headers.Get("set-cookie") != ""; got != tc.cookie {
				t.Errorf("set-cookie present = %v, want %v", got, tc.cookie)
			}
			if tc.status == 421 || tc.status == 403 {
				if a.jsonError(t) != "misdirected_request" {
					t.Errorf("body %s", a.body)
				}
			}
			if tc.status == 200 && a.body != string(tc.d.Body) {
				t.Errorf("body %q, want the exchange's", a.body)
			}
			wantDecisionID(t, a)
		})
	}
}

func TestHTTPFrontRequestShape(t *testing.T) {
	s := &stubChecker{d: agent.Decision{Allowed: true, Status: 200}}
	f := startFront(t, s, "")
	f.call(t, "POST", "/envoy/@app/auth/token/exchange?a=%2F", "Docs.Example.com:8443", map[string]string{
		"Content-Type": "text/plain", "X-Forwarded-Proto": "https"}, "id-token")
	r := s.last()
	if r.Method != "POST" || r.Host != "Docs.Example.com:8443" || r.Path != "/@app/auth/token/exchange?a=%2F" ||
		r.Scheme != "https" || string(r.Body) != "id-token" || r.BodyTruncated {
		t.Errorf("request = %+v", r)
	}
	if r.Headers[":authority"] != r.Host || r.Headers[":path"] != r.Path || r.Headers[":method"] != "POST" ||
		r.Headers["content-type"] != "text/plain" {
		t.Errorf("headers = %v", r.Headers)
	}

	f.call(t, "POST", "/envoy/x", "docs.example.com", nil, strings.Repeat("a", 20<<10))
	if r := s.last(); len(r.Body) != MaxHTTPBody || !r.BodyTruncated {
		t.Errorf("oversized body: %d bytes, truncated %v", len(r.Body), r.BodyTruncated)
	}
	f.call(t, "POST", "/envoy/x", "docs.example.com", map[string]string{"x-envoy-auth-partial-body": "true"}, "abc")
	if r := s.last(); !r.BodyTruncated {
		t.Error("x-envoy-auth-partial-body: true is not a truncated body")
	}
	f.call(t, "GET", "/traefik", "agent:9193", map[string]string{"X-Forwarded-Uri": "/p", "X-Forwarded-Host": "docs.example.com"}, "")
	if r := s.last(); r.Method != "GET" || r.Scheme != "http" || r.Host != "docs.example.com" {
		t.Errorf("traefik request = %+v", r)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

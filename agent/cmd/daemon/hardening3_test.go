package daemon_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/token"
)

// The third review's findings (issue "Hardening, round 3"), each checked end to end; every
// case answers differently, or prints a secret, without its fix.

// hostsConfig has a site whose hostname is written in Unicode (an A-label once loaded), a
// browser key, and the HTTP front.
const hostsConfig = `
grpc_addr: 127.0.0.1:0
http_addr: 127.0.0.1:0
authz_http_addr: 127.0.0.1:0
keys: {source: file, file: keys.yaml, refresh: 1s, max_stale: 1h}
sites:
  - id: docs
    hosts: [docs.example.com, "*.docs.example.com"]
  - id: books
    hosts: ["Bücher.example"]
`

func hostsKeys() string {
	return keysYAML() + `    browser-tokens:
      pub1: {origins: ["*.example.com", "https://app.example.org"]}
  books:
    authtoken:
      - {key: "` + base64.StdEncoding.EncodeToString(authKey) + `", created: "2026-01-01T00:00:00Z"}
`
}

// nonASCIIHosts are authorities IDNA would map onto docs.example.com (or a subdomain), which
// Envoy and the upstream compare as the bytes they are (SPEC §1).
var nonASCIIHosts = []string{
	"docs.example.com\u3002",               // ideographic full stop
	"docs\uff0eexample.com",                // fullwidth full stop
	"\uff44\uff4f\uff43\uff53.example.com", // fullwidth letters
	"docs.example.com\u3002:443",
	"a.docs.example.com\u3002",
	"docs.exam\u00adple.com", // a soft hyphen, which IDNA removes
	"b\u00fccher.example",    // the Unicode form of a configured host
}

func TestHardeningHostsComparedAsBytes(t *testing.T) {
	e := daemontest.Start(t, hostsConfig, daemontest.Options{Files: map[string]string{"keys.yaml": hostsKeys()}})

	// gRPC: a configured Unicode hostname is served under its A-label; any byte ≥ 0x80 in
	// the authority names no site.
	for host, site := range map[string]string{"docs.example.com": "docs", "xn--bcher-kva.example": "books", "XN--BCHER-KVA.example.": "books"} {
		if r := e.Check(t, "GET", host, "/", nil); daemontest.UpstreamHeader(r, "x-auth-site") != site {
			t.Errorf(":authority %q: %s, want site %s", host, daemontest.Reason(r), site)
		}
	}
	for _, host := range nonASCIIHosts {
		r := e.Check(t, "GET", host, "/", nil)
		if daemontest.Reason(r) != "unknown_site" || r.GetDeniedResponse().GetStatus().GetCode() != 404 {
			t.Errorf(":authority %q: %s, want 404 unknown_site", host, daemontest.Reason(r))
		}
	}

	// The HTTP front (Traefik's forwardAuth: the host in X-Forwarded-Host, any byte allowed
	// in a header value).
	front := func(host string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+e.D.AuthzHTTPAddr()+"/traefik", nil)
		req.Header.Set("X-Forwarded-Method", "GET")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("X-Forwarded-Host", host)
		req.Header.Set("X-Forwarded-Uri", "/")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("X-Auth-Reason")
	}
	if code, _ := front("docs.example.com"); code != 200 {
		t.Fatalf("HTTP front, docs.example.com: %d", code)
	}
	for _, host := range nonASCIIHosts {
		if code, why := front(host); code != 404 || why != "unknown_site" {
			t.Errorf("HTTP front, host %q: %d %s, want 404 unknown_site", host, code, why)
		}
	}

	// Origin matching: an Origin holding a non-ASCII byte matches no origin pattern and is not
	// the site's own host; its ASCII twin is allowed.
	browser := func(origin string) string {
		return daemontest.Reason(e.Check(t, "GET", "docs.example.com", "/", map[string]string{"x-deki-token": "pub1", "origin": origin}))
	}
	for _, origin := range []string{"https://app.example.com", "https://docs.example.com:8443", "https://app.example.org"} {
		if got := browser(origin); got != "allowed" {
			t.Errorf("Origin %q: %s, want allowed", origin, got)
		}
	}
	for _, origin := range []string{"https://app.example.com\u3002", "https://app\uff0eexample.com", "https://docs.example.com\u3002",
		"https://\uff41pp.example.org", "https://b\u00fccher.example"} {
		if got := browser(origin); got != "origin_not_allowed" {
			t.Errorf("Origin %q: %s, want origin_not_allowed", origin, got)
		}
	}
	// A preflight from such an origin is refused too.
	r := e.Check(t, "OPTIONS", "docs.example.com", "/api", map[string]string{
		"origin": "https://app\uff0eexample.com", "access-control-request-method": "POST"})
	if got := daemontest.Reason(r); got != "origin_not_allowed" {
		t.Errorf("preflight from a fullwidth origin: %s, want origin_not_allowed", got)
	}
}

// A jwks_uri's password and query values never reach /readyz, the log or a span (SPEC §8: no
// secret in a span); the operator still sees which host fails.
func TestHardeningConfiguredURLsRedacted(t *testing.T) {
	const password, query = "hunter2pass", "qu3rys3cret"
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(failing.Close)
	refused := closedPort(t)
	rx := daemontest.StartOTLP(t)
	cfg := fmt.Sprintf(`
keys: {source: file, file: keys.yaml}
tracing: {otlp_endpoint: %q, insecure: true, sample_ratio: 1}
sites:
  - id: docs
    hosts: [docs.example.com]
`, rx.Addr)
	keys := keysYAML() + fmt.Sprintf(`    issuers:
      a: {issuer: "https://a.example.com", audience: docs, jwks_uri: "http://user:%[1]s@%[2]s/jwks?access_token=%[3]s"}
      b: {issuer: "https://b.example.com", audience: docs, jwks_uri: "http://user:%[1]s@%[4]s/jwks?access_token=%[3]s&x=%[3]s"}
`, password, strings.TrimPrefix(failing.URL, "http://"), query, refused)
	e := daemontest.Start(t, cfg, daemontest.Options{Files: map[string]string{"keys.yaml": keys}})

	// A traced check needs both key sets: their fetches are spans under it.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, iss := range []string{"https://a.example.com", "https://b.example.com"} {
		tok, err := token.MintJWT(jose.JSONWebKey{Key: key, KeyID: "k", Algorithm: "ES256"}, map[string]any{
			"iss": iss, "aud": "docs", "sub": "u", "exp": time.Now().Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		r := e.Check(t, "GET", "docs.example.com", "/", map[string]string{"authorization": "Bearer " + tok})
		if daemontest.Reason(r) != "keys_unavailable" {
			t.Fatalf("a token of %s: %s, want keys_unavailable", iss, daemontest.Reason(r))
		}
	}

	resp, err := e.HTTPClient.Get(e.HTTP + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "http://redacted@"+strings.TrimPrefix(failing.URL, "http://")+"/jwks?access_token=redacted") ||
		!strings.Contains(string(body), refused) {
		t.Errorf("/readyz does not name the failing key sets in redacted form:\n%s", body)
	}
	daemontest.Eventually(t, "the fetch spans", func() bool {
		n := 0
		for _, s := range rx.Spans() {
			if strings.Contains(s.Name, "jwks") {
				n++
			}
		}
		return n >= 2
	})
	var spans strings.Builder
	for _, s := range rx.Spans() {
		fmt.Fprintf(&spans, "%s %v\n", s.Name, s.Attributes)
	}
	for where, text := range map[string]string{"/readyz": string(body), "the log": e.Logs.String(), "the spans": spans.String()} {
		for _, secret := range []string{password, query} {
			if strings.Contains(text, secret) {
				t.Errorf("%s holds %q:\n%s", where, secret, text)
			}
		}
	}
	if !strings.Contains(e.Logs.String(), "jwks fetch failed") {
		t.Errorf("no fetch failure was logged:\n%s", e.Logs.String())
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// The first /readyz already lists the invalid key records (it used to read them only after
// collecting the store's warnings, so they showed from the second call on).
func TestHardeningReadyzFirstAnswer(t *testing.T) {
	cfg := `
keys: {source: file, file: keys.yaml}
sites:
  - id: docs
    hosts: [docs.example.com]
  - id: short
    hosts: [short.example.com]
`
	keys := keysYAML() + `    idps:
      corp: {issuer: "https://idp.example.com", jwks: {keys: []}}
  short:
    authtoken:
      - {key: "` + base64.StdEncoding.EncodeToString([]byte("too-short")) + `", created: "2026-01-01T00:00:00Z"}
`
	// The file source is ready once the daemon is built; nothing has asked for readiness yet
	// (that is what reads the records), so this is the first answer.
	e := daemontest.Start(t, cfg, daemontest.Options{Files: map[string]string{"keys.yaml": keys}})
	_, r := e.Readyz(t)
	all := strings.Join(r.Warnings, "\n")
	for _, want := range []string{"sites/docs/idps", "client_id", "sites/short/authtoken"} {
		if !strings.Contains(all, want) {
			t.Errorf("the first /readyz does not mention %q; warnings:\n%s", want, all)
		}
	}
}

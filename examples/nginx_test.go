package examples_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
)

// nginxInstall is what CI runs when nginx is missing (Debian's nginx has auth_request built in).
const nginxInstall = "apt-get install -y --no-install-recommends nginx"

const nginxSite = "docs.example.com"

// nginxBinary finds nginx; a missing nginx fails the test with the command that installs it.
func nginxBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"nginx", "/usr/sbin/nginx"} {
		if bin, err := exec.LookPath(p); err == nil {
			return bin
		}
	}
	t.Fatalf("nginx is needed to test examples/nginx (install it: %s)", nginxInstall)
	return ""
}

// nginxConfig returns a main config that includes examples/nginx/tokenagent.conf, with its
// listen port and upstream addresses replaced, and everything nginx writes inside dir.
func nginxConfig(t *testing.T, dir, listen, authz, app string) string {
	t.Helper()
	src := string(mustRead(t, filepath.Join("nginx", "tokenagent.conf")))
	for _, r := range [][2]string{
		{"listen 8080;", "listen " + listen + ";"},
		{"server 127.0.0.1:9193;", "server " + authz + ";"},
		{"server 127.0.0.1:8000;", "server " + app + ";"},
	} {
		if strings.Count(src, r[0]) != 1 {
			t.Fatalf("nginx/tokenagent.conf should hold %q exactly once", r[0])
		}
		src = strings.Replace(src, r[0], r[1], 1)
	}
	site := filepath.Join(dir, "tokenagent.conf")
	user := ""
	if os.Geteuid() == 0 {
		user = "user root root;" // the workers keep access to the test's private temp dirs
	}
	main := fmt.Sprintf(`%s
daemon off;
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log info;
events { worker_connections 64; }
http {
    access_log %[2]s/access.log;
    client_body_temp_path %[2]s/client_body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    include %[3]s;
}
`, user, dir, site)
	writeFiles(t, dir, map[string]string{"tokenagent.conf": src, "nginx.conf": main})
	return filepath.Join(dir, "nginx.conf")
}

// TestNginxConfigSyntax runs `nginx -t` on the example.
func TestNginxConfigSyntax(t *testing.T) {
	bin := nginxBinary(t)
	dir := t.TempDir()
	conf := nginxConfig(t, dir, "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")
	out, err := exec.Command(bin, "-t", "-p", dir, "-c", conf, "-e", "stderr").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("test is successful")) {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
}

// TestNginxAuthRequest runs the real nginx with the example config in front of a real
// `tokenagent serve` (its HTTP front on) and a small upstream that answers with what it
// received.
func TestNginxAuthRequest(t *testing.T) {
	bin := nginxBinary(t)
	dir := t.TempDir()

	// The upstream: records each request it gets.
	var mu sync.Mutex
	var seen []upstreamRequest
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, upstreamRequest{r.Method, r.RequestURI, r.Header.Clone(), body})
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "uri": r.RequestURI, "headers": r.Header})
	}))
	defer app.Close()
	upstreamSaw := func() []upstreamRequest {
		mu.Lock()
		defer mu.Unlock()
		s := seen
		seen = nil
		return s
	}

	// The agent, as a process, with its HTTP front.
	authz := startAgentBinary(t, dir)

	// nginx.
	listen := freeAddr(t)
	conf := nginxConfig(t, dir, listen, authz, strings.TrimPrefix(app.URL, "http://"))
	cmd := exec.Command(bin, "-p", dir, "-c", conf, "-e", "stderr")
	var nginxOut daemontest.Buffer
	cmd.Stdout, cmd.Stderr = &nginxOut, &nginxOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGQUIT) // graceful stop of this nginx only
		_ = cmd.Wait()
		if t.Failed() {
			errLog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx output:\n%s\nerror.log:\n%s", nginxOut.String(), errLog)
		}
	})
	waitListening(t, listen)

	client := &http.Client{Timeout: 10 * time.Second}
	do := func(method, path string, headers map[string]string, body io.Reader) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+listen+path, body)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = nginxSite
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	serverToken := func(secret, user string) string {
		return token.MintServerToken("k1", vault.NewSecret([]byte(secret)), user, time.Now())
	}
	spoofed := map[string]string{"X-Auth-User": "1", "X-Auth-Site": "evil", "X-Auth-Elevated": "true",
		"X-Auth-Kind": "apikey", "X-Auth-Scopes": "admin", "X-Auth-Client-Id": "evil"}

	t.Run("allowed with a server token", func(t *testing.T) {
		h := map[string]string{"X-Deki-Token": serverToken(nginxKeySecret, "=jane_doe")}
		for k, v := range spoofed {
			h[k] = v
		}
		resp, body := do("POST", "/@api/deki/pages/home?x=1", h, strings.NewReader("page text"))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		got := upstreamSaw()
		if len(got) != 1 {
			t.Fatalf("the upstream got %d requests", len(got))
		}
		r := got[0]
		wantHeaders(t, r.Header, map[string]string{"X-Auth-User": "=jane_doe", "X-Auth-Kind": "server", "X-Auth-Site": "docs",
			"X-Auth-Elevated": "", "X-Auth-Scopes": "", "X-Auth-Client-Id": ""})
		if r.Method != "POST" || r.RequestURI != "/@api/deki/pages/home?x=1" {
			t.Errorf("the upstream got %s %s", r.Method, r.RequestURI)
		}
		if string(r.Body) != "page text" {
			t.Errorf("the upstream got body %q", r.Body)
		}
	})

	t.Run("anonymous: spoofed X-Auth-* never reach the upstream", func(t *testing.T) {
		resp, body := do("GET", "/@api/deki/pages/home", spoofed, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		got := upstreamSaw()
		if len(got) != 1 {
			t.Fatalf("the upstream got %d requests", len(got))
		}
		wantHeaders(t, got[0].Header, map[string]string{"X-Auth-User": "", "X-Auth-Kind": "anonymous", "X-Auth-Site": "docs",
			"X-Auth-Elevated": "", "X-Auth-Scopes": "", "X-Auth-Client-Id": ""})
	})

	// Denials: the agent's status, X-Auth-Reason and a JSON body; the upstream sees nothing.
	for _, tc := range []struct {
		name, method, path, host string
		headers                  map[string]string
		status                   int
		reason                   string
		wwwAuth                  string
	}{
		{"anonymous write", "POST", "/@api/deki/pages/home", nginxSite, nil, 401, "authentication_required", ""},
		// The client's own X-Original-* headers never stand in for the real request.
		{"anonymous write, spoofed X-Original-*", "POST", "/@api/deki/pages/home", nginxSite, map[string]string{
			"X-Original-Method": "GET", "X-Original-URI": "/", "X-Original-Host": "nowhere.example"}, 401, "authentication_required", ""},
		{"forged token", "GET", "/", nginxSite, map[string]string{"X-Deki-Token": serverToken("wrong", "42")}, 401, "bad_signature", ""},
		{"restricted key", "GET", "/", nginxSite, map[string]string{"X-Deki-Token": token.MintServerToken("bot", vault.NewSecret([]byte("bot-secret")), "=jane", time.Now())}, 403, "user_restricted", ""},
		{"two credentials", "GET", "/", nginxSite, map[string]string{"X-Deki-Token": serverToken(nginxKeySecret, "42"), "Authorization": "Bearer a.b.c"}, 400, "multiple_credentials", ""},
		{"unknown site", "GET", "/", "nowhere.example", nil, 404, "unknown_site", ""},
		{"malformed JWT", "GET", "/", nginxSite, map[string]string{"Authorization": "Bearer not-a-jwt"}, 401, "malformed_token", `Bearer error="invalid_token"`},
	} {
		t.Run("denied: "+tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, "http://"+listen+tc.path, nil)
			req.Host = tc.host
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			wantDenial(t, resp, body, tc.status, tc.reason)
			if got := resp.Header.Values("WWW-Authenticate"); tc.wwwAuth != "" && (len(got) != 1 || got[0] != tc.wwwAuth) {
				t.Errorf("WWW-Authenticate %q, want exactly %q", got, tc.wwwAuth)
			}
			if n := len(upstreamSaw()); n != 0 {
				t.Errorf("a denied request reached the upstream (%d)", n)
			}
		})
	}

	t.Run("browser token from another origin: CORS headers", func(t *testing.T) {
		resp, body := do("GET", "/@api/deki/pages/home", map[string]string{"X-Deki-Token": "pub1", "Origin": "https://app.example.org"}, nil)
		if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.org" ||
			resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
			t.Errorf("status %d, headers %v: %s", resp.StatusCode, resp.Header, body)
		}
		if got := upstreamSaw(); len(got) != 1 || got[0].Header.Get("X-Auth-Kind") != "browser" {
			t.Errorf("the upstream got %v", got)
		}
		// A refused Auth Token with it: the denial still carries the CORS headers, so the
		// page's script can read the 401.
		resp, body = do("GET", "/", map[string]string{"X-Deki-Token": "pub1", "Origin": "https://app.example.org",
			"Cookie": "authtoken=42_638000000000000000_" + strings.Repeat("0", 64)}, nil)
		wantDenial(t, resp, body, 401, "")
		if resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.org" {
			t.Errorf("a denial of a cross-origin browser request lacks its CORS headers: %v", resp.Header)
		}
		if n := len(upstreamSaw()); n != 0 {
			t.Errorf("a denied request reached the upstream (%d)", n)
		}
	})

	t.Run("CORS preflight answered by the agent", func(t *testing.T) {
		resp, body := do("OPTIONS", "/@api/deki/pages/home", map[string]string{
			"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST"}, nil)
		if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.org" {
			t.Errorf("preflight: %d %v %s", resp.StatusCode, resp.Header, body)
		}
		resp, body = do("OPTIONS", "/@api/deki/pages/home", map[string]string{
			"Origin": "https://evil.example.net", "Access-Control-Request-Method": "POST"}, nil)
		wantDenial(t, resp, body, 403, "origin_not_allowed")
		if n := len(upstreamSaw()); n != 0 {
			t.Errorf("a preflight reached the upstream (%d)", n)
		}
	})

	t.Run("token exchange answered by the agent", func(t *testing.T) {
		resp, body := do("POST", "/@app/auth/token/exchange", map[string]string{"Content-Type": "text/plain"}, strings.NewReader("not.a.jwt"))
		wantDenial(t, resp, body, 401, "")
		resp, body = do("POST", "/@app/auth/token/exchange", map[string]string{"Content-Type": "text/plain"},
			strings.NewReader(strings.Repeat("a", 20<<10)))
		wantDenial(t, resp, body, 413, "body_too_large")
		if n := len(upstreamSaw()); n != 0 {
			t.Errorf("an exchange reached the upstream (%d)", n)
		}
	})
}

// upstreamRequest is what the upstream received.
type upstreamRequest struct {
	Method, RequestURI string
	Header             http.Header
	Body               []byte
}

// wantHeaders checks headers the upstream received: each name exactly once with the value, or
// absent when the value is "".
func wantHeaders(t *testing.T, h http.Header, want map[string]string) {
	t.Helper()
	for k, v := range want {
		got := h.Values(k)
		switch {
		case v == "" && len(got) != 0:
			t.Errorf("the upstream got %s: %q, want none", k, got)
		case v != "" && (len(got) != 1 || got[0] != v):
			t.Errorf("the upstream got %s: %q, want exactly %q", k, got, v)
		}
	}
}

// wantDenial checks a denial as the agent makes it: the status, X-Auth-Reason and the JSON body
// {"error": reason, "error_description": text}. An empty reason accepts any.
func wantDenial(t *testing.T, resp *http.Response, body []byte, status int, reason string) {
	t.Helper()
	var d struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d (%s)", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if err := json.Unmarshal(body, &d); err != nil || d.Error == "" || d.Description == "" {
		t.Errorf("body %q is not the agent's JSON denial: %v", body, err)
	}
	if reason != "" && (d.Error != reason || resp.Header.Get("X-Auth-Reason") != reason) {
		t.Errorf("reason %q (X-Auth-Reason %q), want %q", d.Error, resp.Header.Get("X-Auth-Reason"), reason)
	}
}

const nginxKeySecret = "nginx-example-secret"

// startAgentBinary builds tokenagent and runs `tokenagent serve` with its HTTP front, on a
// config with one site; it returns the front's address.
func startAgentBinary(t *testing.T, dir string) string {
	t.Helper()
	help, _ := exec.Command(daemontest.Binary(t), "serve", "--help").CombinedOutput()
	if !bytes.Contains(help, []byte("--authz-http-addr")) {
		t.Fatalf("tokenagent serve has no --authz-http-addr flag, which turns on the HTTP front nginx asks; `tokenagent serve --help` says:\n%s", help)
	}
	authKey := base64.StdEncoding.EncodeToString([]byte("nginx-example-auth-token-key-32b"))
	writeFiles(t, dir, map[string]string{
		"keys.yaml": `
sites:
  docs:
    authtoken:
      - {key: "` + authKey + `", created: "2026-01-01T00:00:00Z"}
    server-tokens:
      k1: {secret: "` + nginxKeySecret + `"}
      bot: {secret: "bot-secret", restricted_user: "=deploy-bot"}
    browser-tokens:
      pub1: {origins: ["https://app.example.org"]}
`,
		"agent.yaml": `
keys: {source: file, file: keys.yaml}
sites:
  - id: docs
    hosts: [` + nginxSite + `]
    routes:
      - {methods: [POST, PUT, DELETE], path: "/@api/deki/pages/*", require: user}
`,
	})
	p := daemontest.StartProcess(t, filepath.Join(dir, "agent.yaml"), nil, "--authz-http-addr", "127.0.0.1:0")
	daemontest.Eventually(t, "tokenagent to be ready", p.Ready)
	return p.AuthzHTTP
}

// freeAddr returns a loopback address with a port nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitListening waits until something accepts connections on addr.
func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Package daemontest runs the real tokenagent daemon in a test's process, on free loopback
// ports, with a gRPC client connected the way Envoy is, and stops both when the test ends. It
// is the one harness every test that starts the daemon uses (the daemon's own tests, the fault
// tests, the examples'), like vault/vaulttest for Vault.
//
//	e := daemontest.Start(t, configYAML, daemontest.Options{Files: map[string]string{"keys.yaml": keys}})
//	resp := e.Check(t, "GET", "docs.example.com", "/", nil)
//	if daemontest.Reason(resp) != "allowed" { ... }
package daemontest

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/config"
)

// Options tune Start.
type Options struct {
	// Files are written into the config's directory before it is loaded (name -> content):
	// the keys file, a users file, policies.
	Files map[string]string
	// Daemon are the daemon's options. A nil Logger logs into Env.Logs (shown when the test
	// fails).
	Daemon daemon.Options
	// WaitReady waits until /readyz answers 200 before Start returns.
	WaitReady bool
	// KeepAddrs keeps the config's listen addresses instead of free loopback ports.
	KeepAddrs bool
	// ClientTLS connects the gRPC client (and Env.HTTPClient) with TLS; nil: plaintext.
	ClientTLS *tls.Config
}

// Env is a running daemon and its client.
type Env struct {
	D      *daemon.Daemon
	Client authv3.AuthorizationClient
	Conn   *grpc.ClientConn
	// HTTP is the base URL of the daemon's HTTP address (/healthz, /readyz, /metrics), https
	// when the config has http_tls; HTTPClient talks to it (with Options.ClientTLS).
	HTTP       string
	HTTPClient *http.Client
	// Dir is the config's directory; ConfigPath the config file (rewrite it, then Reload).
	Dir, ConfigPath string
	// Logs is what the daemon logged, when Options.Daemon.Logger was nil.
	Logs *Buffer
}

// Start writes cfgYAML as tokenagent.yaml (and opts.Files) into a new temporary directory,
// loads it and runs the daemon on it until the test ends.
func Start(t testing.TB, cfgYAML string, opts Options) *Env {
	t.Helper()
	dir := t.TempDir()
	for name, body := range opts.Files {
		WriteFile(t, filepath.Join(dir, name), body)
	}
	cfgPath := filepath.Join(dir, "tokenagent.yaml")
	WriteFile(t, cfgPath, cfgYAML)
	return StartFile(t, cfgPath, opts)
}

// StartFile loads the config file at cfgPath and runs the daemon on it until the test ends.
func StartFile(t testing.TB, cfgPath string, opts Options) *Env {
	t.Helper()
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	e := StartConfig(t, cfg, opts)
	e.ConfigPath = cfgPath
	return e
}

// TransportEnv names the environment variable that makes every daemon a test starts (in
// process or as a child process) serve with that grpc_transport: CI runs the daemon's tests
// once with the default transport and once with TOKENAGENT_TEST_GRPC_TRANSPORT=grpc-go.
const TransportEnv = "TOKENAGENT_TEST_GRPC_TRANSPORT"

// StartConfig runs the daemon on cfg until the test ends.
func StartConfig(t testing.TB, cfg *config.Config, opts Options) *Env {
	t.Helper()
	if tr := os.Getenv(TransportEnv); tr != "" {
		cfg.GRPCTransport = tr
	}
	if !opts.KeepAddrs {
		cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
		if cfg.AuthzHTTPAddr != "" {
			cfg.AuthzHTTPAddr = "127.0.0.1:0"
		}
	}
	e := &Env{Dir: cfg.Dir}
	if opts.Daemon.Logger == nil {
		e.Logs = &Buffer{}
		opts.Daemon.Logger = slog.New(slog.NewTextHandler(e.Logs, nil))
	}
	d, err := daemon.New(context.Background(), cfg, opts.Daemon)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Listen(); err != nil {
		d.Close()
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- d.Serve() }()
	creds := insecure.NewCredentials()
	if opts.ClientTLS != nil {
		creds = credentials.NewTLS(opts.ClientTLS)
	}
	conn, err := grpc.NewClient(d.GRPCAddr(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		d.Shutdown(context.Background())
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
		if t.Failed() && e.Logs != nil {
			t.Logf("the daemon's log:\n%s", e.Logs.String())
		}
	})
	e.D, e.Conn, e.Client, e.HTTP = d, conn, authv3.NewAuthorizationClient(conn), "http://"+d.HTTPAddr()
	e.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	if cfg.HTTPTLS != nil {
		e.HTTP = "https://" + d.HTTPAddr()
		e.HTTPClient.Transport = &http.Transport{TLSClientConfig: opts.ClientTLS}
	}
	if opts.WaitReady {
		Eventually(t, "the daemon to be ready", func() bool { return d.Ready().Ready })
	}
	return e
}

// Check asks the daemon about one request, built as Envoy's ext_authz filter builds it.
func (e *Env) Check(t testing.TB, method, host, path string, headers map[string]string) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := e.Client.Check(ctx, CheckRequest(method, host, path, headers))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp
}

// CheckRequest builds a CheckRequest the way Envoy's ext_authz filter does: lower-case header
// names with the pseudo-headers, the host in :authority and in host, the path with its query.
func CheckRequest(method, host, path string, headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{":authority": host, ":method": method, ":path": path, ":scheme": "https",
		"user-agent": "daemontest", "x-forwarded-proto": "https", "x-request-id": "0f1e2d3c"}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: &corev3.Address{}},
		Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1", Method: method, Headers: h, Path: path, Host: host, Scheme: "https", Protocol: "HTTP/1.1",
		}},
	}}
}

// Reason is "allowed" for an allowed answer, else the denial's x-auth-reason.
func Reason(r *authv3.CheckResponse) string {
	if r.GetOkResponse() != nil {
		return "allowed"
	}
	return DeniedHeader(r, "x-auth-reason")
}

// UpstreamHeader is the value of the header an allowed answer sets upstream ("" when none).
func UpstreamHeader(r *authv3.CheckResponse, name string) string {
	for _, h := range r.GetOkResponse().GetHeaders() {
		if strings.EqualFold(h.GetHeader().GetKey(), name) {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}

// DeniedHeader is the value of a header of a denial ("" when none).
func DeniedHeader(r *authv3.CheckResponse, name string) string {
	for _, h := range r.GetDeniedResponse().GetHeaders() {
		if strings.EqualFold(h.GetHeader().GetKey(), name) {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}

// Counter sums the samples of the counter (or gauge) family name in the daemon's registry
// whose labels hold every pair of labels.
func (e *Env) Counter(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := e.D.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	sample:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || lp.GetName() == k && lp.GetValue() == v
				}
				if !found {
					continue sample
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// Readyz fetches /readyz: its status and decoded body.
func (e *Env) Readyz(t testing.TB) (int, daemon.Readiness) {
	t.Helper()
	resp, err := e.HTTPClient.Get(e.HTTP + "/readyz")
	if err != nil {
		t.Fatalf("readyz: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r daemon.Readiness
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("readyz body %q: %v", b, err)
	}
	return resp.StatusCode, r
}

// Eventually polls cond until it holds; the bound is a liveness limit (the test fails rather
// than hangs), never an assertion about speed.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
	}
}

// WriteFile writes s to p.
func WriteFile(t testing.TB, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Buffer is a log sink safe for concurrent writes.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Records decodes what was written as JSON log lines (slog's JSON handler), one map a line.
func (b *Buffer) Records(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("a log line is not JSON: %q", line)
		}
		out = append(out, rec)
	}
	return out
}

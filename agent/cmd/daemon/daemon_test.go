package daemon_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
)

var authKey = []byte("integration-auth-token-key-32byt")

const configYAML = `
grpc_addr: 127.0.0.1:0
http_addr: 127.0.0.1:0
keys: {source: file, file: keys.yaml, refresh: 1s, max_stale: 1h}
sites:
  - id: docs
    hosts: [docs.example.com, "*.docs.example.com"]
    routes:
      - {methods: [POST, PUT, DELETE], path: "/@api/deki/pages/*", require: user}
`

func keysYAML() string {
	return `
sites:
  docs:
    authtoken:
      - {key: "` + base64.StdEncoding.EncodeToString(authKey) + `", created: "2026-01-01T00:00:00Z"}
    server-tokens:
      k1: {secret: "s3cret"}
      bot: {secret: "bot-secret", restricted_user: "9"}
`
}

// start runs a real daemon on configYAML and keysYAML (daemontest), quietly.
func start(t *testing.T) *daemontest.Env {
	t.Helper()
	return daemontest.Start(t, configYAML, daemontest.Options{Files: map[string]string{"keys.yaml": keysYAML()},
		Daemon: daemon.Options{Logger: slog.New(slog.DiscardHandler)}})
}

func serverToken(secret, user string) string {
	return token.MintServerToken("k1", vault.NewSecret([]byte(secret)), user, time.Now())
}

func TestCheckOverGRPCAllowed(t *testing.T) {
	e := start(t)
	resp := e.Check(t, "GET", "docs.example.com", "/page?q=1", map[string]string{
		"x-deki-token": serverToken("s3cret", "=jane_doe@x"),
		"x-auth-admin": "1", "x-auth-user": "999",
	})
	ok := resp.GetOkResponse()
	if codes.Code(resp.GetStatus().GetCode()) != codes.OK || ok == nil {
		t.Fatalf("not allowed: %v", resp)
	}
	got := map[string]string{}
	for _, h := range ok.GetHeaders() {
		//lint:ignore SA1019 SPEC §4 asks for append: false beside append_action
		if h.GetAppend() == nil || h.GetAppend().GetValue() ||
			h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("header %s does not say overwrite both ways: %v", h.GetHeader().GetKey(), h)
		}
		got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	want := map[string]string{"x-auth-site": "docs", "x-auth-kind": "server", "x-auth-user": "=jane_doe%40x"}
	if len(got) != len(want) {
		t.Errorf("headers = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if r := ok.GetHeadersToRemove(); len(r) != 1 || r[0] != "x-auth-admin" {
		t.Errorf("headers_to_remove = %v, want [x-auth-admin]", r)
	}
	if q := ok.GetQueryParametersToRemove(); strings.Join(q, ",") != "apikey,authtoken" {
		t.Errorf("query_parameters_to_remove = %v", q)
	}
	md := resp.GetDynamicMetadata().GetFields()
	for k, v := range map[string]string{"site": "docs", "kind": "server", "user": "=jane_doe%40x"} {
		if md[k].GetStringValue() != v {
			t.Errorf("dynamic metadata %s = %v, want %q", k, md[k], v)
		}
	}
	if _, has := md["client_id"]; has {
		t.Error("dynamic metadata has an empty client_id")
	}
}

func TestCheckOverGRPCDenials(t *testing.T) {
	e := start(t)
	tests := []struct {
		name    string
		method  string
		host    string
		path    string
		headers map[string]string
		code    codes.Code
		status  int32
		reason  string
	}{
		{"unknown site", "GET", "elsewhere.example.com", "/", nil, codes.NotFound, 404, "unknown_site"},
		{"bad signature", "GET", "docs.example.com", "/", map[string]string{"x-deki-token": serverToken("guess", "1")}, codes.Unauthenticated, 401, "bad_signature"},
		{"anonymous write", "POST", "docs.example.com", "/@api/deki/pages/x", nil, codes.Unauthenticated, 401, "authentication_required"},
		{"two credentials", "GET", "docs.example.com", "/?authtoken=1", map[string]string{"x-deki-token": serverToken("s3cret", "1")}, codes.InvalidArgument, 400, "multiple_credentials"},
		{"restricted user", "GET", "docs.example.com", "/", map[string]string{"x-deki-token": token.MintServerToken("bot", vault.NewSecret([]byte("bot-secret")), "1", time.Now())}, codes.PermissionDenied, 403, "user_restricted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.Check(t, tc.method, tc.host, tc.path, tc.headers)
			if c := codes.Code(resp.GetStatus().GetCode()); c != tc.code {
				t.Errorf("gRPC status = %v, want %v", c, tc.code)
			}
			d := resp.GetDeniedResponse()
			if d == nil || int32(d.GetStatus().GetCode()) != tc.status {
				t.Fatalf("denied response = %v, want status %d", d, tc.status)
			}
			hs := map[string]string{}
			for _, h := range d.GetHeaders() {
				hs[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
			}
			if hs["x-auth-reason"] != tc.reason || hs["content-type"] != "application/json" {
				t.Errorf("headers = %v", hs)
			}
			var body struct {
				Error       string `json:"error"`
				Description string `json:"error_description"`
			}
			if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil || body.Error != tc.reason || body.Description == "" {
				t.Errorf("body = %q (%v)", d.GetBody(), err)
			}
		})
	}
}

func TestCheckOverGRPCUnreadableRequest(t *testing.T) {
	e := start(t)
	_, err := e.Client.Check(context.Background(), &authv3.CheckRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("err = %v, want InvalidArgument", err)
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	e := start(t)
	hc, err := healthpb.NewHealthClient(e.Conn).Check(context.Background(),
		&healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("grpc health = %v, %v", hc, err)
	}
	e.Check(t, "GET", "docs.example.com", "/", nil)
	e.Check(t, "GET", "docs.example.com", "/", map[string]string{"x-deki-token": serverToken("guess", "1")})

	if code, body := get(t, e.HTTP+"/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Errorf("/healthz = %d %q", code, body)
	}
	code, body := get(t, e.HTTP+"/readyz")
	var r daemon.Readiness
	if err := json.Unmarshal([]byte(body), &r); err != nil || code != 200 || !r.Ready {
		t.Errorf("/readyz = %d %q", code, body)
	}
	_, metrics := get(t, e.HTTP+"/metrics")
	for _, want := range []string{
		`tokenagent_check_duration_seconds_bucket{decision="allow",kind="anonymous",site="docs"`,
		`tokenagent_decisions_total{decision="deny",kind="server",reason="bad_signature",site="docs"} 1`,
		`tokenagent_decisions_total{decision="allow",kind="anonymous",reason="",site="docs"} 1`,
		`tokenagent_key_source_reads_total{outcome="ok",source="file"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestReload(t *testing.T) {
	e := start(t)
	if resp := e.Check(t, "GET", "docs.example.com", "/private", nil); resp.GetOkResponse() == nil {
		t.Fatal("open before the reload")
	}
	daemontest.WriteFile(t, e.ConfigPath, configYAML+"      - {path: /private, require: authenticated}\n")
	if err := e.D.Reload(e.ConfigPath); err != nil {
		t.Fatal(err)
	}
	if resp := e.Check(t, "GET", "docs.example.com", "/private", nil); resp.GetOkResponse() != nil {
		t.Fatal("still open after the reload")
	}
	// A bad file is refused; the config before it keeps serving and /readyz says why.
	daemontest.WriteFile(t, e.ConfigPath, configYAML+"      - {path: /private, require: nobody}\n")
	if err := e.D.Reload(e.ConfigPath); err == nil || !strings.Contains(err.Error(), "require") {
		t.Fatalf("bad reload: %v", err)
	}
	if resp := e.Check(t, "GET", "docs.example.com", "/private", nil); resp.GetOkResponse() != nil {
		t.Fatal("a bad reload changed the decisions")
	}
	_, body := get(t, e.HTTP+"/readyz")
	if !strings.Contains(body, "reload refused") {
		t.Errorf("/readyz does not report the refused reload: %s", body)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

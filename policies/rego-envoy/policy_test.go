package regoenvoy_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/plugins/opatest"
	"github.com/tokenagent/tokenagent/vault"
)

func sources(t *testing.T, maintenance bool) map[string]string {
	t.Helper()
	rego, err := os.ReadFile("policy.rego")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("data.json")
	if err != nil {
		t.Fatal(err)
	}
	d := string(data)
	if maintenance {
		d = strings.Replace(d, `"maintenance": false`, `"maintenance": true`, 1)
	}
	return map[string]string{"policy.rego": string(rego), "data.json": d}
}

var authKey = []byte("0123456789abcdef0123456789abcdef")

// The bundle built from policy.rego and data.json with the real opa, run by a real agent and
// asked over gRPC as Envoy asks (SPEC §5a): the decision object's status, body and headers
// reach Envoy, the identity tokenagent verified reaches the policy, and no credential does.
func TestRegoEnvoyOverGRPC(t *testing.T) {
	bundle := opatest.Build(t, sources(t, false), "envoy/authz/result")
	down := opatest.Build(t, sources(t, true), "envoy/authz/result")
	keys := `
sites:
  docs:
    authtoken:
      - {key: "` + base64.StdEncoding.EncodeToString(authKey) + `", created: "2026-01-01T00:00:00Z"}
    server-tokens:
      k1: {secret: "s3cret"}
  maint:
    server-tokens:
      k1: {secret: "s3cret"}
`
	cfg := fmt.Sprintf(`
keys: {source: file, file: keys.yaml}
sites:
  - id: docs
    hosts: [docs.example.com]
    policy: %q
    policy_entrypoint: envoy/authz/result
    policy_deadline: 5s
  - id: maint
    hosts: [maint.example.com]
    policy: %q
    policy_entrypoint: data.envoy.authz.result
    policy_deadline: 5s
`, bundle, down)
	e := daemontest.Start(t, cfg, daemontest.Options{Files: map[string]string{"keys.yaml": keys}, WaitReady: true,
		Daemon: daemon.Options{Logger: slog.New(slog.DiscardHandler)}})
	server := func(user string) map[string]string {
		return map[string]string{"x-deki-token": token.MintServerToken("k1", vault.NewSecret([]byte("s3cret")), user, time.Now())}
	}
	cookie := map[string]string{"cookie": "authtoken=" + token.MintAuthToken(vault.NewSecret(authKey), "42", time.Now())}
	for _, tc := range []struct {
		name, host, method, path string
		headers                  map[string]string
		status                   int // 0: allowed
		body, header, value      string
	}{
		{"anonymous read", "docs.example.com", "GET", "/pages/home", nil, 0, "", "", ""},
		{"anonymous write", "docs.example.com", "POST", "/pages/home", nil, 403, "writes need an editor of the site", "", ""},
		{"an editor writes", "docs.example.com", "POST", "/pages/home", server("42"), 0, "", "x-editor", "42"},
		{"an editor by cookie", "docs.example.com", "PUT", "/pages/home", cookie, 0, "", "x-editor", "42"},
		{"not an editor", "docs.example.com", "POST", "/pages/home", server("7"), 403, "writes need an editor of the site", "", ""},
		{"site API by cookie", "docs.example.com", "GET", "/@api/deki/site/settings", cookie, 403, "the site API takes server tokens only", "", ""},
		{"site API by server token", "docs.example.com", "GET", "/@api/deki/site/settings", server("42"), 0, "", "", ""},
		{"maintenance", "maint.example.com", "POST", "/pages/home", server("42"), 503, "the site is read-only for maintenance", "retry-after", "600"},
		{"maintenance read", "maint.example.com", "GET", "/pages/home", nil, 0, "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.Check(t, tc.method, tc.host, tc.path, tc.headers)
			if tc.status == 0 {
				if daemontest.Reason(resp) != "allowed" {
					t.Fatalf("denied: %s %s", daemontest.Reason(resp), resp.GetDeniedResponse().GetBody())
				}
				if tc.header != "" && daemontest.UpstreamHeader(resp, tc.header) != tc.value {
					t.Errorf("upstream %s = %q, want %q", tc.header, daemontest.UpstreamHeader(resp, tc.header), tc.value)
				}
				return
			}
			d := resp.GetDeniedResponse()
			if int(d.GetStatus().GetCode()) != tc.status || daemontest.Reason(resp) != "policy_denied" {
				t.Fatalf("status %d reason %s, want %d policy_denied", d.GetStatus().GetCode(), daemontest.Reason(resp), tc.status)
			}
			var body struct {
				Error       string `json:"error"`
				Description string `json:"error_description"`
			}
			if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil || body.Description != tc.body {
				t.Errorf("body %s, want error_description %q", d.GetBody(), tc.body)
			}
			if tc.header != "" && daemontest.DeniedHeader(resp, tc.header) != tc.value {
				t.Errorf("denial header %s = %q, want %q", tc.header, daemontest.DeniedHeader(resp, tc.header), tc.value)
			}
		})
	}
}

// A policy that sets an x-auth-* header is refused (policy_error, fail closed), and one that
// needs a built-in the host lacks is not loaded: /readyz names it.
func TestRegoRefusals(t *testing.T) {
	spoof := opatest.Build(t, map[string]string{"p.rego": "package envoy.authz\n\nresult := {\"allowed\": true, \"headers\": {\"x-auth-user\": \"1\"}}\n"},
		"envoy/authz/result")
	send := opatest.Build(t, map[string]string{"p.rego": "package envoy.authz\n\nimport rego.v1\n\nallow if http.send({\"method\": \"GET\", \"url\": \"http://x/\"}).status_code == 200\n"},
		"envoy/authz/allow")
	cfg := fmt.Sprintf(`
keys: {source: file, file: keys.yaml}
sites:
  - {id: spoof, hosts: [spoof.example.com], policy: %q}
  - {id: send, hosts: [send.example.com], policy: %q}
`, spoof, send)
	e := daemontest.Start(t, cfg, daemontest.Options{Files: map[string]string{"keys.yaml": "sites: {}\n"},
		Daemon: daemon.Options{Logger: slog.New(slog.DiscardHandler)}})
	if got := daemontest.Reason(e.Check(t, "GET", "spoof.example.com", "/", nil)); got != "policy_error" {
		t.Errorf("a policy setting x-auth-user: %s, want policy_error", got)
	}
	daemontest.Eventually(t, "/readyz to name the missing built-in", func() bool {
		_, r := e.Readyz(t)
		return strings.Contains(strings.Join(r.Problems, "\n"), "http.send")
	})
	if got := daemontest.Reason(e.Check(t, "GET", "send.example.com", "/", nil)); got != "policy_error" {
		t.Errorf("a site whose policy did not load: %s, want policy_error", got)
	}
}

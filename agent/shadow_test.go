package agent

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file/filetest"
)

// shadowAgent is newTestAgent with site docs in shadow mode (mode) and its metrics on reg.
func shadowAgent(t *testing.T, mode string, reg *prometheus.Registry) *Agent {
	t.Helper()
	doc := `
keys: {source: file, file: keys.yaml}
sites:
  - id: docs
    mode: ` + mode + `
    hosts: [docs.example.com]
    routes:
      - {path: "/admin", require: user}
  - id: other
    hosts: [other.example.com]
`
	cfg, err := config.Parse([]byte(doc), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	clock := func() time.Time { return testNow }
	store := filetest.Store(t, testKeysYAML(), vault.StoreOptions{Now: clock, Logger: slog.New(slog.DiscardHandler)})
	a, err := New(newRuntime(t, RuntimeOptions{Keys: store, Now: clock, Logger: slog.New(slog.DiscardHandler), Registerer: reg}), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// A site in shadow mode decides as in enforce mode, but lets a would-be denial through
// without identity: only x-auth-site and x-auth-kind: anonymous set, every client-sent x-auth-*
// removed, the would-be reason in the decision and counted (SPEC §8).
func TestShadowMode(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := shadowAgent(t, "shadow", reg)
	spoof := map[string]string{"x-auth-user": "1", "x_auth_admin": "yes"}
	forged := map[string]string{"x-deki-token": serverToken("guess", "42", testNow), "x-auth-user": "1"}
	for _, tc := range []struct {
		name, host, path string
		headers          map[string]string
		shadow           reason.Reason
	}{
		{"anonymous on a user route", "docs.example.com", "/admin", spoof, reason.AuthenticationRequired},
		{"forged server token", "docs.example.com", "/", forged, reason.BadSignature},
		{"malformed request", "docs.example.com", "/a%00b", spoof, reason.MalformedRequest},
		{"two credentials", "docs.example.com", "/", map[string]string{"x-deki-token": serverToken("s3cret", "42", testNow), "cookie": "authtoken=" + authToken("7", testNow)}, reason.MultipleCredentials},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := check(t, a, "GET", tc.host, tc.path, tc.headers)
			if !d.Allowed || d.Shadow != tc.shadow || d.Reason != "" {
				t.Fatalf("allowed=%v shadow=%q reason=%q, want allowed with shadow %q", d.Allowed, d.Shadow, d.Reason, tc.shadow)
			}
			if d.Identity.Kind != token.KindAnonymous || d.Identity.User != "" {
				t.Errorf("identity %+v, want anonymous", d.Identity)
			}
			want := []token.Header{{Name: HeaderSite, Value: "docs"}, {Name: HeaderKind, Value: "anonymous"}}
			if !slices.Equal(d.UpstreamHeaders, want) {
				t.Errorf("upstream headers %v, want %v", d.UpstreamHeaders, want)
			}
			for name := range tc.headers {
				if isAuthHeader(name) && name != HeaderSite && name != HeaderKind && !slices.Contains(d.RemoveHeaders, name) {
					t.Errorf("client-sent %s is not removed: %v", name, d.RemoveHeaders)
				}
			}
		})
	}
	// A valid credential is let through as itself: shadow changes only denials.
	d := check(t, a, "GET", "docs.example.com", "/admin", map[string]string{"x-deki-token": serverToken("s3cret", "42", testNow)})
	if !d.Allowed || d.Shadow != "" || d.Identity.User != "42" {
		t.Fatalf("valid token at a shadow site: %+v", d)
	}
	// Another site enforces.
	if d := check(t, a, "GET", "other.example.com", "/", forged); d.Allowed {
		t.Fatal("a site in enforce mode let a forged token through")
	}
	// The agent's own answers are answered as in enforce mode: a refused CORS preflight.
	d = a.Check(context.Background(), &Request{Method: "OPTIONS", Host: "docs.example.com", Path: "/",
		Headers: map[string]string{"origin": "https://evil.example.net", "access-control-request-method": "PUT"}})
	if d.Allowed || d.Reason != reason.OriginNotAllowed {
		t.Fatalf("a refused preflight at a shadow site: allowed=%v reason=%q", d.Allowed, d.Reason)
	}
	if n := testutil.ToFloat64(a.rt.metrics.ShadowDenials.WithLabelValues("docs", "authentication_required")); n != 1 {
		t.Errorf("tokenagent_shadow_denials_total{docs,authentication_required} = %v, want 1", n)
	}
	if n := testutil.ToFloat64(a.rt.metrics.ShadowDenials.WithLabelValues("docs", "bad_signature")); n != 1 {
		t.Errorf("tokenagent_shadow_denials_total{docs,bad_signature} = %v, want 1", n)
	}
}

// In enforce mode (the default) the same requests are denied.
func TestEnforceModeDenies(t *testing.T) {
	a := shadowAgent(t, "enforce", prometheus.NewRegistry())
	if d := check(t, a, "GET", "docs.example.com", "/admin", nil); d.Allowed || d.Reason != reason.AuthenticationRequired {
		t.Fatalf("enforce: allowed=%v reason=%q", d.Allowed, d.Reason)
	}
}

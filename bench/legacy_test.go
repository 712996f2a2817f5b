package bench

import (
	"context"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/agent/agenttest"
	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file/filetest"
)

// Benchmarks of the legacy credentials: the Impersonation Auth Token (MD5 digest) and the
// Site API Key (constant-time compare), alone and through the agent. Accepted uses log a
// warning; the logger here discards, so the numbers are the verification's own.
//
//	go test ./bench -run '^$' -bench 'Impersonation|APIKey|AgentLegacy' -benchmem

const lgAPIKey = "bench-legacy-site-api-key-0123456789abcdef"

var lgNow = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func lgStore(b *testing.B) *vault.Store {
	return filetest.Store(b, "sites:\n  legacy:\n    legacy: {apikey: \""+lgAPIKey+"\"}\n",
		vault.StoreOptions{Now: func() time.Time { return lgNow }, Logger: slog.New(slog.DiscardHandler)})
}

var lgSite = &token.SiteSettings{ID: "legacy", Hosts: []string{"legacy.example.com"}, LegacyImpersonation: true, LegacyAPIKey: true}

func BenchmarkImpersonationVerify(b *testing.B) {
	audit, _ := token.NewLegacyAudit(nil, slog.New(slog.DiscardHandler)) // no registry: cannot fail
	v := &token.ImpersonationVerifier{Keys: lgStore(b), Audit: audit, Now: func() time.Time { return lgNow }}
	key := vault.NewSecret([]byte(lgAPIKey))
	ctx := context.Background()
	for _, c := range []struct{ name, tok string }{
		{"user-id", token.MintImpersonationToken(key, "42", lgNow)},
		{"username", token.MintImpersonationToken(key, "=j_doe@example.com", lgNow)},
		{"bad-digest", token.MintImpersonationToken(vault.NewSecret([]byte("wrong")), "42", lgNow)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = v.Verify(ctx, lgSite, c.tok)
			}
		})
	}
}

func BenchmarkAPIKeyVerify(b *testing.B) {
	audit, _ := token.NewLegacyAudit(nil, slog.New(slog.DiscardHandler)) // no registry: cannot fail
	v := &token.APIKeyVerifier{Keys: lgStore(b), Audit: audit}
	ctx := context.Background()
	for _, c := range []struct{ name, key, user string }{
		{"key", lgAPIKey, ""},
		{"key+user", lgAPIKey, "42"},
		{"wrong-key", "wrong", ""},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = v.Verify(ctx, lgSite, c.key, c.user)
			}
		})
	}
}

const lgConfig = `
keys: {source: file, file: keys.yaml}
sites:
  - id: legacy
    hosts: [legacy.example.com]
    legacy: {impersonation: true, apikey: true}
`

func BenchmarkAgentLegacy(b *testing.B) {
	cfg, err := config.Parse([]byte(lgConfig), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	now := func() time.Time { return lgNow }
	a := agenttest.New(b, cfg, agent.RuntimeOptions{Keys: lgStore(b), Now: now, Logger: slog.New(slog.DiscardHandler)})
	imp := token.MintImpersonationToken(vault.NewSecret([]byte(lgAPIKey)), "42", lgNow)
	ctx := context.Background()
	for _, c := range []struct {
		name    string
		path    string
		headers map[string]string
	}{
		{"impersonation", "/", map[string]string{"x-authtoken": imp}},
		{"apikey", "/?apikey=" + url.QueryEscape(lgAPIKey) + "&impersonateuserid=42", map[string]string{}},
	} {
		req := &agent.Request{Method: "GET", Scheme: "https", Host: "legacy.example.com", Path: c.path, Headers: c.headers}
		if d := a.Check(ctx, req); !d.Allowed {
			b.Fatalf("%s: denied %q", c.name, d.Reason)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				a.Check(ctx, req)
			}
		})
	}
}

package bench

import (
	"context"
	"encoding/base64"
	"log/slog"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/agent/agenttest"
	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file/filetest"
	"go.opentelemetry.io/otel/trace"
)

// Benchmarks of the two HMAC token kinds (Auth Token, Server API Token) and of a whole
// in-process agent.Check for each. Target (issue 2): each HMAC verify ≤ 1 µs, ≤ 2 allocs.
//
//	go test ./bench -run '^$' -bench 'AuthToken|ServerToken|CheckHMAC' -benchmem

var (
	hmNow     = time.Now()
	hmAuthKey = []byte("bench-auth-token-key-32-bytes-ok")
)

const hmSecret = "bench-server-secret"

func hmKeys() string {
	return "sites:\n  docs:\n    authtoken:\n      - {key: \"" + base64.StdEncoding.EncodeToString(hmAuthKey) +
		"\", created: \"2026-01-01T00:00:00Z\"}\n    server-tokens:\n      k1: {secret: \"" + hmSecret + "\"}\n"
}

func hmStore(b *testing.B) *vault.Store {
	return filetest.Store(b, hmKeys(), vault.StoreOptions{Logger: slog.New(slog.DiscardHandler)})
}

func hmSite() *token.SiteSettings {
	return &token.SiteSettings{ID: "docs", AuthTokenTTL: token.DefaultAuthTokenTTL,
		AuthTokenRotationGrace: token.DefaultAuthTokenTTL, ServerTokenWindow: token.DefaultServerTokenWindow}
}

func BenchmarkAuthTokenVerify(b *testing.B) {
	v := &token.AuthTokenVerifier{Keys: hmStore(b)}
	site := hmSite()
	tok := token.MintAuthToken(vault.NewSecret(hmAuthKey), "42", hmNow)
	ctx := context.Background()
	if _, err := v.Verify(ctx, site, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, site, tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAuthTokenVerifyParallel(b *testing.B) {
	v := &token.AuthTokenVerifier{Keys: hmStore(b)}
	site := hmSite()
	tok := token.MintAuthToken(vault.NewSecret(hmAuthKey), "42", hmNow)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := v.Verify(ctx, site, tok); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkAuthTokenVerifyBadSignature(b *testing.B) {
	v := &token.AuthTokenVerifier{Keys: hmStore(b)}
	site := hmSite()
	tok := token.MintAuthToken(vault.NewSecret([]byte("not-the-key-not-the-key-not-the-")), "42", hmNow)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, site, tok); err == nil {
			b.Fatal("accepted")
		}
	}
}

func BenchmarkServerTokenVerify(b *testing.B) {
	v := &token.ServerTokenVerifier{Keys: hmStore(b)}
	site := hmSite()
	tok := token.MintServerToken("k1", vault.NewSecret([]byte(hmSecret)), "=jane_doe", hmNow)
	ctx := context.Background()
	if _, err := v.Verify(ctx, site, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, site, tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkServerTokenVerifyParallel(b *testing.B) {
	v := &token.ServerTokenVerifier{Keys: hmStore(b)}
	site := hmSite()
	tok := token.MintServerToken("k1", vault.NewSecret([]byte(hmSecret)), "42", hmNow)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := v.Verify(ctx, site, tok); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkServerTokenVerifyUnprefixed is the legacy form {key}_{epoch}_{user}_{sig} (site
// switch legacy.unprefixed_server_tokens), whose signature covers key, epoch and user joined
// without separators.
func BenchmarkServerTokenVerifyUnprefixed(b *testing.B) {
	v := &token.ServerTokenVerifier{Keys: hmStore(b)}
	site := hmSite()
	site.LegacyUnprefixedServerToken = true
	tok := token.MintUnprefixedServerToken("k1", vault.NewSecret([]byte(hmSecret)), "42", hmNow)
	ctx := context.Background()
	if _, err := v.VerifyUnprefixed(ctx, site, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.VerifyUnprefixed(ctx, site, tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServerTokenVerifyUnknownKey is the flood case: a made-up key, answered from the
// negative cache after the first miss, with the decoy HMAC so timing matches a known key.
func BenchmarkServerTokenVerifyUnknownKey(b *testing.B) {
	v := &token.ServerTokenVerifier{Keys: hmStore(b)}
	site := hmSite()
	tok := token.MintServerToken("nokey", vault.NewSecret([]byte(hmSecret)), "42", hmNow)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, site, tok); err == nil {
			b.Fatal("accepted")
		}
	}
}

// BenchmarkServerTokenVerifySingleUse includes the replay cache insert: each token is new.
func BenchmarkServerTokenVerifySingleUse(b *testing.B) {
	v := &token.ServerTokenVerifier{Keys: hmStore(b), Replay: token.NewReplayCache(nil)}
	site := hmSite()
	site.ServerTokenSingleUse = true
	sec := vault.NewSecret([]byte(hmSecret))
	toks := make([]string, 1<<16)
	for i := range toks {
		toks[i] = token.MintServerToken("k1", sec, "42", hmNow.Add(time.Duration(i%240)*time.Second-120*time.Second))
	}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_, _ = v.Verify(ctx, site, toks[i%len(toks)])
		i++
	}
}

func hmAgent(b *testing.B) *agent.Agent { return hmAgentTraced(b, nil, 0) }

// hmAgentTraced is hmAgent tracing its checks with tp (nil: no tracing) at ratio.
func hmAgentTraced(b *testing.B, tp trace.TracerProvider, ratio float64) *agent.Agent {
	cfg, err := config.Parse([]byte(`
keys: {source: file, file: keys.yaml}
sites:
  - id: docs
    hosts: [docs.example.com]
    routes:
      - {methods: [POST, PUT, DELETE], path: "/@api/deki/pages/*", require: user, scopes: [write]}
      - {path: "/@api/deki/site/*", require: authenticated}
`), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	return agenttest.New(b, cfg, agent.RuntimeOptions{Keys: hmStore(b), Logger: log, TracerProvider: tp, TraceRatio: ratio})
}

func benchCheck(b *testing.B, headers map[string]string, method, path string) {
	a := hmAgent(b)
	req := &agent.Request{Method: method, Scheme: "https", Host: "docs.example.com", Path: path, Headers: headers}
	ctx := context.Background()
	if d := a.Check(ctx, req); !d.Allowed {
		b.Fatalf("denied: %s", d.Body)
	}
	b.ReportAllocs()
	for b.Loop() {
		if d := a.Check(ctx, req); !d.Allowed {
			b.Fatal("denied")
		}
	}
}

// envoyHeaders are the headers a typical browser request carries through Envoy.
func envoyHeaders(extra map[string]string) map[string]string {
	h := map[string]string{":authority": "docs.example.com", ":method": "GET", ":path": "/@api/deki/pages/home",
		":scheme": "https", "accept": "application/json", "user-agent": "Mozilla/5.0", "x-forwarded-proto": "https",
		"x-request-id": "6f1c0f0e-4a1b-4a8e-9e55-0a1f1f1b2c3d", "accept-encoding": "gzip"}
	for k, v := range extra {
		h[k] = v
	}
	return h
}

func BenchmarkCheckHMACAuthToken(b *testing.B) {
	tok := token.MintAuthToken(vault.NewSecret(hmAuthKey), "42", hmNow)
	benchCheck(b, envoyHeaders(map[string]string{"cookie": "theme=dark; authtoken=" + tok + "; lang=en"}), "POST", "/@api/deki/pages/home?redirects=0")
}

func BenchmarkCheckHMACServerToken(b *testing.B) {
	tok := token.MintServerToken("k1", vault.NewSecret([]byte(hmSecret)), "42", hmNow)
	benchCheck(b, envoyHeaders(map[string]string{"x-deki-token": tok}), "GET", "/@api/deki/site/settings")
}

func BenchmarkCheckAnonymous(b *testing.B) {
	benchCheck(b, envoyHeaders(nil), "GET", "/@api/deki/pages/home/contents")
}

package bench

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/agent/agenttest"
	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file/filetest"
)

// Benchmarks of the Browser API Token path: origin parsing and matching, the verifier, the
// CORS preflight over a site with many browser keys, and the whole agent check of a browser
// request with an Auth Token.
//
//	go test ./bench -run '^$' -bench 'Browser|Origin|Preflight' -benchmem

var (
	brNow     = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	brAuthKey = []byte("bench-browser-auth-token-key-32b")
)

// brManyKeys is the number of extra browser keys of the benchmark site, each with its own
// origins, so the preflight index has real work to avoid.
const brManyKeys = 500

func brKeysYAML() string {
	var b strings.Builder
	b.WriteString("sites:\n  docs:\n    authtoken:\n      - {key: \"" + base64.StdEncoding.EncodeToString(brAuthKey) + "\", created: \"2026-11-01T00:00:00Z\"}\n")
	b.WriteString("    browser-tokens:\n      pub1: {origins: [\"*.example.com\", \"https://app.example.org\", \"partner.example.net\"]}\n")
	for i := range brManyKeys {
		fmt.Fprintf(&b, "      k%d: {origins: [\"*.tenant%d.example.io\", \"https://app%d.example.biz:8443\", \"h%d.example.dev\"]}\n", i, i, i, i)
	}
	return b.String()
}

func brStore(b *testing.B) *vault.Store {
	return filetest.Store(b, brKeysYAML(), vault.StoreOptions{Now: func() time.Time { return brNow },
		Logger: slog.New(slog.DiscardHandler)})
}

var brSite = &token.SiteSettings{ID: "docs", Hosts: []string{"docs.example.com", "*.docs.example.com"}}

func BenchmarkOriginParse(b *testing.B) {
	for _, o := range []string{"https://app.example.com", "HTTPS://App.Example.COM.:443", "https://xn--bcher-kva.example"} {
		b.Run(o, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := token.ParseOrigin(o); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkOriginMatch(b *testing.B) {
	var patterns []string
	for i := range 3 * brManyKeys {
		patterns = append(patterns, fmt.Sprintf("*.tenant%d.example.io", i), fmt.Sprintf("https://app%d.example.biz:8443", i))
	}
	m, _ := token.CompileOrigins(patterns)
	for _, c := range []struct{ name, origin string }{
		{"suffix-hit", "https://a.b.tenant1200.example.io"},
		{"exact-hit", "https://app77.example.biz:8443"},
		{"miss", "https://evil.example.net"},
	} {
		o, _ := token.ParseOrigin(c.origin)
		b.Run(fmt.Sprintf("%s/patterns=%d", c.name, m.Len()), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m.Match(o)
			}
		})
	}
}

func BenchmarkBrowserVerify(b *testing.B) {
	v := &token.BrowserVerifier{Keys: brStore(b), Logger: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	for _, c := range []struct{ name, origin string }{
		{"no-origin", ""},
		{"wildcard-origin", "https://app.example.com"},
		{"exact-origin", "https://app.example.org"},
		{"site-origin", "https://docs.example.com"},
		{"denied-origin", "https://evil.example.net"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = v.Verify(ctx, brSite, "pub1", c.origin)
			}
		})
	}
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := v.Verify(ctx, brSite, "pub1", "https://app.example.com"); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func BenchmarkPreflight(b *testing.B) {
	v := &token.BrowserVerifier{Keys: brStore(b), Logger: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	for _, c := range []struct{ name, origin string }{
		{"first-key", "https://app.example.com"},
		{"last-key", fmt.Sprintf("https://x.tenant%d.example.io", brManyKeys-1)},
		{"denied", "https://evil.example.net"},
	} {
		b.Run(fmt.Sprintf("%s/keys=%d", c.name, brManyKeys+1), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = v.Preflight(ctx, brSite, c.origin, "PUT", "content-type, x-deki-token")
			}
		})
	}
}

func BenchmarkCORSHeaders(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		token.CORSHeaders("https://app.example.com", "docs.example.com")
	}
}

const brConfig = `
keys: {source: file, file: keys.yaml}
sites:
  - id: docs
    hosts: [docs.example.com, "*.docs.example.com"]
`

func BenchmarkAgentBrowser(b *testing.B) {
	cfg, err := config.Parse([]byte(brConfig), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	now := func() time.Time { return brNow }
	a := agenttest.New(b, cfg, agent.RuntimeOptions{Keys: brStore(b), Now: now, Logger: slog.New(slog.DiscardHandler)})
	auth := token.MintAuthToken(vault.NewSecret(brAuthKey), "42", brNow.Add(-time.Hour))
	ctx := context.Background()
	for _, c := range []struct {
		name    string
		method  string
		headers map[string]string
		allowed bool
	}{
		{"key-only", "GET", map[string]string{"x-deki-token": "pub1"}, true},
		{"key+authtoken+cors", "GET", map[string]string{"x-deki-token": "pub1", "cookie": "authtoken=" + auth, "origin": "https://app.example.com"}, true},
		{"preflight", "OPTIONS", map[string]string{"origin": "https://app.example.com", "access-control-request-method": "PUT"}, false},
		{"origin-denied", "GET", map[string]string{"x-deki-token": "pub1", "origin": "https://evil.example.net"}, false},
	} {
		req := &agent.Request{Method: c.method, Scheme: "https", Host: "docs.example.com", Path: "/@api/deki/pages/1", Headers: c.headers}
		if d := a.Check(ctx, req); d.Allowed != c.allowed {
			b.Fatalf("%s: allowed %v (%q)", c.name, d.Allowed, d.Reason)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				a.Check(ctx, req)
			}
		})
	}
}

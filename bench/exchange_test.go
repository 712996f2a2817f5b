package bench

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/agent/agenttest"
	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/exchange"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/agent/token/idtokentest"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file/filetest"
	"github.com/tokenagent/tokenagent/vault/jwks"
	"github.com/tokenagent/tokenagent/vault/users"
)

// Benchmarks of the Identity Token Exchange: the id_token verifier alone per algorithm, the
// body parser, and whole in-process exchanges through agent.Check with the file user
// directory (a known user: a lookup; a new user: a locked, fsynced file rewrite).
//
//	go test ./bench -run '^$' -bench 'Exchange|IDToken' -benchmem

const exConfig = `
keys: {source: file, file: keys.yaml}
sites:
  - id: docs
    hosts: [docs.example.com]
`

type exBench struct {
	p     *idtokentest.Provider
	store *vault.Store
	a     *agent.Agent
	dir   string
}

func newExBench(b *testing.B) *exBench {
	b.Helper()
	e := &exBench{p: idtokentest.NewProvider(b, "https://idp.example.com", "docs-app")}
	keys := "sites:\n  docs:\n    authtoken:\n      - {key: \"" + base64.StdEncoding.EncodeToString(hmAuthKey) +
		"\", created: \"2026-01-01T00:00:00Z\"}\n    idps:\n      corp: " + e.p.RecordYAML(b, 0) + "\n"
	e.store = filetest.Store(b, keys, vault.StoreOptions{Logger: slog.New(slog.DiscardHandler)})
	e.dir = b.TempDir()
	e.a = e.agent(b, filepath.Join(e.dir, "users.yaml"))
	return e
}

func (e *exBench) agent(b *testing.B, usersFile string) *agent.Agent {
	b.Helper()
	cfg, err := config.Parse([]byte(exConfig), e.dir)
	if err != nil {
		b.Fatal(err)
	}
	dir, err := users.OpenFile(usersFile, users.FileOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = dir.Close() })
	a := agenttest.New(b, cfg, agent.RuntimeOptions{Keys: e.store, Logger: slog.New(slog.DiscardHandler), Users: dir})
	return a
}

func exchangeReq(body string) *agent.Request {
	return &agent.Request{Method: "POST", Scheme: "https", Host: "docs.example.com", Path: exchange.Path,
		Headers: map[string]string{"content-type": "application/json", "user-agent": "bench"}, Body: []byte(body)}
}

func BenchmarkIDTokenVerify(b *testing.B) {
	e := newExBench(b)
	v := &token.IDTokenVerifier{Keys: e.store, JWKS: jwks.NewCache(jwks.Options{})}
	site := hmSite()
	ctx := context.Background()
	for _, k := range e.p.Keys() {
		b.Run(k.Alg, func(b *testing.B) {
			tok := idtokentest.Sign(b, k, e.p.Claims(time.Now(), "alice", nil), nil)
			if _, err := v.Verify(ctx, site, tok); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, site, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParseExchangeBody(b *testing.B) {
	e := newExBench(b)
	tok := e.p.Mint(b, e.p.Claims(time.Now(), "alice", nil))
	for _, f := range []struct{ name, body string }{
		{"raw", tok}, {"json-string", `"` + tok + `"`}, {"json-object", `{"id_token":"` + tok + `"}`}, {"form", "id_token=" + tok},
	} {
		b.Run(f.name, func(b *testing.B) {
			body := []byte(f.body)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := exchange.ParseBody(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkExchangeKnownUser is a whole exchange of a user the directory knows: verify,
// lookup, mint, answer.
func BenchmarkExchangeKnownUser(b *testing.B) {
	e := newExBench(b)
	ctx := context.Background()
	for _, k := range []idtokentest.Key{e.p.RS256, e.p.ES256, e.p.EdDSA} {
		b.Run(k.Alg, func(b *testing.B) {
			req := exchangeReq(`{"id_token":"` + idtokentest.Sign(b, k, e.p.Claims(time.Now(), "alice", nil), nil) + `"}`)
			if d := e.a.Check(ctx, req); d.Status != 200 {
				b.Fatalf("%d %s %s", d.Status, d.Reason, d.Body)
			}
			b.ReportAllocs()
			for b.Loop() {
				if d := e.a.Check(ctx, req); d.Status != 200 {
					b.Fatalf("%d %s", d.Status, d.Reason)
				}
			}
		})
	}
}

// BenchmarkExchangeNewUser is a whole exchange that creates a user in the file directory
// (flock, re-read, rewrite, fsync, rename). The directory starts empty every 200 users so
// the file's size stays in the same range whatever b.N is.
func BenchmarkExchangeNewUser(b *testing.B) {
	e := newExBench(b)
	ctx := context.Background()
	now := time.Now()
	n := 0
	a := e.a
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer() // minting is the provider's work, not the agent's
		if n%200 == 0 {
			a = e.agent(b, filepath.Join(e.dir, fmt.Sprintf("users-%d.yaml", n)))
		}
		req := exchangeReq(e.p.Mint(b, e.p.Claims(now, fmt.Sprint("user-", n), nil)))
		b.StartTimer()
		if d := a.Check(ctx, req); d.Status != 200 {
			b.Fatalf("%d %s %s", d.Status, d.Reason, d.Body)
		}
		n++
	}
}

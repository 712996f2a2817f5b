package bench

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/agent/agenttest"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/fleet"
	"github.com/tokenagent/tokenagent/agent/fleet/redistest"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
)

// rvList is a revocation list on a real redis-server holding users user entries and tokens
// token entries (with their filters) for site docs, followed until in sync.
func rvList(b *testing.B, users, tokens int) *fleet.RevocationList {
	srv := redistest.Start(b, redistest.Options{})
	l, err := fleet.NewRevocationList(fleet.RevocationOptions{Redis: fleet.RedisOptions{Address: srv.Addr},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	_ = l.SetSites(context.Background(), []string{"docs"}) // not started: nothing is read yet
	exp := time.Now().Add(time.Hour)
	var wg sync.WaitGroup
	work := make(chan fleet.Revocation)
	for range 32 {
		wg.Go(func() {
			for r := range work {
				if _, err := l.Revoke(context.Background(), r); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for i := range users {
		work <- fleet.Revocation{Site: "docs", Kind: fleet.RevokeUser, Subject: fmt.Sprintf("=user%d", i), Before: time.Now(), Expires: exp}
	}
	for i := range tokens {
		work <- fleet.RevokeCredential("docs", fmt.Sprintf("revoked token %d", i), exp)
	}
	close(work)
	wg.Wait()
	l.Start(context.Background())
	daemontest.Eventually(b, "the list in sync", func() bool {
		return !l.Stale(time.Now()) && l.Revoked("docs", &token.Identity{User: "=user0"}, [2]string{})
	})
	return l
}

// BenchmarkCheckRevocations is a whole in-process check (Auth Token cookie; an OAuth JWT served
// from the verified-token cache) without a revocation list, and with 100,000 entries in force
// at the site: 100,000 users, then 50,000 users and 50,000 tokens (SPEC §9: the list costs one
// local lookup, ≤ 50 ns, per check).
func BenchmarkCheckRevocations(b *testing.B) {
	cfg, err := config.Parse([]byte(`
keys: {source: file, file: keys.yaml}
sites:
  - {id: docs, hosts: [docs.example.com]}
`), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	keys, pubs := ckJWTKeys(b)
	auth := token.MintAuthToken(vault.NewSecret(hmAuthKey), "42", ckNow)
	reqs := map[string]map[string]string{
		"authtoken": envoyHeaders(map[string]string{"cookie": "theme=dark; authtoken=" + auth + "; lang=en"}),
		"oauth":     envoyHeaders(map[string]string{"authorization": "Bearer " + ckJWT(b, keys[1], 1)}),
	}
	for _, list := range []struct {
		name          string
		users, tokens int
	}{{"none", 0, 0}, {"users=100k", 100_000, 0}, {"users=50k+tokens=50k", 50_000, 50_000}} {
		opts := agent.RuntimeOptions{Keys: ckStore(b, pubs), Logger: slog.New(slog.DiscardHandler)}
		if list.users+list.tokens > 0 {
			opts.Revocations = rvList(b, list.users, list.tokens)
		}
		a := agenttest.New(b, cfg, opts)
		for _, kind := range []string{"authtoken", "oauth"} {
			req := &agent.Request{Method: "GET", Scheme: "https", Host: "docs.example.com", Path: "/", Headers: reqs[kind]}
			b.Run(list.name+"/"+kind, func(b *testing.B) {
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
			})
		}
	}
}

package bench

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/fleet"
	"github.com/tokenagent/tokenagent/agent/fleet/redistest"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
)

// BenchmarkSingleUseStore is the cost a single-use site adds to a Server API Token check
// (SPEC §3.2, §8): the whole verification with the replay memory in the agent (local) and in
// a real redis-server on loopback (redis: one SET NX PX round trip), one caller at a time and
// with every CPU calling (-parallel: throughput, ns/op is per check across all callers).
func BenchmarkSingleUseStore(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	// A budget of 10 s instead of 50 ms: it only bounds a call, and on a busy machine (CI runs
	// one iteration of every benchmark) the first dial alone can take longer than 50 ms.
	r, err := fleet.NewReplayStore(fleet.ReplayOptions{Redis: fleet.RedisOptions{Address: srv.Addr}, Budget: 10 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	sec := vault.NewSecret([]byte(hmSecret))
	toks := make([]string, 1<<16) // distinct users: every token a first use (until the list wraps)
	for i := range toks {
		toks[i] = token.MintServerToken("k1", sec, fmt.Sprint(i+1), hmNow)
	}
	site := hmSite()
	site.ServerTokenSingleUse = true
	for _, tc := range []struct {
		name  string
		store token.ReplayStore
	}{
		{"local", token.NewReplayCache(nil)},
		{"redis", r},
	} {
		v := &token.ServerTokenVerifier{Keys: hmStore(b), Replay: tc.store}
		ctx := context.Background()
		if _, err := v.Verify(ctx, site, toks[0]); err != nil {
			b.Fatalf("%s: %v", tc.name, err)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 1
			for b.Loop() {
				_, _ = v.Verify(ctx, site, toks[i%len(toks)])
				i++
			}
		})
		b.Run(tc.name+"-parallel", func(b *testing.B) {
			b.ReportAllocs()
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_, _ = v.Verify(ctx, site, toks[int(next.Add(1))%len(toks)])
				}
			})
		})
	}
}

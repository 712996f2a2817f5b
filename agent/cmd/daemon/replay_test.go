package daemon_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/fleet/redistest"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
)

// twoAgents runs two real agent processes sharing one real redis-server as their replay store
// (SPEC §8): site "once" takes single-use Server API Tokens (window 2 s for "brief"), site
// "docs" does not.
func twoAgents(t *testing.T) (*redistest.Server, [2]*daemontest.Process) {
	t.Helper()
	srv := redistest.Start(t, redistest.Options{})
	dir := t.TempDir()
	daemontest.WriteFile(t, filepath.Join(dir, "keys.yaml"), `
sites:
  once: {server-tokens: {k1: {secret: "s3cret"}}}
  brief: {server-tokens: {k1: {secret: "s3cret"}}}
  docs: {server-tokens: {k1: {secret: "s3cret"}}}
`)
	cfg := filepath.Join(dir, "tokenagent.yaml")
	daemontest.WriteFile(t, cfg, fmt.Sprintf(`
keys: {source: file, file: keys.yaml}
replay: {store: redis, redis: {address: %q}}
sites:
  - {id: once, hosts: [once.example.com], server_token_single_use: true}
  - {id: brief, hosts: [brief.example.com], server_token_single_use: true, server_token_window: 2s}
  - {id: docs, hosts: [docs.example.com]}
`, srv.Addr))
	var agents [2]*daemontest.Process
	for i := range agents {
		agents[i] = daemontest.StartProcess(t, cfg, nil)
	}
	return srv, agents
}

var jti atomic.Int64

// freshToken is a new Server API Token (a user no other token of the test has).
func freshToken() string {
	return token.MintServerToken("k1", vault.NewSecret([]byte("s3cret")), fmt.Sprintf("=u%d", jti.Add(1)), time.Now())
}

// ask sends one check and returns the answer's reason ("allowed" or the denial's).
func ask(t *testing.T, c authv3.AuthorizationClient, host, tok string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Check(ctx, daemontest.CheckRequest("GET", host, "/", map[string]string{"x-deki-token": tok}))
	if err != nil {
		t.Errorf("Check: %v", err)
		return "rpc error"
	}
	return daemontest.Reason(resp)
}

// warm fills both agents' Redis connection pools with concurrent first uses, so the test's
// real calls do not each dial (50 ms is the whole budget of a call, dial included).
func warm(t *testing.T, clients [2]authv3.AuthorizationClient) {
	t.Helper()
	daemontest.Eventually(t, "a round of 40 concurrent first uses without a refusal", func() bool {
		var bad atomic.Int64
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Go(func() {
				if ask(t, clients[i%2], "once.example.com", freshToken()) != "allowed" {
					bad.Add(1)
				}
			})
		}
		wg.Wait()
		return bad.Load() == 0
	})
}

// A single-use token accepted by one agent is refused (replayed_token) by the other; 50
// concurrent sends of one token across both agents are accepted exactly once.
func TestReplaySharedByTwoAgents(t *testing.T) {
	srv, agents := twoAgents(t)
	clients := [2]authv3.AuthorizationClient{agents[0].Client(t), agents[1].Client(t)}
	warm(t, clients)

	tok := freshToken()
	if got := ask(t, clients[0], "once.example.com", tok); got != "allowed" {
		t.Fatalf("first use at agent A: %s", got)
	}
	for i, c := range clients {
		if got := ask(t, c, "once.example.com", tok); got != "replayed_token" {
			t.Fatalf("replay at agent %d: %s, want replayed_token", i, got)
		}
	}
	// Sites without single use never touch Redis: the same token twice is allowed twice.
	plain := freshToken()
	for _, c := range clients {
		if got := ask(t, c, "docs.example.com", plain); got != "allowed" {
			t.Fatalf("a site without single use: %s", got)
		}
	}

	for round := range 5 {
		tok := freshToken()
		results := make(chan string, 50)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 50 {
			wg.Go(func() {
				<-start
				results <- ask(t, clients[i%2], "once.example.com", tok)
			})
		}
		close(start)
		wg.Wait()
		close(results)
		counts := map[string]int{}
		for r := range results {
			counts[r]++
		}
		// A call over the 50 ms budget is refused (keys_unavailable, fail closed); it is never
		// a second acceptance.
		if counts["allowed"] != 1 || counts["replayed_token"]+counts["keys_unavailable"] != 49 {
			t.Fatalf("round %d: 50 concurrent sends of one token across two agents: %v, want exactly one allowed", round, counts)
		}
	}
	keys, err := srv.Client(t).Keys(context.Background(), "tokenagent:replay:*").Result()
	if err != nil || len(keys) < 7 {
		t.Fatalf("Redis holds %d replay keys (%v)", len(keys), err)
	}
	for _, k := range keys {
		if strings.Contains(k, "docs") {
			t.Errorf("a site without single use wrote %s", k)
		}
	}
}

// Redis killed under load: single-use sites answer 503 keys_unavailable, other sites go on,
// /readyz warns, no token is ever allowed twice; Redis restarted: the agents recover by
// themselves.
func TestReplayRedisDownUnderLoad(t *testing.T) {
	srv, agents := twoAgents(t)
	clients := [2]authv3.AuthorizationClient{agents[0].Client(t), agents[1].Client(t)}
	warm(t, clients)

	var mu sync.Mutex
	counts := map[string]int{}
	allowedTwice, docsFailed := 0, 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				// Each token is sent to both agents: at most one may accept it.
				tok := freshToken()
				a, b := ask(t, clients[w%2], "once.example.com", tok), ask(t, clients[(w+1)%2], "once.example.com", tok)
				d := ask(t, clients[w%2], "docs.example.com", freshToken())
				mu.Lock()
				counts[a]++
				counts[b]++
				if a == "allowed" && b == "allowed" {
					allowedTwice++
				}
				if d != "allowed" {
					docsFailed++
				}
				mu.Unlock()
			}
		})
	}
	seen := func(r string, n int) func() bool {
		return func() bool { mu.Lock(); defer mu.Unlock(); return counts[r] >= n }
	}
	daemontest.Eventually(t, "first uses under load", seen("allowed", 20))
	srv.Kill()
	daemontest.Eventually(t, "503 keys_unavailable for the single-use site", seen("keys_unavailable", 20))
	for i, p := range agents {
		code, r := p.Readyz(t)
		if code != 200 || !strings.Contains(strings.Join(r.Warnings, "\n"), "replay store redis") {
			t.Errorf("agent %d /readyz with Redis down: %d %v (want ready, with a warning)", i, code, r.Warnings)
		}
	}
	mu.Lock()
	allowedBefore := counts["allowed"]
	mu.Unlock()
	srv.Restart(t)
	daemontest.Eventually(t, "first uses again after Redis restarts", seen("allowed", allowedBefore+20))
	close(stop)
	wg.Wait()
	if allowedTwice != 0 {
		t.Fatalf("%d tokens allowed by both agents", allowedTwice)
	}
	if docsFailed != 0 {
		t.Fatalf("%d checks of the site without single use failed while Redis was down", docsFailed)
	}
	for r := range counts {
		if r != "allowed" && r != "replayed_token" && r != "keys_unavailable" {
			t.Errorf("unexpected answers %q: %v", r, counts)
		}
	}
	t.Logf("answers: %v", counts)
	for i, p := range agents {
		daemontest.Eventually(t, fmt.Sprintf("agent %d /readyz without the warning", i), func() bool {
			_, r := p.Readyz(t)
			return !strings.Contains(strings.Join(r.Warnings, "\n"), "replay store")
		})
	}
}

// The memory of a token ends with its window: Redis expires the key by itself.
func TestReplayExpiresWithTheWindow(t *testing.T) {
	srv, agents := twoAgents(t)
	c := agents[0].Client(t)
	tok := freshToken()
	daemontest.Eventually(t, "the first use", func() bool { return ask(t, c, "brief.example.com", tok) == "allowed" })
	admin := srv.Client(t)
	ctx := context.Background()
	keys, err := admin.Keys(ctx, "tokenagent:replay:brief:*").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("replay keys of site brief: %v %v", keys, err)
	}
	ttl, err := admin.PTTL(ctx, keys[0]).Result()
	if err != nil || ttl <= 0 || ttl > 3*time.Second {
		t.Fatalf("PTTL %v (%v), want at most the 2 s window (the epoch has 1 s resolution)", ttl, err)
	}
	daemontest.Eventually(t, "Redis to drop the key when the window ends", func() bool {
		n, err := admin.Exists(ctx, keys[0]).Result()
		return err == nil && n == 0
	})
	if got := ask(t, c, "brief.example.com", tok); got != "token_expired" {
		t.Fatalf("the token after its window: %s, want token_expired", got)
	}
}

package faulttest

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/vaulttest"
)

// The keys every fault test seeds: the site docs has an Auth Token key and server keys k1..k9
// (secret "secret-<name>"). Tests warm the cache with some keys ("cached") and keep others
// unseen until the fault.
var authKey = []byte("faulttest-auth-token-key-32bytes")

func serverSecret(key string) *vault.Secret { return vault.NewSecret([]byte("secret-" + key)) }

// seedVault writes the docs site's records into a Vault dev server (a restarted dev server is
// empty and must be seeded again).
func seedVault(t testing.TB, v *vaulttest.Server) {
	t.Helper()
	ctx := context.Background()
	kv := v.Client.KVv2("secret")
	if _, err := kv.Put(ctx, "tokenagent/sites/docs/authtoken", map[string]any{"key": base64.StdEncoding.EncodeToString(authKey)}); err != nil {
		t.Fatalf("seed: %v", err)
	}
	for i := 1; i <= 9; i++ {
		k := fmt.Sprintf("k%d", i)
		if _, err := kv.Put(ctx, "tokenagent/sites/docs/server-tokens/"+k, map[string]any{"secret": "secret-" + k}); err != nil {
			t.Fatalf("seed: %v", err)
		}
	}
}

// vaultConfig is a daemon config reading keys from Vault at addr with the token in the file
// vault-token, refreshing every refresh, each Vault request bounded by timeout.
func vaultConfig(addr string, refresh, timeout time.Duration) string {
	return `
grpc_addr: 127.0.0.1:0
http_addr: 127.0.0.1:0
keys:
  source: vault
  refresh: ` + refresh.String() + `
  max_stale: 1h
  vault: {address: "` + addr + `", timeout: ` + timeout.String() + `, auth: {method: token, token_file: vault-token}}
sites:
  - id: docs
    hosts: [docs.example.com]
    routes:
      - {path: "/private/*", require: user}
`
}

// serverCheck is a check of the docs site with a fresh Server API Token of key.
func serverCheck(key, user string) *authv3.CheckRequest {
	return daemontest.CheckRequest("GET", "docs.example.com", "/private/x",
		map[string]string{"x-deki-token": token.MintServerToken(key, serverSecret(key), user, time.Now())})
}

// authTokenCheck is a check of the docs site with a fresh Auth Token cookie.
func authTokenCheck(user string) *authv3.CheckRequest {
	return daemontest.CheckRequest("GET", "docs.example.com", "/private/x",
		map[string]string{"cookie": "authtoken=" + token.MintAuthToken(vault.NewSecret(authKey), user, time.Now())})
}

// result is one check's outcome: the gRPC error, or the CheckResponse's code and reason.
type result struct {
	err    error
	code   codes.Code
	reason string
	resp   *authv3.CheckResponse
}

func (r result) ok() bool { return r.err == nil && r.code == codes.OK }

func (r result) String() string {
	if r.err != nil {
		return "gRPC error " + status.Code(r.err).String() + ": " + r.err.Error()
	}
	if r.code == codes.OK {
		return "allowed"
	}
	return fmt.Sprintf("%s %s (HTTP %d)", r.code, r.reason, r.resp.GetDeniedResponse().GetStatus().GetCode())
}

func check(ctx context.Context, c authv3.AuthorizationClient, req *authv3.CheckRequest) result {
	resp, err := c.Check(ctx, req)
	if err != nil {
		return result{err: err}
	}
	return result{code: codes.Code(resp.GetStatus().GetCode()), reason: daemontest.DeniedHeader(resp, "x-auth-reason"), resp: resp}
}

// load runs checks from a few goroutines until stopped, sorting each outcome into phase
// counters; a check that must always be allowed and is not is recorded as a failure with its
// phase.
type load struct {
	phase atomic.Value // string
	stop  chan struct{}
	wg    sync.WaitGroup

	mu       sync.Mutex
	counts   map[string]int // phase -> checks answered
	failures []string
	total    atomic.Int64
}

// startLoad starts workers goroutines; each loops: req := next(worker, i), check it, and judge
// the result (judge returns "" when the outcome is right, else what is wrong).
func startLoad(t *testing.T, c authv3.AuthorizationClient, workers int, next func(w, i int) *authv3.CheckRequest,
	judge func(phase string, r result) string) *load {
	l := &load{stop: make(chan struct{}), counts: map[string]int{}}
	l.phase.Store("start")
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				before := l.phase.Load().(string)
				r := check(context.Background(), c, next(w, i))
				after := l.phase.Load().(string)
				l.total.Add(1)
				l.mu.Lock()
				l.counts[after]++
				if before == after { // a check spanning a phase change is judged by neither
					if bad := judge(after, r); bad != "" && len(l.failures) < 20 {
						l.failures = append(l.failures, after+": "+bad)
					}
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// setPhase starts a phase and waits until at least n checks were answered in it.
func (l *load) setPhase(t *testing.T, name string, n int) {
	t.Helper()
	l.phase.Store(name)
	l.waitPhase(t, name, n)
}

func (l *load) waitPhase(t *testing.T, name string, n int) {
	t.Helper()
	daemontest.Eventually(t, fmt.Sprintf("%d checks in phase %s", n, name), func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.counts[name] >= n
	})
}

// finish stops the load and fails the test with the recorded failures.
func (l *load) finish(t *testing.T) map[string]int {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.failures {
		t.Error(f)
	}
	t.Logf("checks answered per phase: %v (total %d)", l.counts, l.total.Load())
	return l.counts
}

// startDaemon runs the daemon on cfgYAML (and the extra files), quiet and without watching its
// config file, with the agent's clock now (nil: time.Now).
func startDaemon(t *testing.T, cfgYAML string, files map[string]string, now func() time.Time) *daemontest.Env {
	t.Helper()
	t.Setenv("VAULT_TOKEN", "")
	return daemontest.Start(t, cfgYAML, daemontest.Options{Files: files,
		Daemon: daemon.Options{Logger: slog.New(slog.DiscardHandler), ConfigPoll: -1, Now: now}})
}

package faulttest

import (
	"context"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/hashicorp/vault/api"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/vault/vaulttest"
)

// vaultFixture is a real Vault dev server, seeded, with a fault-injecting proxy in front and a
// daemon reading its keys through the proxy.
type vaultFixture struct {
	v     *vaulttest.Server
	proxy *Proxy
	a     *daemontest.Env
	ahead atomic.Int64 // how far the agent's clock runs ahead of the real one
}

// now is the agent's clock: the real one, moved ahead by skip.
func (f *vaultFixture) now() time.Time { return time.Now().Add(time.Duration(f.ahead.Load())) }

// skip moves the agent's clock ahead by d, so cached records age without the test waiting.
func (f *vaultFixture) skip(d time.Duration) { f.ahead.Add(int64(d)) }

func newVaultFixture(t *testing.T, refresh, timeout time.Duration, vaultToken string) *vaultFixture {
	t.Helper()
	v := vaulttest.Start(t)
	seedVault(t, v)
	p, err := NewProxy(strings.TrimPrefix(v.Addr, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	if vaultToken == "" {
		vaultToken = v.Token
	}
	f := &vaultFixture{v: v, proxy: p}
	f.a = startDaemon(t, vaultConfig(p.URL(), refresh, timeout), map[string]string{"vault-token": vaultToken}, f.now)
	daemontest.Eventually(t, "ready after the Vault login", func() bool { return f.a.D.Ready().Ready })
	return f
}

// cachedChecks alternates the checks whose keys the fixture's tests warm up before a fault:
// the Auth Token key and server keys k1 and k2.
func cachedChecks(_, i int) *authv3.CheckRequest {
	switch i % 3 {
	case 0:
		return authTokenCheck("7")
	case 1:
		return serverCheck("k1", "42")
	}
	return serverCheck("k2", "=bot")
}

// mustAllow is the judge of cached-key checks: every one is allowed, whatever the fault.
func mustAllow(_ string, r result) string {
	if !r.ok() {
		return "a valid token with a cached key was refused: " + r.String()
	}
	return ""
}

func (f *vaultFixture) warm(t *testing.T) {
	t.Helper()
	for i := 0; i < 3; i++ {
		if r := check(context.Background(), f.a.Client, cachedChecks(0, i)); !r.ok() {
			t.Fatalf("warming check %d: %v", i, r)
		}
	}
}

// requireUnavailable checks that an unseen key is refused 503 keys_unavailable with Retry-After
// (SPEC §6).
func requireUnavailable(t *testing.T, r result, what string) {
	t.Helper()
	if r.code != codes.Unavailable || r.reason != "keys_unavailable" ||
		r.resp.GetDeniedResponse().GetStatus().GetCode() != 503 || daemontest.DeniedHeader(r.resp, "retry-after") == "" {
		t.Fatalf("%s: %v, want 503 keys_unavailable with Retry-After", what, r)
	}
}

// TestVaultKilledAndRestarted stops the Vault server under load and brings it back (empty,
// then seeded again, as a restarted dev server must be). Checks with cached keys are allowed
// throughout — including after their refresh interval passed while Vault was down (served
// stale, SPEC §6) —; a key never seen is 503 keys_unavailable while Vault is down; and once
// Vault answers again the unseen key verifies, with no restart of the agent.
func TestVaultKilledAndRestarted(t *testing.T) {
	const refresh = 300 * time.Millisecond
	f := newVaultFixture(t, refresh, time.Second, "")
	f.warm(t)
	l := startLoad(t, f.a.Client, 4, cachedChecks, mustAllow)
	l.setPhase(t, "vault up", 300)

	f.v.Stop()
	staleBefore := f.a.Counter(t, "tokenagent_key_cache_stale_total", nil)
	l.setPhase(t, "vault down", 300)
	for i := 0; i < 5; i++ {
		requireUnavailable(t, check(context.Background(), f.a.Client, serverCheck("k3", "1")), "unseen key while Vault is down")
	}
	// Outlast the refresh interval, so cached records are past it and serve stale.
	daemontest.Eventually(t, "cached records served stale", func() bool {
		return f.a.Counter(t, "tokenagent_key_cache_stale_total", nil) > staleBefore
	})
	l.waitPhase(t, "vault down", 600)

	// A dev server restarts empty: keep the agent away from it (connections refused) until it
	// is seeded again, as a real Vault restarting from its storage would be.
	f.proxy.Down()
	l.setPhase(t, "vault restarting", 200)
	f.v.RestartT(t)
	seedVault(t, f.v)
	if err := f.proxy.Up(); err != nil {
		t.Fatal(err)
	}
	l.setPhase(t, "vault back", 100)
	daemontest.Eventually(t, "the unseen key verifies once Vault is back", func() bool {
		return check(context.Background(), f.a.Client, serverCheck("k3", "1")).ok()
	})
	l.waitPhase(t, "vault back", 300)
	counts := l.finish(t)
	if t.Failed() {
		return
	}
	t.Logf("RESULT vault-kill-restart: %d checks with cached keys, 0 refused; unseen key 503 while down, verified after restart", sum(counts))
}

// TestVaultStalled holds every byte between the agent and Vault (a hung Vault, a network
// black hole) while checks run. Checks with cached keys — past their refresh interval, so the
// agent does try to read them again — are answered while the stall is held and before the
// agent gives up on its stalled read: they never wait for Vault. A key never seen fails closed
// (503 keys_unavailable) on the agent's own read timeout, with the stall still held. Then
// Vault is slowed instead (every chunk delayed): everything is answered, unseen keys too.
func TestVaultStalled(t *testing.T) {
	const refresh = 300 * time.Millisecond
	// The agent gives up on a Vault request after 3 s: the cached-key checks below must all be
	// answered before that, which they are only if none waits for the stalled read.
	f := newVaultFixture(t, refresh, 3*time.Second, "")
	f.warm(t)
	f.skip(refresh) // the warmed records are now due for a read

	f.proxy.Stall()
	l := startLoad(t, f.a.Client, 4, cachedChecks, mustAllow)
	<-f.proxy.Holding() // the agent's read of a past-refresh record is held in the proxy
	l.setPhase(t, "vault stalled", 200)
	if n := f.proxy.Abandoned(); n != 0 {
		t.Fatalf("cached-key checks were answered only after the agent abandoned %d stalled Vault reads: they waited for Vault", n)
	}
	// An unseen key: refused by the agent's own timeout while the stall is still held.
	r := check(context.Background(), f.a.Client, serverCheck("k4", "1"))
	requireUnavailable(t, r, "unseen key while Vault is stalled")
	if f.proxy.Abandoned() == 0 {
		t.Fatal("the unseen key was answered without the agent giving up on its stalled read")
	}
	l.waitPhase(t, "vault stalled", 400)

	// Slowed, not stalled: every chunk is late, every read still succeeds.
	f.proxy.Slow(50 * time.Millisecond)
	f.proxy.Release()
	l.setPhase(t, "vault slow", 200)
	daemontest.Eventually(t, "an unseen key verifies through a slow Vault", func() bool {
		return check(context.Background(), f.a.Client, serverCheck("k5", "1")).ok()
	})
	f.proxy.Slow(0)
	l.setPhase(t, "vault normal", 200)
	counts := l.finish(t)
	if t.Failed() {
		return
	}
	t.Logf("RESULT vault-stall: %d checks with cached keys, 0 refused, none waited for the stalled Vault; unseen key 503 on the read timeout; %d stalled reads abandoned by the agent",
		sum(counts), f.proxy.Abandoned())
}

// TestVaultRefusesToken revokes the agent's Vault token under load, so every read answers 403
// (as with a token that lost its policy). Cached keys keep serving, an unseen key is 503
// keys_unavailable, /readyz stays 200 (the agent still decides) but warns that the key source
// fails; when a valid token is put in the token file, the agent logs in again on its own and
// the unseen key verifies.
func TestVaultRefusesToken(t *testing.T) {
	const refresh = 300 * time.Millisecond
	v := vaulttest.Start(t)
	seedVault(t, v)
	ctx := context.Background()
	policy := `
path "secret/data/tokenagent/*"     { capabilities = ["read", "list"] }
path "secret/metadata/tokenagent/*" { capabilities = ["read", "list"] }
`
	if err := v.Client.Sys().PutPolicyWithContext(ctx, "tokenagent", policy); err != nil {
		t.Fatal(err)
	}
	newToken := func() string {
		sec, err := v.Client.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{Policies: []string{"tokenagent"}, TTL: "1h"})
		if err != nil {
			t.Fatal(err)
		}
		return sec.Auth.ClientToken
	}
	first := newToken()
	p, err := NewProxy(strings.TrimPrefix(v.Addr, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	a := startDaemon(t, vaultConfig(p.URL(), refresh, time.Second), map[string]string{"vault-token": first}, nil)
	daemontest.Eventually(t, "ready after the Vault login", func() bool { return a.D.Ready().Ready })
	f := &vaultFixture{v: v, proxy: p, a: a}
	f.warm(t)
	l := startLoad(t, a.Client, 4, cachedChecks, mustAllow)
	l.setPhase(t, "token valid", 300)

	if err := v.Client.Auth().Token().RevokeTreeWithContext(ctx, first); err != nil {
		t.Fatal(err)
	}
	failedBefore := a.Counter(t, "tokenagent_vault_requests_total", nil)
	l.setPhase(t, "token revoked", 300)
	daemontest.Eventually(t, "an unseen key refused 503 keys_unavailable", func() bool {
		r := check(ctx, a.Client, serverCheck("k6", "1"))
		return r.code == codes.Unavailable && r.reason == "keys_unavailable"
	})
	daemontest.Eventually(t, "/readyz warns that the key source fails", func() bool {
		code, body := a.Readyz(t)
		if code != 200 {
			t.Fatalf("/readyz %d during the 403s: cached keys still serve, so the agent stays ready: %+v", code, body)
		}
		return strings.Contains(strings.Join(body.Warnings, "\n"), "key source")
	})
	if a.Counter(t, "tokenagent_vault_requests_total", nil) <= failedBefore {
		t.Fatal("no Vault request was made while the token was revoked")
	}
	l.waitPhase(t, "token revoked", 600)

	daemontest.WriteFile(t, filepath.Join(a.Dir, "vault-token"), newToken())
	l.setPhase(t, "new token", 100)
	daemontest.Eventually(t, "the unseen key verifies after the agent logs in with the new token", func() bool {
		return check(ctx, a.Client, serverCheck("k6", "1")).ok()
	})
	daemontest.Eventually(t, "/readyz warning cleared", func() bool {
		_, body := a.Readyz(t)
		return !strings.Contains(strings.Join(body.Warnings, "\n"), "key source")
	})
	l.waitPhase(t, "new token", 300)
	counts := l.finish(t)
	if t.Failed() {
		return
	}
	t.Logf("RESULT vault-403: %d checks with cached keys, 0 refused; unseen key 503 while revoked; /readyz 200 with a warning; recovered on a new token",
		sum(counts))
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

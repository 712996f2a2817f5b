package kv

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/tokenagent/tokenagent/vault"
)

// childToken creates a token (a child of root, so with root's policy) with the given TTLs.
func childToken(t *testing.T, ttl, maxTTL string) (string, time.Time) {
	t.Helper()
	renewable := true
	sec, err := srv.Client.Auth().Token().Create(&api.TokenCreateRequest{TTL: ttl, ExplicitMaxTTL: maxTTL, Renewable: &renewable})
	if err != nil {
		t.Fatal(err)
	}
	return sec.Auth.ClientToken, time.Now()
}

// readsUntil reads the record at p through src until the deadline; every read must succeed.
func readsUntil(t *testing.T, src *Source, p string, until time.Time) {
	t.Helper()
	for time.Now().Before(until) {
		if _, err := src.Read(context.Background(), p); err != nil {
			t.Fatalf("read during the token's life: %v", err)
		}
		time.Sleep(250 * time.Millisecond) // pacing: a read every 250 ms over the token's real TTL in Vault
	}
}

// TestTokenRenewal: a renewable token with a 3 s TTL keeps the source working well past its
// original TTL, because the source renews it.
func TestTokenRenewal(t *testing.T) {
	t.Parallel()
	f := newFixture(t, srv)
	p := vault.SitePath("docs", "server-tokens", "k1")
	f.put(p, map[string]any{"secret": "s"})
	tok, created := childToken(t, "3s", "")
	src := f.newSource(Options{Auth: Auth{Method: AuthToken, TokenFile: writeFile(t, "short-token", tok)}})

	readsUntil(t, src, p, created.Add(7*time.Second)) // more than twice the original TTL
	if _, err := srv.Client.Auth().Token().Lookup(tok); err != nil {
		t.Fatalf("the short token is gone after its original TTL: %v", err)
	}
	if n := f.counter("tokenagent_vault_requests_total", map[string]string{"operation": "renew", "outcome": "ok"}); n < 1 {
		t.Errorf("renewals counted %v, want at least 1", n)
	}
	if f.counter("tokenagent_vault_auth_state", map[string]string{"state": "renewing"}) != 1 {
		t.Error("auth state is not renewing")
	}
}

// TestLoginAgainWhenRenewalEnds: a token that reaches its max TTL cannot be renewed further; the
// source then logs in again (for the token method: reads the token file again) and works after
// the old token is dead. (How seamless the hand-over is depends on the lifetime watcher's timing
// and on the machine's load, so only the outcome is asserted.)
func TestLoginAgainWhenRenewalEnds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, srv)
	p := vault.SitePath("docs", "server-tokens", "k1")
	f.put(p, map[string]any{"secret": "s"})
	old, _ := childToken(t, "2s", "4s")
	tokenFile := writeFile(t, "token", old)
	src := f.newSource(Options{Auth: Auth{Method: AuthToken, TokenFile: tokenFile}})
	next, _ := childToken(t, "1h", "")
	if err := os.WriteFile(tokenFile, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the old token dies", func() error {
		if _, err := srv.Client.Auth().Token().Lookup(old); err == nil {
			return errors.New("still alive")
		}
		return nil
	})
	eventually(t, "reads work after the old token died", func() error {
		_, err := src.Read(ctx, p)
		return err
	})
	if n := f.counter("tokenagent_vault_requests_total", map[string]string{"operation": "login", "outcome": "ok"}); n < 3 {
		// the fixture's own source, then this source twice
		t.Errorf("logins counted %v, want the source to log in again", n)
	}
}

// TestLoginAgainWhenTokenRevoked: a token revoked under the agent makes reads fail with 403; the
// source checks its token, finds it dead, and logs in again.
func TestLoginAgainWhenTokenRevoked(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, srv)
	p := vault.SitePath("docs", "server-tokens", "k1")
	f.put(p, map[string]any{"secret": "s"})
	first, _ := childToken(t, "1h", "")
	tokenFile := writeFile(t, "token", first)
	src := f.newSource(Options{Auth: Auth{Method: AuthToken, TokenFile: tokenFile}})
	if _, err := src.Read(ctx, p); err != nil {
		t.Fatal(err)
	}
	second, _ := childToken(t, "1h", "")
	if err := os.WriteFile(tokenFile, []byte(second), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := srv.Client.Auth().Token().RevokeTree(first); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Read(ctx, p); statusOf(err) != 403 {
		t.Fatalf("read with the revoked token = %v, want a 403", err)
	}
	eventually(t, "reads work again with the new token", func() error {
		_, err := src.Read(ctx, p)
		return err
	})
	if n := f.counter("tokenagent_vault_requests_total", map[string]string{"operation": "read", "outcome": "denied"}); n < 1 {
		t.Errorf("denied reads counted %v", n)
	}
}

package kv

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
)

func docsSite() *token.SiteSettings {
	return &token.SiteSettings{ID: "docs", Hosts: []string{"docs.example.com"},
		AuthTokenTTL: token.DefaultAuthTokenTTL, AuthTokenRotationGrace: token.DefaultAuthTokenTTL,
		ServerTokenWindow: token.DefaultServerTokenWindow}
}

func reasonOf(err error) string {
	if err == nil {
		return "ok"
	}
	var re *reason.Error
	if errors.As(err, &re) {
		return string(re.Reason)
	}
	return "error: " + err.Error()
}

func keyOf(t testing.TB, b64 string) *vault.Secret {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	return vault.NewSecret(b)
}

// TestVerifiersOverVault verifies minted Server API Tokens and Auth Tokens with the token
// verifiers, keys read from Vault through the Store.
func TestVerifiersOverVault(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, srv)
	f.put(vault.SitePath("docs", "authtoken"), map[string]any{"key": genKey(1)})
	f.put(vault.SitePath("docs", "server-tokens", "k1"), map[string]any{"secret": "k1-secret"})
	f.put(vault.SitePath("docs", "server-tokens", "k2"), map[string]any{"secret": "k2-secret", "restricted_user": "7"})
	f.put(vault.SitePath("docs", "server-tokens", "k3"), map[string]any{"secret": "k3-secret", "disabled": "true"})
	st := f.store(f.src, vault.StoreOptions{Refresh: 200 * time.Millisecond})
	site := docsSite()
	sv := &token.ServerTokenVerifier{Keys: st}
	av := &token.AuthTokenVerifier{Keys: st}
	now := time.Now()
	secret := func(s string) *vault.Secret { return vault.NewSecret([]byte(s)) }

	cases := []struct {
		name string
		tok  string
		auth bool // an Auth Token (else a Server API Token)
		want string
		user string
	}{
		{"server token", token.MintServerToken("k1", secret("k1-secret"), "42", now), false, "ok", "42"},
		{"server token with a username holding _", token.MintServerToken("k1", secret("k1-secret"), "=jane_doe", now), false, "ok", "=jane_doe"},
		{"restricted key, its user", token.MintServerToken("k2", secret("k2-secret"), "7", now), false, "ok", "7"},
		{"restricted key, another user", token.MintServerToken("k2", secret("k2-secret"), "8", now), false, string(reason.UserRestricted), ""},
		{"disabled key", token.MintServerToken("k3", secret("k3-secret"), "42", now), false, string(reason.RevokedKey), ""},
		{"unknown key", token.MintServerToken("k9", secret("whatever"), "42", now), false, string(reason.UnknownKey), ""},
		{"wrong secret", token.MintServerToken("k1", secret("not-it"), "42", now), false, string(reason.BadSignature), ""},
		{"expired server token", token.MintServerToken("k1", secret("k1-secret"), "42", now.Add(-time.Hour)), false, string(reason.TokenExpired), ""},
		{"auth token", token.MintAuthToken(keyOf(t, genKey(1)), "1001", now), true, "ok", "1001"},
		{"auth token, other key", token.MintAuthToken(keyOf(t, genKey(2)), "1001", now), true, string(reason.BadSignature), ""},
		{"auth token too old", token.MintAuthToken(keyOf(t, genKey(1)), "1001", now.Add(-site.AuthTokenTTL-time.Minute)), true, string(reason.TokenExpired), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var id token.Identity
			var err error
			if c.auth {
				id, err = av.Verify(ctx, site, c.tok)
			} else {
				id, err = sv.Verify(ctx, site, c.tok)
			}
			if got := reasonOf(err); got != c.want {
				t.Fatalf("got %s, want %s", got, c.want)
			}
			if err == nil && id.User != c.user {
				t.Errorf("user %q, want %q", id.User, c.user)
			}
		})
	}
}

// TestKeyRotationUnderLoad writes a new Auth Token key generation while goroutines keep
// verifying tokens signed with the old key and tokens minted with the key the store says is
// current: none may be refused (SPEC §3.1: a token signed before a rotation lives out its life).
func TestKeyRotationUnderLoad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, srv)
	const refresh = 200 * time.Millisecond
	f.put(vault.SitePath("docs", "authtoken"), map[string]any{"key": genKey(1)})
	st := f.store(f.src, vault.StoreOptions{Refresh: refresh})
	site := docsSite()
	av := &token.AuthTokenVerifier{Keys: st}
	oldTok := token.MintAuthToken(keyOf(t, genKey(1)), "1001", time.Now())

	var stop atomic.Bool
	var verified atomic.Int64
	var mu sync.Mutex
	var refused []string
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				tok := oldTok
				if i%2 == 1 { // as the agent mints: with the store's current generation
					keys, err := st.AuthTokenKeys(ctx, site.ID, site.AuthTokenRotationGrace)
					if err != nil {
						mu.Lock()
						refused = append(refused, "current key: "+err.Error())
						mu.Unlock()
						continue
					}
					tok = token.MintAuthToken(keys.Current().Secret, fmt.Sprint(2000+g), time.Now())
				}
				if _, err := av.Verify(ctx, site, tok); err != nil {
					mu.Lock()
					refused = append(refused, reasonOf(err))
					mu.Unlock()
				}
				verified.Add(1)
				time.Sleep(time.Millisecond) // pacing the load, not a wait for an event
			}
		}()
	}

	// Let the load run across two refreshes of the key record (two more Vault requests).
	requests := func() float64 { return f.counter("tokenagent_vault_requests_total", nil) }
	acrossRefreshes := func(what string) {
		t.Helper()
		before, ran := requests(), verified.Load()
		eventually(t, what, func() error {
			if requests() < before+2 || verified.Load() < ran+20 {
				return fmt.Errorf("%v Vault requests, %d verifications so far", requests()-before, verified.Load()-ran)
			}
			return nil
		})
	}
	acrossRefreshes("verifications across two refreshes before the rotation")
	f.put(vault.SitePath("docs", "authtoken"), map[string]any{"key": genKey(2)})
	eventually(t, "the store sees the new generation", func() error {
		keys, err := st.AuthTokenKeys(ctx, site.ID, site.AuthTokenRotationGrace)
		if err != nil {
			return err
		}
		if keys.Current().Version != 2 {
			return fmt.Errorf("current is version %d", keys.Current().Version)
		}
		return nil
	})
	acrossRefreshes("verifications across two refreshes after the rotation")
	stop.Store(true)
	wg.Wait()

	if len(refused) > 0 {
		t.Fatalf("%d of %d verifications refused during the rotation, first: %v", len(refused), verified.Load(), refused[0])
	}
	if verified.Load() < 20 {
		t.Fatalf("only %d verifications ran", verified.Load())
	}
	for _, c := range []struct {
		name string
		tok  string
	}{
		{"old key after the rotation", oldTok},
		{"new key", token.MintAuthToken(keyOf(t, genKey(2)), "1001", time.Now())},
	} {
		if _, err := av.Verify(ctx, site, c.tok); err != nil {
			t.Errorf("%s: %s", c.name, reasonOf(err))
		}
	}
}

package daemon_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/fleet"
	"github.com/tokenagent/tokenagent/agent/fleet/redistest"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
)

// revocationEnv is an agent with a revocation list on a real redis-server, a site "docs" that
// takes every credential kind, and a writer of entries on the same Redis (another agent, the
// CLI).
type revocationEnv struct {
	e       *daemontest.Env
	srv     *redistest.Server
	writer  *fleet.RevocationList
	authKey []byte
	hsKey   []byte
	apiKey  string
}

func startRevocationEnv(t *testing.T, extra string) *revocationEnv {
	t.Helper()
	r := &revocationEnv{srv: redistest.Start(t, redistest.Options{}), authKey: []byte("0123456789abcdef0123456789abcdef"),
		hsKey: []byte("hs256-key-of-at-least-32-bytes!!"), apiKey: "legacy-api-key-0123456789"}
	keys := `
sites:
  docs:
    authtoken:
      - {key: "` + base64.StdEncoding.EncodeToString(r.authKey) + `", created: "2026-01-01T00:00:00Z"}
    server-tokens:
      k1: {secret: "s3cret"}
    browser-tokens:
      pub1: {origins: ["https://app.example.org"]}
    oauth:
      issuer: "https://docs.example.com"
      audience: docs
      jwks: {keys: [{kty: oct, kid: hs, alg: HS256, k: "` + base64.RawURLEncoding.EncodeToString(r.hsKey) + `"}]}
    legacy: {apikey: "` + r.apiKey + `"}
  help:
    server-tokens:
      k1: {secret: "s3cret"}
`
	cfg := fmt.Sprintf(`
keys: {source: file, file: keys.yaml}
revocation: {store: redis, redis: {address: %q}, max_stale: 2s%s}
sites:
  - id: docs
    hosts: [docs.example.com]
    legacy: {impersonation: true, apikey: true}
`, r.srv.Addr, extra)
	r.e = daemontest.Start(t, cfg, daemontest.Options{Files: map[string]string{"keys.yaml": keys},
		Daemon: daemon.Options{Logger: slog.New(slog.DiscardHandler), ConfigPoll: -1}, WaitReady: true})
	w, err := fleet.NewRevocationList(fleet.RevocationOptions{Redis: fleet.RedisOptions{Address: r.srv.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	r.writer = w
	return r
}

func (r *revocationEnv) revoke(t *testing.T, kind, subject string, before time.Time) {
	t.Helper()
	if _, err := r.writer.Revoke(context.Background(), fleet.Revocation{Site: "docs", Kind: kind, Subject: subject,
		Before: before, Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
}

// ask sends one check with headers (and a query) and returns its reason.
func (r *revocationEnv) ask(t *testing.T, path string, h map[string]string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := r.e.Client.Check(ctx, daemontest.CheckRequest("GET", "docs.example.com", path, h))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return daemontest.Reason(resp)
}

func (r *revocationEnv) jwt(t *testing.T, claims map[string]any) string {
	t.Helper()
	c := map[string]any{"iss": "https://docs.example.com", "aud": "docs", "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		c[k] = v
	}
	tok, err := token.MintJWT(jose.JSONWebKey{Key: r.hsKey, KeyID: "hs", Algorithm: "HS256"}, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestRevocationReload: a reload keeps the list, and a site it adds serves with its entries in
// force from its first check (they are read before the new config serves).
func TestRevocationReload(t *testing.T) {
	r := startRevocationEnv(t, "")
	cut := time.Now().Truncate(time.Second)
	before := cut.Add(-time.Second)
	docs := map[string]string{"x-deki-token": token.MintServerToken("k1", vault.NewSecret([]byte("s3cret")), "42", before)}
	r.revoke(t, fleet.RevokeUser, "42", cut)
	daemontest.Eventually(t, "the entry in force", func() bool { return r.ask(t, "/", docs) == "revoked" })
	if _, err := r.writer.Revoke(context.Background(), fleet.Revocation{Site: "help", Kind: fleet.RevokeUser,
		Subject: "7", Before: cut, Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(r.e.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	daemontest.WriteFile(t, r.e.ConfigPath, string(cfg)+"  - id: help\n    hosts: [help.example.com]\n")
	if err := r.e.D.Reload(r.e.ConfigPath); err != nil {
		t.Fatal(err)
	}
	help := map[string]string{"x-deki-token": token.MintServerToken("k1", vault.NewSecret([]byte("s3cret")), "7", before)}
	if got := daemontest.Reason(r.e.Check(t, "GET", "help.example.com", "/", help)); got != "revoked" {
		t.Errorf("the new site's first check: %s, want revoked", got)
	}
	if got := r.ask(t, "/", docs); got != "revoked" {
		t.Errorf("after the reload, the old site's entry: %s, want revoked", got)
	}
	help["x-deki-token"] = token.MintServerToken("k1", vault.NewSecret([]byte("s3cret")), "8", before)
	if got := daemontest.Reason(r.e.Check(t, "GET", "help.example.com", "/", help)); got != "allowed" {
		t.Errorf("another user at the new site: %s, want allowed", got)
	}
}

// TestRevocationEveryKind: every credential kind that names a user is refused with revoked
// when issued before its user's entry and allowed when issued after; a JWT without iat counts as
// issued before; a token is revoked by its hash; an OAuth client is revoked; a JWT cached as
// verified is refused once revoked.
func TestRevocationEveryKind(t *testing.T) {
	r := startRevocationEnv(t, "")
	cut := time.Now().Truncate(time.Second)
	before, after := cut.Add(-30*time.Second), cut.Add(2*time.Second)
	auth := func(user string, at time.Time) string {
		return token.MintAuthToken(vault.NewSecret(r.authKey), user, at)
	}
	server := func(user string, at time.Time) string {
		return token.MintServerToken("k1", vault.NewSecret([]byte("s3cret")), user, at)
	}
	imp := func(user string, at time.Time) string {
		return token.MintImpersonationToken(vault.NewSecret([]byte(r.apiKey)), user, at)
	}
	apikey := "/?apikey=" + url.QueryEscape(r.apiKey)
	type req struct {
		name string
		path string
		h    map[string]string
	}
	cases := func(user string) (old, fresh []req) {
		old = []req{
			{"auth token", "/", map[string]string{"cookie": "authtoken=" + auth(user, before)}},
			{"server token", "/", map[string]string{"x-deki-token": server(user, cut.Add(-time.Second))}},
			{"impersonation token", "/", map[string]string{"x-authtoken": imp(user, cut.Add(-time.Second))}},
			{"JWT with iat", "/", map[string]string{"authorization": "Bearer " + r.jwt(t, map[string]any{"sub": user, "iat": before.Unix()})}},
			{"JWT without iat", "/", map[string]string{"authorization": "Bearer " + r.jwt(t, map[string]any{"sub": user})}},
			{"browser key with an auth token", "/", map[string]string{"x-deki-token": "pub1", "origin": "https://app.example.org",
				"cookie": "authtoken=" + auth(user, before)}},
			{"site API key acting as the user", apikey + "&impersonateuserid=" + user, nil},
		}
		fresh = []req{
			{"auth token", "/", map[string]string{"cookie": "authtoken=" + auth(user, after)}},
			{"JWT with a later iat", "/", map[string]string{"authorization": "Bearer " + r.jwt(t, map[string]any{"sub": user, "iat": after.Unix()})}},
			{"browser key with a later auth token", "/", map[string]string{"x-deki-token": "pub1", "origin": "https://app.example.org",
				"cookie": "authtoken=" + auth(user, after)}},
		}
		return old, fresh
	}
	old, fresh := cases("42")
	for _, c := range old {
		if got := r.ask(t, c.path, c.h); got != "allowed" {
			t.Fatalf("%s before any revocation: %s", c.name, got)
		}
	}
	// The JWT of the first case is now in the verified-token cache.
	cachedJWT := old[3].h

	r.revoke(t, fleet.RevokeUser, "42", cut)
	daemontest.Eventually(t, "the user's entry in force", func() bool { return r.ask(t, "/", old[0].h) == "revoked" })
	for _, c := range old {
		if got := r.ask(t, c.path, c.h); got != "revoked" {
			t.Errorf("%s issued before: %s, want revoked", c.name, got)
		}
	}
	if got := r.ask(t, "/", cachedJWT); got != "revoked" {
		t.Errorf("the cached JWT: %s, want revoked", got)
	}
	// Issued after the entry's before, and other users: untouched.
	for _, c := range fresh {
		if got := r.ask(t, c.path, c.h); got != "allowed" {
			t.Errorf("%s issued after: %s, want allowed", c.name, got)
		}
	}
	otherOld, _ := cases("43")
	for _, c := range otherOld {
		if got := r.ask(t, c.path, c.h); got != "allowed" {
			t.Errorf("another user's %s: %s, want allowed", c.name, got)
		}
	}
	// A token by its hash: only that one.
	leaked := server("=alice", time.Now())
	other := server("=alice", time.Now().Add(time.Second))
	if r.ask(t, "/", map[string]string{"x-deki-token": leaked}) != "allowed" {
		t.Fatal("the token before its revocation")
	}
	r.revoke(t, fleet.RevokeToken, fleet.TokenSubject(leaked), time.Time{})
	daemontest.Eventually(t, "the token's entry in force", func() bool {
		return r.ask(t, "/", map[string]string{"x-deki-token": leaked}) == "revoked"
	})
	if got := r.ask(t, "/", map[string]string{"x-deki-token": other}); got != "allowed" {
		t.Errorf("another token of the same user: %s", got)
	}
	// An OAuth client.
	app := r.jwt(t, map[string]any{"sub": "jane", "client_id": "portal", "iat": before.Unix()})
	appLater := r.jwt(t, map[string]any{"sub": "jane", "client_id": "portal", "iat": after.Unix()})
	otherApp := r.jwt(t, map[string]any{"sub": "jane", "client_id": "intranet", "iat": before.Unix()})
	if r.ask(t, "/", map[string]string{"authorization": "Bearer " + app}) != "allowed" {
		t.Fatal("the client's token before its revocation")
	}
	r.revoke(t, fleet.RevokeClient, "portal", cut)
	daemontest.Eventually(t, "the client's entry in force", func() bool {
		return r.ask(t, "/", map[string]string{"authorization": "Bearer " + app}) == "revoked"
	})
	for name, want := range map[string]string{appLater: "allowed", otherApp: "allowed"} {
		if got := r.ask(t, "/", map[string]string{"authorization": "Bearer " + name}); got != want {
			t.Errorf("client token %s…: %s, want %s", name[:20], got, want)
		}
	}
	// The refusal is 401 with the reason, and counted.
	resp, err := r.e.Client.Check(context.Background(), daemontest.CheckRequest("GET", "docs.example.com", "/", old[0].h))
	if err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 401 {
		t.Fatalf("denial: %v %v", resp, err)
	}
	if m := metricValue(t, r.e, `tokenagent_decisions_total{decision="deny",kind="authtoken",reason="revoked",site="docs"}`); m < 1 {
		t.Errorf("revoked refusals counted %v", m)
	}
	if m := metricValue(t, r.e, `tokenagent_revocations{kind="user",site="docs"}`); m != 1 {
		t.Errorf("tokenagent_revocations{user} = %v", m)
	}
}

// TestRevocationStale: with Redis down the entries in force keep refusing; /readyz warns once
// the list is older than max_stale; with on_stale: deny every credential is refused with 503
// keys_unavailable meanwhile (anonymous requests pass); with Redis back, entries written
// meanwhile are in force.
func TestRevocationStale(t *testing.T) {
	for _, mode := range []string{"serve", "deny"} {
		t.Run(mode, func(t *testing.T) {
			r := startRevocationEnv(t, ", on_stale: "+mode)
			cut := time.Now()
			old := map[string]string{"cookie": "authtoken=" + token.MintAuthToken(vault.NewSecret(r.authKey), "42", cut.Add(-time.Minute))}
			other := map[string]string{"cookie": "authtoken=" + token.MintAuthToken(vault.NewSecret(r.authKey), "43", cut.Add(-time.Minute))}
			r.revoke(t, fleet.RevokeUser, "42", cut)
			daemontest.Eventually(t, "the entry in force", func() bool { return r.ask(t, "/", old) == "revoked" })

			r.srv.Kill()
			daemontest.Eventually(t, "/readyz warns of a stale list", func() bool {
				for _, w := range r.e.D.Ready().Warnings {
					if strings.Contains(w, "revocation list") && strings.Contains(w, "max_stale") {
						return true
					}
				}
				return false
			})
			wantOther := "allowed"
			if mode == "deny" {
				wantOther = "keys_unavailable"
			}
			if got := r.ask(t, "/", other); got != wantOther {
				t.Errorf("another user while stale: %s, want %s", got, wantOther)
			}
			wantOld := "revoked"
			if mode == "deny" {
				wantOld = "keys_unavailable"
			}
			if got := r.ask(t, "/", old); got != wantOld {
				t.Errorf("the revoked user while stale: %s, want %s", got, wantOld)
			}
			if got := r.ask(t, "/", nil); got != "allowed" {
				t.Errorf("anonymous while stale: %s", got)
			}

			r.srv.Restart(t)
			daemontest.Eventually(t, "a write after the restart", func() bool {
				_, err := r.writer.Revoke(context.Background(), fleet.Revocation{Site: "docs", Kind: fleet.RevokeUser,
					Subject: "43", Before: cut, Expires: time.Now().Add(time.Hour)})
				return err == nil
			})
			daemontest.Eventually(t, "the entry written while the agent was away in force", func() bool {
				return r.ask(t, "/", other) == "revoked"
			})
			if got := r.ask(t, "/", old); got != "revoked" {
				t.Errorf("the first entry after the outage: %s", got)
			}
		})
	}
}

// metricValue reads one sample of the daemon's /metrics, by its exposition line.
func metricValue(t *testing.T, e *daemontest.Env, series string) float64 {
	t.Helper()
	resp, err := e.HTTPClient.Get(e.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	for _, line := range strings.Split(b.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return -1
}

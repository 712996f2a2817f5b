package kv

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/vault"
)

// TestOptionsErrorsNameTheField: a bad option is an error from New that names the config field.
func TestOptionsErrorsNameTheField(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"unknown method", Options{Auth: Auth{Method: "ldap"}}, "keys.vault.auth.method"},
		{"approle without role id", Options{Auth: Auth{Method: AuthAppRole, SecretIDFile: "/x"}}, "keys.vault.auth.role_id"},
		{"approle without secret id file", Options{Auth: Auth{Method: AuthAppRole, RoleID: "r"}}, "keys.vault.auth.secret_id_file"},
		{"kubernetes without role", Options{Auth: Auth{Method: AuthKubernetes}}, "keys.vault.auth.role"},
		{"address not http", Options{Address: "ftp://vault.example.com"}, "keys.vault.address"},
		{"address not a URL", Options{Address: "::vault"}, "keys.vault.address"},
		{"mount with a dot segment", Options{Mount: "secret/../sys"}, "keys.vault.mount"},
		{"prefix with a query", Options{Prefix: "tokenagent?x=1"}, "keys.vault.prefix"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src, err := New(c.opts)
			if err == nil {
				src.Close()
				t.Fatalf("New accepted %+v", c.opts)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not name %s", err, c.want)
			}
		})
	}
}

// TestNotReadyWhileVaultIsDown: New does not wait for Vault; Ready names the method and the
// cause and never the token; reads fail with an error (keys unavailable), not ErrNotFound.
func TestNotReadyWhileVaultIsDown(t *testing.T) {
	t.Parallel()
	const secretToken = "hvs.this-token-must-never-be-printed"
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	src, err := New(Options{Address: "http://127.0.0.1:1", Metrics: m, Logger: quietLogger(),
		Auth:       Auth{Method: AuthToken, TokenFile: writeFile(t, "token", secretToken)},
		minBackoff: 10 * time.Millisecond, maxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	src.Start(context.Background())
	defer src.Close()
	f := &fixture{t: t, reg: reg}
	eventually(t, "a failed login", func() error {
		if f.counter("tokenagent_vault_login_failures_total", map[string]string{"method": "token"}) < 1 {
			return errors.New("no failure yet")
		}
		return nil
	})
	err = src.Ready()
	if err == nil {
		t.Fatal("Ready = nil with Vault down")
	}
	if msg := err.Error(); !strings.Contains(msg, "token") || !strings.Contains(msg, "connection refused") || strings.Contains(msg, secretToken) {
		t.Errorf("Ready = %q; want the method and the cause, without the token", msg)
	}
	// The source goes back and forth between the two; a scrape during a move may see both.
	if f.counter("tokenagent_vault_auth_state", map[string]string{"state": "backoff"})+
		f.counter("tokenagent_vault_auth_state", map[string]string{"state": "logging_in"}) < 1 {
		t.Error("auth state is neither backoff nor logging_in")
	}
	if _, err := src.Read(context.Background(), "sites/docs/legacy"); err == nil || errors.Is(err, vault.ErrNotFound) {
		t.Errorf("Read with Vault down = %v, want a source error", err)
	}
	st, err := vault.NewStore(src, vault.StoreOptions{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Legacy(context.Background(), "docs"); !isKeysUnavailable(err) {
		t.Errorf("store lookup with Vault down = %v, want keys_unavailable", err)
	}
}

// TestEnvironmentFallbacks: VAULT_ADDR and VAULT_TOKEN stand in for empty options.
func TestEnvironmentFallbacks(t *testing.T) {
	t.Setenv("VAULT_ADDR", srv.Addr)
	t.Setenv("VAULT_TOKEN", srv.Token)
	t.Setenv("VAULT_NAMESPACE", "")
	f := &fixture{t: t, srv: srv, prefix: testPrefix(t), reg: prometheus.NewRegistry()}
	f.put(vault.SitePath("docs", "legacy"), map[string]any{"apikey": "k"})
	src, err := New(Options{Prefix: f.prefix, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	src.Start(context.Background())
	defer src.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := src.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if raw, err := src.Read(ctx, vault.SitePath("docs", "legacy")); err != nil || raw.Data["apikey"] != "k" {
		t.Fatalf("read = %+v, %v", raw, err)
	}
}

// TestPaths: names that cannot be records never reach Vault (reads: not found), a missing
// folder lists empty, and a bad write path is an error naming the path.
func TestPaths(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, srv)
	f.put(vault.SitePath("other", "legacy"), map[string]any{"apikey": "other-site"})
	f.put(vault.SitePath("docs", "browser-tokens", "a"), map[string]any{"origins": []any{"x"}})
	f.put(vault.SitePath("docs", "browser-tokens", "a", "nested"), map[string]any{"origins": []any{"y"}})
	f.put(vault.SitePath("docs", "browser-tokens", "b"), map[string]any{"origins": []any{"z"}})
	before := f.counter("tokenagent_vault_requests_total", nil)
	for _, p := range []string{
		"sites/docs/server-tokens/../../other/legacy",
		"sites/docs/server-tokens/./k",
		"sites/docs/server-tokens/k?version=1",
		"sites/docs/server-tokens/k%2F..",
		"sites/docs/server-tokens/k#x",
		"sites/docs/server-tokens/k\\..",
		"sites/docs/server-tokens/k\n",
		"sites/docs//legacy",
		"/sites/docs/legacy",
		"",
	} {
		if _, err := f.src.Read(ctx, p); !isNotFound(err) {
			t.Errorf("Read(%q) = %v, want ErrNotFound", p, err)
		}
		if _, err := f.src.Versions(ctx, p, time.Time{}); !isNotFound(err) {
			t.Errorf("Versions(%q) = %v, want ErrNotFound", p, err)
		}
		if err := f.src.WriteCAS(ctx, p, map[string]any{"a": "b"}, 0); err == nil || !strings.Contains(err.Error(), "path") {
			t.Errorf("WriteCAS(%q) = %v, want an error naming the path", p, err)
		}
	}
	if after := f.counter("tokenagent_vault_requests_total", nil); after != before {
		t.Errorf("%v requests reached Vault for impossible paths", after-before)
	}

	lists := []struct {
		dir  string
		want string
	}{
		{vault.SitePath("docs", "browser-tokens"), "a,b"},
		{vault.SitePath("docs", "browser-tokens") + "/", "a,b"},
		{vault.SitePath("docs", "nothing-here"), ""},
		{vault.SitePath("nosite", "issuers"), ""},
	}
	for _, c := range lists {
		names, err := f.src.List(ctx, c.dir)
		if err != nil || strings.Join(names, ",") != c.want {
			t.Errorf("List(%q) = %q, %v; want %q", c.dir, names, err, c.want)
		}
	}
}

// TestNewStartsNothing: New only checks and builds; the login waits for Start. A source never
// started is not ready however long Vault is up, and Close returns at once; Start after Close
// starts nothing.
func TestNewStartsNothing(t *testing.T) {
	src, err := New(Options{Address: srv.Addr, Prefix: testPrefix(t), Logger: quietLogger(),
		Auth: Auth{Method: AuthToken, TokenFile: writeFile(t, "token", srv.Token)}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := src.WaitReady(ctx); err == nil || !strings.Contains(err.Error(), "Start") {
		t.Fatalf("a source never started: WaitReady = %v, want not ready (Start not called)", err)
	}
	src.Close()
	src.Start(context.Background())
	if err := src.Ready(); err == nil {
		t.Fatal("Start after Close logged in")
	}
}

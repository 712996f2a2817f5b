package kv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/tokenagent/tokenagent/vault"
)

// policyFile is the least-privilege policy shipped with the example setup.
const policyFile = "../../examples/vault/tokenagent-policy.hcl"

var approleOnce sync.Once

// approleOnShared enables AppRole on the shared server once and returns a fresh role id and
// secret id for a role with the example policy.
func approleOnShared(t *testing.T, role string) (roleID, secretID string) {
	t.Helper()
	c := srv.Client
	var setupErr error
	approleOnce.Do(func() {
		setupErr = c.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"})
		if setupErr != nil {
			return
		}
		policy, err := os.ReadFile(policyFile)
		if err != nil {
			setupErr = err
			return
		}
		setupErr = c.Sys().PutPolicy("tokenagent", string(policy))
	})
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	if _, err := c.Logical().Write("auth/approle/role/"+role, map[string]any{
		"token_policies": "tokenagent", "token_ttl": "1h", "token_max_ttl": "4h",
	}); err != nil {
		t.Fatal(err)
	}
	r, err := c.Logical().Read("auth/approle/role/" + role + "/role-id")
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Logical().Write("auth/approle/role/"+role+"/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	return r.Data["role_id"].(string), s.Data["secret_id"].(string)
}

func statusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.StatusCode
	}
	return 0
}

// TestAppRoleLeastPrivilege logs in with AppRole under the example policy: the agent reads and
// lists its own prefix, cannot read anything else (403), and writes only the user directory.
func TestAppRoleLeastPrivilege(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := bareFixture(t, srv, "tokenagent") // the policy's prefix
	site := "approle-" + fmt.Sprint(time.Now().UnixNano())
	f.put(vault.SitePath(site, "server-tokens", "k1"), map[string]any{"secret": "s"})
	f.put(vault.SitePath(site, "authtoken"), map[string]any{"key": genKey(1)})
	f.put(vault.SitePath(site, "authtoken"), map[string]any{"key": genKey(2)})
	if _, err := srv.Client.KVv2("secret").Put(ctx, "elsewhere/secret", map[string]any{"a": "b"}); err != nil {
		t.Fatal(err)
	}

	roleID, secretID := approleOnShared(t, "tokenagent-test")
	auth := Auth{Method: AuthAppRole, RoleIDFile: writeFile(t, "role-id", roleID+"\n"), SecretIDFile: writeFile(t, "secret-id", secretID)}
	src := f.newSource(Options{Auth: auth})
	outside := f.newSource(Options{Auth: auth, Prefix: "elsewhere"})

	cases := []struct {
		name string
		do   func() error
		want string // "ok", "not_found", "403", "cas"
	}{
		{"read own record", func() error { _, err := src.Read(ctx, vault.SitePath(site, "server-tokens", "k1")); return err }, "ok"},
		{"read missing own record", func() error { _, err := src.Read(ctx, vault.SitePath(site, "legacy")); return err }, "not_found"},
		{"versions of own record", func() error {
			raws, err := src.Versions(ctx, vault.SitePath(site, "authtoken"), time.Time{})
			if err == nil && len(raws) != 2 {
				return fmt.Errorf("%d versions", len(raws))
			}
			return err
		}, "ok"},
		{"list own folder", func() error {
			names, err := src.List(ctx, vault.SitePath(site, "server-tokens"))
			if err == nil && strings.Join(names, ",") != "k1" {
				return fmt.Errorf("names %v", names)
			}
			return err
		}, "ok"},
		{"read outside the prefix", func() error { _, err := outside.Read(ctx, "secret"); return err }, "403"},
		{"list outside the prefix", func() error { _, err := outside.List(ctx, "sites"); return err }, "403"},
		{"write a user", func() error {
			return src.WriteCAS(ctx, vault.SitePath(site, "users", "by-sub", "corp", "alice"), map[string]any{"id": "1001"}, 0)
		}, "ok"},
		{"update a user", func() error {
			return src.WriteCAS(ctx, vault.SitePath(site, "users", "by-sub", "corp", "alice"), map[string]any{"id": "1001", "name": "Alice"}, 1)
		}, "ok"},
		{"stale user write", func() error {
			return src.WriteCAS(ctx, vault.SitePath(site, "users", "by-sub", "corp", "alice"), map[string]any{"id": "1002"}, 1)
		}, "cas"},
		{"write a server key", func() error {
			return src.WriteCAS(ctx, vault.SitePath(site, "server-tokens", "evil"), map[string]any{"secret": "x"}, 0)
		}, "403"},
		{"overwrite the auth token key", func() error {
			return src.WriteCAS(ctx, vault.SitePath(site, "authtoken"), map[string]any{"key": genKey(9)}, 2)
		}, "403"},
		{"write outside the prefix", func() error { return outside.WriteCAS(ctx, "sites/x/users/u", map[string]any{"a": "b"}, 0) }, "403"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.do()
			var got string
			switch {
			case err == nil:
				got = "ok"
			case isNotFound(err):
				got = "not_found"
			case errors.Is(err, vault.ErrCASMismatch):
				got = "cas"
			case statusOf(err) == 403:
				got = "403"
			default:
				got = "error: " + err.Error()
			}
			if got != c.want {
				t.Errorf("got %s, want %s (err %v)", got, c.want, err)
			}
		})
	}
	if n := f.counter("tokenagent_vault_requests_total", map[string]string{"operation": "read", "outcome": "denied"}); n < 1 {
		t.Errorf("denied reads counted %v, want at least 1", n)
	}
}

// TestLoginFailureIsReportedWithoutSecrets: a bad secret id keeps the source unready; Ready names
// the method and the cause, never the secret; failures are counted and retried; a fixed secret
// id file makes the next retry succeed.
func TestLoginFailureIsReportedWithoutSecrets(t *testing.T) {
	t.Parallel()
	roleID, secretID := approleOnShared(t, "tokenagent-retry")
	f := newFixture(t, srv)
	const wrong = "00000000-not-the-secret-id-0000"
	secretFile := writeFile(t, "secret-id", wrong)
	src, err := New(Options{Address: srv.Addr, Prefix: f.prefix, Metrics: f.metrics, Logger: quietLogger(),
		Auth:       Auth{Method: AuthAppRole, RoleID: roleID, SecretIDFile: secretFile},
		minBackoff: 10 * time.Millisecond, maxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	src.Start(context.Background())
	t.Cleanup(src.Close)
	eventually(t, "two failed logins", func() error {
		if n := f.counter("tokenagent_vault_login_failures_total", map[string]string{"method": "approle"}); n < 2 {
			return fmt.Errorf("%v failures", n)
		}
		return nil
	})
	err = src.Ready()
	if err == nil {
		t.Fatal("Ready = nil with a wrong secret id")
	}
	msg := err.Error()
	if !strings.Contains(msg, "approle") || !strings.Contains(msg, "invalid") {
		t.Errorf("Ready = %q, want the method and Vault's cause", msg)
	}
	if strings.Contains(msg, wrong) || strings.Contains(msg, secretID) {
		t.Errorf("Ready leaks the secret id: %q", msg)
	}
	if f.counter("tokenagent_vault_auth_state", map[string]string{"state": "renewing"}) != 0 {
		t.Error("auth state is renewing before any login")
	}

	if err := os.WriteFile(secretFile, []byte(secretID), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := src.WaitReady(ctx); err != nil {
		t.Fatalf("no login after fixing the secret id: %v", err)
	}
	if f.counter("tokenagent_vault_auth_state", map[string]string{"state": "renewing"}) != 1 {
		t.Error("auth state is not renewing after the login")
	}
}

// TestCASRace: two writers with the same cas: exactly one wins, the other gets ErrCASMismatch.
func TestCASRace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, srv)
	cases := []struct {
		name     string
		existing int // versions written before the race
	}{
		{"create (cas 0)", 0},
		{"update (cas 1)", 1},
		{"update (cas 3)", 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for round := 0; round < 5; round++ {
				p := vault.SitePath("docs", "users", "next-id", fmt.Sprintf("%d-%d", c.existing, round))
				for v := 1; v <= c.existing; v++ {
					f.put(p, map[string]any{"next": v})
				}
				start := make(chan struct{})
				errs := make([]error, 2)
				var wg sync.WaitGroup
				for i := range errs {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						errs[i] = f.src.WriteCAS(ctx, p, map[string]any{"writer": i}, c.existing)
					}()
				}
				close(start)
				wg.Wait()
				won, lost := 0, 0
				for _, err := range errs {
					switch {
					case err == nil:
						won++
					case errors.Is(err, vault.ErrCASMismatch):
						lost++
					default:
						t.Fatalf("unexpected error: %v", err)
					}
				}
				if won != 1 || lost != 1 {
					t.Fatalf("round %d: %d won, %d lost (%v)", round, won, lost, errs)
				}
				raw, err := f.src.Read(ctx, p)
				if err != nil || raw.Version != c.existing+1 {
					t.Fatalf("after the race: version %d, %v; want %d", raw.Version, err, c.existing+1)
				}
			}
		})
	}
}

package users_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/kv"
	"github.com/tokenagent/tokenagent/vault/users"
	"github.com/tokenagent/tokenagent/vault/vaulttest"
)

// vaultSource logs in to srv with its root token (from a token file, as an agent would) under
// prefix, and waits until it is ready.
func vaultSource(t *testing.T, srv *vaulttest.Server, prefix string) *kv.Source {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(srv.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := kv.New(kv.Options{Address: srv.Addr, Prefix: prefix,
		Auth: kv.Auth{Method: kv.AuthToken, TokenFile: tokenFile}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	src.Start(context.Background())
	t.Cleanup(src.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := src.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return src
}

// TestVaultDirectory runs the Vault directory against a real Vault dev server: the guarantees
// under two agents and many goroutines, the layout, seeding, a counter set back by hand, and
// a blocked identity.
func TestVaultDirectory(t *testing.T) {
	srv := vaulttest.Start(t)
	ctx := context.Background()

	t.Run("two agents, 50 shared and 50 own identities each", func(t *testing.T) {
		prefix := "concurrent"
		agents := []*users.Vault{
			users.NewVault(vaultSource(t, srv, prefix), users.VaultOptions{}),
			users.NewVault(vaultSource(t, srv, prefix), users.VaultOptions{}),
		}
		var mu sync.Mutex
		got := map[string][]string{}
		var wg sync.WaitGroup
		for i, d := range agents {
			for n := range 50 {
				for _, sub := range []string{fmt.Sprint("shared-", n), fmt.Sprintf("own-%d-%d", i, n)} {
					wg.Go(func() {
						id, err := d.Provision(ctx, "docs", "corp", sub, users.Profile{GivenName: "G", FamilyName: "F"})
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						got[sub] = append(got[sub], id)
						mu.Unlock()
					})
				}
			}
		}
		wg.Wait()
		idOf := checkAssignments(t, got)
		if len(idOf) != 150 {
			t.Fatalf("%d identities, want 150", len(idOf))
		}
		// Vault holds exactly what was handed out.
		kv2 := srv.Client.KVv2("secret")
		for sub, id := range idOf {
			s, err := kv2.Get(ctx, prefix+"/"+users.SubjectPath("docs", "corp", sub))
			if err != nil {
				t.Fatalf("%s: %v", sub, err)
			}
			if s.Data["id"] != id || s.Data["sub"] != sub || s.Data["provider"] != "corp" {
				t.Errorf("%s: by-subject record %v, handed out %s", sub, s.Data, id)
			}
			b, err := kv2.Get(ctx, prefix+"/"+users.IDPath("docs", id))
			if err != nil || b.Data["sub"] != sub {
				t.Errorf("by-id/%s: %v %v, want sub %s", id, b, err, sub)
			}
		}
	})

	t.Run("layout, seeding and a counter set back", func(t *testing.T) {
		prefix := "layout"
		src := vaultSource(t, srv, prefix)
		kv2 := srv.Client.KVv2("secret")
		if _, err := kv2.Put(ctx, prefix+"/"+users.CounterPath("docs"), map[string]any{"next": "42"}); err != nil {
			t.Fatal(err)
		}
		d := users.NewVault(src, users.VaultOptions{Now: func() time.Time { return testNow }})
		if id, created := provision(t, d, "docs", "corp", "alice"); id != "42" || !created {
			t.Errorf("seeded counter: %s %v, want 42 created", id, created)
		}
		if id, created := provision(t, d, "docs", "corp", "alice"); id != "42" || created {
			t.Errorf("alice again: %s %v", id, created)
		}
		s, err := kv2.Get(ctx, prefix+"/"+users.SubjectPath("docs", "corp", "alice"))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range map[string]any{"id": "42", "provider": "corp", "sub": "alice", "given_name": "G alice",
			"family_name": "F", "email": "alice@example.com", "created": "2026-11-21T12:00:00Z"} {
			if s.Data[k] != v {
				t.Errorf("by-subject %s = %v, want %v", k, s.Data[k], v)
			}
		}
		if c, _ := kv2.Get(ctx, prefix+"/"+users.CounterPath("docs")); c.Data["next"] != "43" {
			t.Errorf("counter %v, want next 43", c.Data)
		}
		// Someone sets the counter back: claimed ids are skipped, never handed out twice.
		if _, err := kv2.Put(ctx, prefix+"/"+users.CounterPath("docs"), map[string]any{"next": "42"}); err != nil {
			t.Fatal(err)
		}
		if id, _ := provision(t, d, "docs", "corp", "bob"); id != "43" {
			t.Errorf("after the counter was set back: %s, want 43", id)
		}
		// A fresh site starts at DefaultFirstID.
		if id, _ := provision(t, d, "wiki", "corp", "alice"); id != fmt.Sprint(users.DefaultFirstID) {
			t.Errorf("fresh site: %s", id)
		}
	})

	t.Run("a blocked identity", func(t *testing.T) {
		prefix := "blocked"
		d := users.NewVault(vaultSource(t, srv, prefix), users.VaultOptions{})
		id, _ := provision(t, d, "docs", "corp", "eve")
		kv2 := srv.Client.KVv2("secret")
		if err := kv2.Delete(ctx, prefix+"/"+users.SubjectPath("docs", "corp", "eve")); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Provision(ctx, "docs", "corp", "eve", users.Profile{}); !errors.Is(err, users.ErrBlocked) {
			t.Errorf("a soft-deleted identity: %v, want ErrBlocked", err)
		}
		if err := kv2.DeleteMetadata(ctx, prefix+"/"+users.SubjectPath("docs", "corp", "eve")); err != nil {
			t.Fatal(err)
		}
		if again, created := provision(t, d, "docs", "corp", "eve"); again == id || !created {
			t.Errorf("after its metadata was deleted: %s %v, want a new id (not %s)", again, created, id)
		}
	})

	t.Run("Vault down fails, never invents an id", func(t *testing.T) {
		own := vaulttest.Start(t)
		d := users.NewVault(vaultSource(t, own, "down"), users.VaultOptions{Timeout: 3 * time.Second})
		own.Stop()
		if id, err := d.Provision(ctx, "docs", "corp", "alice", users.Profile{}); err == nil || id != "" {
			t.Errorf("Vault down: %q %v", id, err)
		} else if errors.Is(err, users.ErrBlocked) || !strings.Contains(err.Error(), "users:") {
			t.Errorf("Vault down: %v", err)
		}
	})
}

// stubRW is a ReadWriter that fails every write with err, to check errors are surfaced.
type stubRW struct{ err error }

func (s stubRW) Read(context.Context, string) (vault.Raw, error) {
	return vault.Raw{}, vault.ErrNotFound
}
func (s stubRW) WriteCAS(context.Context, string, map[string]any, int) error {
	return s.err
}

// TestVaultDirectoryGivesUp: a counter that can never be advanced (always a lost race) ends
// in an error after MaxAttempts, not a loop.
func TestVaultDirectoryGivesUp(t *testing.T) {
	d := users.NewVault(stubRW{vault.ErrCASMismatch}, users.VaultOptions{MaxAttempts: 3})
	if _, err := d.Provision(context.Background(), "docs", "corp", "a", users.Profile{}); err == nil || !strings.Contains(err.Error(), "3 attempts") {
		t.Errorf("got %v", err)
	}
}

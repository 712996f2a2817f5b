package vault_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file"
)

// hungStore is a Store over a key file whose source can be made to hang (every read waits for
// src.slow to close), with a short read timeout.
func hungStore(t *testing.T) (*vault.Store, *faultySource, *clock) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keys.yaml")
	if err := os.WriteFile(p, []byte(keysYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	fs, err := file.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	src := &faultySource{Source: fs}
	c := &clock{t: time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)}
	s, err := vault.NewStore(src, vault.StoreOptions{Refresh: 30 * time.Second, MaxStale: time.Hour,
		ReadTimeout: 300 * time.Millisecond, Now: c.now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, src, c
}

// TestStoreStaleWhileSourceHangs is the regression test of a fault-test finding (a stalled
// Vault): a lookup of a cached record past its refresh interval waited for the source's
// answer up to the read timeout (5 s by default), and every lookup after it waited again, so
// while Vault hung, checks of cached keys hung too (past Envoy's 200 ms ext_authz timeout,
// which denies them). Now the lookup waits at most StaleWait and then serves the cached
// record stale; later lookups serve it at once while the read is still running, and start no
// read of their own. A record never seen still waits for the source, up to the read timeout,
// and fails closed.
func TestStoreStaleWhileSourceHangs(t *testing.T) {
	s, src, c := hungStore(t)
	ctx := context.Background()
	if _, err := s.ServerKey(ctx, "docs", "k1"); err != nil {
		t.Fatal(err)
	}
	hang := make(chan struct{})
	src.slow = hang
	c.add(31 * time.Second) // past the refresh interval: the lookup reads the source again
	for i := 0; i < 3; i++ {
		sk, err := s.ServerKey(ctx, "docs", "k1")
		if err != nil || !sk.Secret.Equal("s3cret") {
			t.Fatalf("lookup %d of the cached key while the source hangs: %v", i, err)
		}
	}
	select {
	case <-hang:
		t.Fatal("unreachable")
	default: // the source still hangs: the lookups above did not wait for it
	}
	if n := src.reads.Load(); n != 2 {
		t.Fatalf("%d source reads, want 2 (the warm-up and one refresh shared by every later lookup)", n)
	}
	var ue *vault.UnavailableError
	if _, err := s.ServerKey(ctx, "docs", "never-seen"); !errors.As(err, &ue) {
		t.Fatalf("unseen key while the source hangs: %v, want keys_unavailable after the read timeout", err)
	}
	close(hang)
}

// TestStoreWarnsWhileSourceFails checks the /readyz warning of a failing key source: present
// while reads fail (cached records still serve), gone after the next successful read.
func TestStoreWarnsWhileSourceFails(t *testing.T) {
	s, src, c := hungStore(t)
	ctx := context.Background()
	if _, err := s.ServerKey(ctx, "docs", "k1"); err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(s.Warnings(), "\n"); strings.Contains(w, "key source") {
		t.Fatalf("warning before any failure: %s", w)
	}
	src.down.Store(true)
	c.add(31 * time.Second)
	if _, err := s.ServerKey(ctx, "docs", "k1"); err != nil {
		t.Fatalf("cached key while the source fails: %v", err)
	}
	w := strings.Join(s.Warnings(), "\n")
	if !strings.Contains(w, "key source file: reads failing since") || !strings.Contains(w, "connection refused") {
		t.Fatalf("warnings while the source fails: %q", w)
	}
	src.down.Store(false)
	c.add(31 * time.Second) // past the refresh interval, and past the second a failed source is left alone
	// The next lookups read the source again (or find a background refresh under way); the
	// warning goes once a read has succeeded, however long the busy machine takes to run it.
	waitFor(t, "the warning to clear after recovery", func() bool {
		if _, err := s.ServerKey(ctx, "docs", "k1"); err != nil {
			t.Fatal(err)
		}
		return !strings.Contains(strings.Join(s.Warnings(), "\n"), "key source")
	})
}

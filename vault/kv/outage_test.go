package kv

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/vaulttest"
)

func isKeysUnavailable(err error) bool {
	var ue *vault.UnavailableError
	return errors.As(err, &ue)
}

// TestOutage stops Vault: cached keys keep serving (for max_stale), a key never seen is
// keys_unavailable; once Vault is back (restarted empty, then re-seeded) unseen keys work
// again through the same Store and Source.
func TestOutage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	own := vaulttest.Start(t)
	f := newFixture(t, own)
	const refresh = 200 * time.Millisecond
	seed := func() {
		f.put(vault.SitePath("docs", "server-tokens", "k1"), map[string]any{"secret": "one"})
		f.put(vault.SitePath("docs", "authtoken"), map[string]any{"key": genKey(1)})
	}
	seed()
	clk := &testClock{}
	st := f.store(f.src, vault.StoreOptions{Refresh: refresh, MaxStale: time.Hour, Now: clk.now})
	short := f.store(f.src, vault.StoreOptions{Refresh: refresh, MaxStale: 2 * refresh, Now: clk.now})
	for _, s := range []*vault.Store{st, short} {
		if _, err := s.ServerKey(ctx, "docs", "k1"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AuthTokenKeys(ctx, "docs", time.Hour); err != nil {
			t.Fatal(err)
		}
	}

	own.Stop()
	clk.skip(refresh) // every cached record is now due for a refresh, which fails

	t.Run("cached keys keep serving", func(t *testing.T) {
		for i := 0; i < 3; i++ {
			k, err := st.ServerKey(ctx, "docs", "k1")
			if err != nil || string(k.Secret.Bytes()) != "one" {
				t.Fatalf("cached server key during the outage: %v", err)
			}
			if _, err := st.AuthTokenKeys(ctx, "docs", time.Hour); err != nil {
				t.Fatalf("cached auth token keys during the outage: %v", err)
			}
		}
	})
	t.Run("unseen key is keys_unavailable", func(t *testing.T) {
		_, err := st.ServerKey(ctx, "docs", "k2")
		if !isKeysUnavailable(err) {
			t.Fatalf("unseen key during the outage: %v, want keys_unavailable", err)
		}
		if ue := (*vault.UnavailableError)(nil); !errors.As(err, &ue) || ue.RetryAfter <= 0 {
			t.Errorf("error %v, want an UnavailableError with RetryAfter", err)
		}
	})
	t.Run("past max_stale is keys_unavailable", func(t *testing.T) {
		clk.skip(2 * refresh)
		if _, err := short.ServerKey(ctx, "docs", "k1"); !isKeysUnavailable(err) {
			t.Fatalf("cached key past max_stale: %v, want keys_unavailable", err)
		}
	})
	if err := f.src.Ready(); err != nil {
		t.Errorf("Ready during the outage = %v; the source logged in before and stays ready", err)
	}

	own.RestartT(t)
	seed()
	f.put(vault.SitePath("docs", "server-tokens", "k2"), map[string]any{"secret": "two"})
	eventually(t, "unseen key readable after the restart", func() error {
		k, err := st.ServerKey(ctx, "docs", "k2")
		if err != nil {
			return err
		}
		if string(k.Secret.Bytes()) != "two" {
			return fmt.Errorf("wrong secret")
		}
		return nil
	})
	eventually(t, "key past max_stale readable after the restart", func() error {
		_, err := short.ServerKey(ctx, "docs", "k1")
		return err
	})
}

// TestUnknownKeyFlood: many concurrent lookups of made-up keys read Vault at most once per
// distinct key per negative-entry lifetime (the refresh interval).
func TestUnknownKeyFlood(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, srv)
	f.put(vault.SitePath("docs", "server-tokens", "real"), map[string]any{"secret": "s"})
	counted := newCounting(f.src)
	st := f.store(counted, vault.StoreOptions{Refresh: time.Minute})
	const distinct, perKey = 40, 8
	names := make([]string, distinct)
	for i := range names {
		names[i] = fmt.Sprintf("bogus%016x", rand.Uint64())
	}
	readsBefore := f.counter("tokenagent_vault_requests_total", map[string]string{"operation": "read"})

	for round := 0; round < 3; round++ {
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, distinct*perKey)
		for _, n := range names {
			for j := 0; j < perKey; j++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					if _, err := st.ServerKey(ctx, "docs", n); !isNotFound(err) {
						errs <- fmt.Errorf("%s: %v, want ErrNotFound", n, err)
					}
				}()
			}
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}

	reads, total := counted.snapshot()
	for p, n := range reads {
		if n > 1 {
			t.Errorf("%s read %d times, want at most once", p, n)
		}
	}
	if total > distinct {
		t.Errorf("%d reads for %d distinct unknown keys", total, distinct)
	}
	vaultReads := f.counter("tokenagent_vault_requests_total", map[string]string{"operation": "read"}) - readsBefore
	if int(vaultReads) != total {
		t.Errorf("vault read requests = %v, reads through the source = %d", vaultReads, total)
	}
	if _, err := st.ServerKey(ctx, "docs", "real"); err != nil {
		t.Errorf("a real key after the flood: %v", err)
	}
}

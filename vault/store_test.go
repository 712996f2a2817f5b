package vault_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file"
)

// faultySource wraps the real file source: it counts reads and can be switched to fail, the
// way a key backend that went away does.
type faultySource struct {
	vault.Source
	reads atomic.Int64
	down  atomic.Bool
	slow  chan struct{} // when set, reads wait for it to close
}

var errDown = errors.New("connection refused")

func (f *faultySource) wait() error {
	f.reads.Add(1)
	if f.slow != nil {
		<-f.slow
	}
	if f.down.Load() {
		return errDown
	}
	return nil
}

func (f *faultySource) Read(ctx context.Context, p string) (vault.Raw, error) {
	if err := f.wait(); err != nil {
		return vault.Raw{}, err
	}
	return f.Source.Read(ctx, p)
}

func (f *faultySource) Versions(ctx context.Context, p string, since time.Time) ([]vault.Raw, error) {
	if err := f.wait(); err != nil {
		return nil, err
	}
	return f.Source.Versions(ctx, p, since)
}

func (f *faultySource) List(ctx context.Context, dir string) ([]string, error) {
	if err := f.wait(); err != nil {
		return nil, err
	}
	return f.Source.List(ctx, dir)
}

const keysYAML = `
sites:
  docs:
    authtoken:
      - {key: "ZG9jcy1jdXJyZW50LWF1dGgtdG9rZW4ta2V5LTMyYnk=", created: "2026-11-20T00:00:00Z"}
      - {key: "ZG9jcy1wcmV2aW91cy1hdXRoLXRva2VuLWtleS0zMmI=", created: "2026-11-01T00:00:00Z"}
      - {key: "b2xkZXN0LWF1dGgtdG9rZW4ta2V5LW9mLWRvY3MtMzI=", created: "2026-01-01T00:00:00Z"}
    server-tokens:
      k1: {secret: "s3cret", restricted_user: "=bot", disabled: false}
      broken: {restricted_user: "x"}
    browser-tokens:
      pub1: {origins: ["*.example.com", "https://app.example.org"]}
      bad: {origins: "not, a, list"}
    oauth: {issuer: "https://docs.example.com", audience: "docs", jwks: {keys: []}}
    issuers:
      cxone: {issuer: "https://cxone.example.com", audience: "docs", jwks_uri: "https://cxone.example.com/jwks"}
      plain: {issuer: "https://plain.example.com", audience: "docs", jwks_uri: "http://plain.example.com/jwks"}
    idps:
      corp: {issuer: "https://idp.example.com", client_id: "docs-app", max_age: 300, jwks: {keys: []}}
    legacy: {apikey: "legacy-key"}
`

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newStore(t *testing.T, keys string) (*vault.Store, *faultySource, *clock, string) {
	return newStoreTB(t, keys)
}

func newStoreTB(t testing.TB, keys string) (*vault.Store, *faultySource, *clock, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keys.yaml")
	if err := os.WriteFile(p, []byte(keys), 0o600); err != nil {
		t.Fatal(err)
	}
	fs, err := file.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	src := &faultySource{Source: fs}
	c := &clock{t: time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)}
	s, err := vault.NewStore(src, vault.StoreOptions{Refresh: 30 * time.Second, MaxStale: time.Hour,
		Now: c.now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, src, c, p
}

func TestStoreReadsEveryRecordKind(t *testing.T) {
	s, _, _, _ := newStore(t, keysYAML)
	ctx := context.Background()
	keys, err := s.AuthTokenKeys(ctx, "docs", 7*24*time.Hour)
	if err != nil || len(keys.Generations) != 2 || keys.Current().Version != 3 {
		t.Fatalf("auth token keys = %+v, %v (want the current one and the one replaced within the grace)", keys, err)
	}
	sk, err := s.ServerKey(ctx, "docs", "k1")
	if err != nil || !sk.Secret.Equal("s3cret") || sk.RestrictedUser != "=bot" || sk.Disabled {
		t.Fatalf("server key = %+v, %v", sk, err)
	}
	bk, err := s.BrowserKey(ctx, "docs", "pub1")
	if err != nil || len(bk.Origins) != 2 {
		t.Fatalf("browser key = %+v, %v", bk, err)
	}
	set, err := s.BrowserKeys(ctx, "docs")
	if err != nil || len(set.Keys) != 2 { // "bad" holds a comma-separated string: accepted as a list
		t.Fatalf("browser keys = %+v, %v", set, err)
	}
	iss, err := s.OAuthIssuer(ctx, "docs")
	if err != nil || iss.Issuer != "https://docs.example.com" || iss.Audience != "docs" || len(iss.JWKS) == 0 {
		t.Fatalf("oauth = %+v, %v", iss, err)
	}
	ext, err := s.Issuers(ctx, "docs")
	if err != nil || len(ext) != 1 || ext[0].Name != "cxone" {
		t.Fatalf("issuers = %+v, %v (want the http jwks_uri one left out)", ext, err)
	}
	idps, err := s.IdPs(ctx, "docs")
	if err != nil || len(idps) != 1 || idps[0].MaxAge != 5*time.Minute || idps[0].ClientID != "docs-app" {
		t.Fatalf("idps = %+v, %v", idps, err)
	}
	leg, err := s.Legacy(ctx, "docs")
	if err != nil || !leg.APIKey.Equal("legacy-key") {
		t.Fatalf("legacy = %+v, %v", leg, err)
	}
	if _, err := s.ServerKey(ctx, "docs", "broken"); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("an invalid record: %v, want not found", err)
	}
	w := strings.Join(s.Warnings(), "\n")
	for _, want := range []string{"server-tokens/broken", "secret", "issuers/plain", "https"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings %q do not mention %q", w, want)
		}
	}
}

func TestStoreCachesWithinRefresh(t *testing.T) {
	s, src, c, _ := newStore(t, keysYAML)
	ctx := context.Background()
	for i := 0; i < 100; i++ {
		if _, err := s.ServerKey(ctx, "docs", "k1"); err != nil {
			t.Fatal(err)
		}
	}
	if n := src.reads.Load(); n != 1 {
		t.Fatalf("source reads = %d, want 1", n)
	}
	c.add(31 * time.Second) // past the refresh interval: read again, once
	for i := 0; i < 10; i++ {
		if _, err := s.ServerKey(ctx, "docs", "k1"); err != nil {
			t.Fatal(err)
		}
	}
	if n := src.reads.Load(); n != 2 {
		t.Fatalf("source reads after the refresh interval = %d, want 2", n)
	}
}

func TestStoreChangeTakesEffectWithinRefresh(t *testing.T) {
	s, _, c, p := newStore(t, keysYAML)
	ctx := context.Background()
	if sk, err := s.ServerKey(ctx, "docs", "k1"); err != nil || sk.Disabled {
		t.Fatalf("before: %+v %v", sk, err)
	}
	disabled := strings.Replace(keysYAML, `restricted_user: "=bot", disabled: false`, `restricted_user: "=bot", disabled: true`, 1)
	if err := os.WriteFile(p, []byte(disabled), 0o600); err != nil {
		t.Fatal(err)
	}
	reloadKeyFile(t, s) // the file source would see the change by itself within a second
	c.add(30 * time.Second)
	if sk, err := s.ServerKey(ctx, "docs", "k1"); err != nil || !sk.Disabled {
		t.Fatalf("disabled within the refresh interval: %+v %v", sk, err)
	}
	deleted := strings.Replace(keysYAML, `      k1: {secret: "s3cret", restricted_user: "=bot", disabled: false}`+"\n", "", 1)
	if err := os.WriteFile(p, []byte(deleted), 0o600); err != nil {
		t.Fatal(err)
	}
	reloadKeyFile(t, s)
	c.add(30 * time.Second)
	if _, err := s.ServerKey(ctx, "docs", "k1"); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("deleted within the refresh interval: %v", err)
	}
}

func TestStoreNegativeEntries(t *testing.T) {
	s, src, c, _ := newStore(t, keysYAML)
	ctx := context.Background()
	for i := 0; i < 50; i++ {
		if _, err := s.ServerKey(ctx, "docs", "made-up"); !errors.Is(err, vault.ErrNotFound) {
			t.Fatalf("unknown key: %v", err)
		}
	}
	if n := src.reads.Load(); n != 1 {
		t.Fatalf("reads for one unknown key = %d, want 1", n)
	}
	c.add(31 * time.Second)
	_, _ = s.ServerKey(ctx, "docs", "made-up")
	if n := src.reads.Load(); n != 2 {
		t.Fatalf("the unknown key is remembered past the refresh interval: %d reads", n)
	}
}

func TestStoreSingleflight(t *testing.T) {
	s, src, _, _ := newStore(t, keysYAML)
	src.slow = make(chan struct{})
	var wg sync.WaitGroup
	var started atomic.Int64
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started.Add(1)
			_, err := s.ServerKey(context.Background(), "docs", "k1")
			errs <- err
		}()
	}
	// Hold the first read until every caller has started its lookup. Whether a caller then
	// joins the read or finds its result cached, there must be one read in all.
	waitFor(t, "the first read and every caller", func() bool { return src.reads.Load() >= 1 && started.Load() == 64 })
	close(src.slow)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := src.reads.Load(); n != 1 {
		t.Fatalf("64 concurrent misses made %d reads, want 1", n)
	}
}

func TestStoreOutage(t *testing.T) {
	s, src, c, _ := newStore(t, keysYAML)
	ctx := context.Background()
	if _, err := s.ServerKey(ctx, "docs", "k1"); err != nil {
		t.Fatal(err)
	}
	src.down.Store(true)
	c.add(10 * time.Minute) // well past the refresh interval, inside max_stale
	if sk, err := s.ServerKey(ctx, "docs", "k1"); err != nil || !sk.Secret.Equal("s3cret") {
		t.Fatalf("cached key during the outage: %v", err)
	}
	var ue *vault.UnavailableError
	if _, err := s.ServerKey(ctx, "docs", "never-seen"); !errors.As(err, &ue) || ue.RetryAfter <= 0 {
		t.Fatalf("unseen key during the outage: %v, want UnavailableError with RetryAfter", err)
	}
	c.add(time.Hour) // past max_stale (and past the second the store waits before asking a failed source again)
	if _, err := s.ServerKey(ctx, "docs", "k1"); !errors.As(err, &ue) {
		t.Fatalf("past max_stale: %v, want UnavailableError", err)
	}
	src.down.Store(false)  // recovery needs no restart
	c.add(2 * time.Second) // the store asks a failed source again after a second
	if _, err := s.ServerKey(ctx, "docs", "never-seen"); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("after recovery, unseen key: %v, want an answer from the source", err)
	}
	if _, err := s.ServerKey(ctx, "docs", "k1"); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
}

func TestStoreRotationGrace(t *testing.T) {
	tests := []struct {
		grace time.Duration
		want  int
	}{
		// The newest generation (created 11-20) replaced the previous one 36 h before now.
		{0, 1},                    // replaced too long ago to be served with no grace
		{7 * 24 * time.Hour, 2},   // the previous generation is still within its grace
		{365 * 24 * time.Hour, 3}, // every generation
	}
	for _, tc := range tests {
		s, _, _, _ := newStore(t, keysYAML)
		keys, err := s.AuthTokenKeys(context.Background(), "docs", tc.grace)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys.Generations) != tc.want {
			t.Errorf("grace %v: %d generations, want %d", tc.grace, len(keys.Generations), tc.want)
		}
	}
}

// reloadKeyFile makes the store's file source read its file again now.
func reloadKeyFile(t *testing.T, s *vault.Store) {
	t.Helper()
	fs, ok := s.Source().(*faultySource).Source.(*file.Source)
	if !ok {
		t.Fatal("the store's source is not a file source")
	}
	if err := fs.Reload(); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds, failing the test after a generous deadline: it waits for
// an event, it asserts no timing.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("gave up waiting for %s", what)
		}
	}
}

// The failing-since and max-stale gauges tell how close cached keys are to being refused: the
// first failed read sets the time, a good read clears it.
func TestStoreFailingSinceGauge(t *testing.T) {
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
	m := vault.NewStoreMetrics(nil)
	s, err := vault.NewStore(src, vault.StoreOptions{Refresh: 30 * time.Second, MaxStale: 2 * time.Hour,
		Now: c.now, Logger: slog.New(slog.DiscardHandler), Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if v := testutil.ToFloat64(m.MaxStale); v != 7200 {
		t.Fatalf("max stale gauge = %v, want 7200", v)
	}
	ctx := context.Background()
	if _, err := s.ServerKey(ctx, "docs", "k1"); err != nil {
		t.Fatal(err)
	}
	if v := testutil.ToFloat64(m.FailingSince); v != 0 {
		t.Fatalf("failing since = %v while reads succeed", v)
	}
	src.down.Store(true)
	before := time.Now()
	_, _ = s.ServerKey(ctx, "docs", "never-seen")
	v := testutil.ToFloat64(m.FailingSince)
	if v < float64(before.Unix())-1 || v > float64(time.Now().Unix())+1 {
		t.Fatalf("failing since = %v, want about %d", v, before.Unix())
	}
	src.down.Store(false)
	c.add(2 * time.Second)
	if _, err := s.ServerKey(ctx, "docs", "never-seen-2"); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("after recovery: %v", err)
	}
	if v := testutil.ToFloat64(m.FailingSince); v != 0 {
		t.Fatalf("failing since = %v after a good read", v)
	}
}

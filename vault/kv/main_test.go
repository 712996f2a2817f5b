package kv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/vaulttest"
)

// srv is the dev server shared by the package's tests; each test works under its own prefix.
// Tests that stop or restart Vault start their own with vaulttest.Start.
var srv *vaulttest.Server

func TestMain(m *testing.M) {
	s, err := vaulttest.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv = s
	code := m.Run()
	s.Close()
	os.Exit(code)
}

var nonWord = regexp.MustCompile(`[^A-Za-z0-9]+`)

// testPrefix is a KV prefix of the test's own, so tests sharing srv never see each other.
func testPrefix(t testing.TB) string {
	return "t/" + strings.Trim(nonWord.ReplaceAllString(t.Name(), "-"), "-")
}

// quietLogger drops logs unless -v is given.
func quietLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// writeFile writes a (secret) file for a test and returns its path.
func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// fixture is a test's view of a Vault server: a source on its own prefix, and a root client to
// seed it.
type fixture struct {
	t       testing.TB
	srv     *vaulttest.Server
	prefix  string
	src     *Source
	reg     *prometheus.Registry
	metrics *Metrics // registered once on reg, shared by every source of the fixture
}

// newFixture returns a logged-in source (root token from a token file) under the test's own
// prefix of s.
func newFixture(t testing.TB, s *vaulttest.Server) *fixture {
	t.Helper()
	f := bareFixture(t, s, testPrefix(t))
	f.src = f.newSource(Options{Auth: Auth{Method: AuthToken, TokenFile: writeFile(t, "token", s.Token+"\n")}})
	return f
}

// bareFixture is a fixture on prefix of s with a registry and the metrics every source of the
// fixture shares, but no source yet.
func bareFixture(t testing.TB, s *vaulttest.Server, prefix string) *fixture {
	t.Helper()
	f := &fixture{t: t, srv: s, prefix: prefix, reg: prometheus.NewRegistry()}
	m, err := NewMetrics(f.reg)
	if err != nil {
		t.Fatal(err)
	}
	f.metrics = m
	return f
}

// newSource starts a source on the fixture's server and prefix (unless opts names them) and
// waits for its login.
func (f *fixture) newSource(opts Options) *Source {
	f.t.Helper()
	if opts.Address == "" {
		opts.Address = f.srv.Addr
	}
	if opts.Prefix == "" {
		opts.Prefix = f.prefix
	}
	if opts.Metrics == nil {
		opts.Metrics = f.metrics
	}
	opts.Logger = quietLogger()
	opts.minBackoff, opts.maxBackoff = 20*time.Millisecond, 200*time.Millisecond
	src, err := New(opts)
	if err != nil {
		f.t.Fatal(err)
	}
	src.Start(context.Background())
	f.t.Cleanup(src.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := src.WaitReady(ctx); err != nil {
		f.t.Fatalf("source not ready: %v\n%s", err, f.srv.Logs())
	}
	return src
}

// kv is a root KV v2 client for the secret mount.
func (f *fixture) kv() *api.KVv2 { return f.srv.Client.KVv2("secret") }

// full is the KV path (under the mount) of a record path.
func (f *fixture) full(p string) string { return f.prefix + "/" + p }

// put writes one version of the record at p (a path under the prefix) and returns its version.
func (f *fixture) put(p string, data map[string]any) int {
	f.t.Helper()
	s, err := f.kv().Put(context.Background(), f.full(p), data)
	if err != nil {
		f.t.Fatalf("put %s: %v", p, err)
	}
	return s.VersionMetadata.Version
}

// store returns a Store over src, closed at the end of the test.
func (f *fixture) store(src vault.Source, opts vault.StoreOptions) *vault.Store {
	f.t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	st, err := vault.NewStore(src, opts)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(st.Close)
	return st
}

// counter returns the value of a counter of the fixture's registry with the given labels.
func (f *fixture) counter(name string, labels map[string]string) float64 {
	f.t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		f.t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				got := ""
				for _, l := range m.GetLabel() {
					if l.GetName() == k {
						got = l.GetValue()
					}
				}
				if got != v {
					continue metric
				}
			}
			switch {
			case m.Counter != nil:
				total += m.GetCounter().GetValue()
			case m.Gauge != nil:
				total += m.GetGauge().GetValue()
			}
		}
	}
	return total
}

// countingSource counts the reads that reach the wrapped source, by path.
type countingSource struct {
	vault.Source
	mu    sync.Mutex
	reads map[string]int
}

func newCounting(src vault.Source) *countingSource {
	return &countingSource{Source: src, reads: map[string]int{}}
}

func (c *countingSource) count(p string) {
	c.mu.Lock()
	c.reads[p]++
	c.mu.Unlock()
}

func (c *countingSource) Read(ctx context.Context, p string) (vault.Raw, error) {
	c.count(p)
	return c.Source.Read(ctx, p)
}

func (c *countingSource) Versions(ctx context.Context, p string, since time.Time) ([]vault.Raw, error) {
	c.count(p)
	return c.Source.Versions(ctx, p, since)
}

func (c *countingSource) List(ctx context.Context, p string) ([]string, error) {
	c.count(p)
	return c.Source.List(ctx, p)
}

func (c *countingSource) snapshot() (map[string]int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.reads))
	total := 0
	for k, v := range c.reads {
		out[k] = v
		total += v
	}
	return out, total
}

// eventually polls cond until it returns nil or the deadline passes; it asserts an outcome,
// never a duration (the deadline only stops a broken test from hanging).
func eventually(t testing.TB, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: never happened; last: %v", what, err)
}

// isNotFound reports whether err is vault.ErrNotFound.
func isNotFound(err error) bool { return errors.Is(err, vault.ErrNotFound) }

// testClock is a store's clock that a test moves ahead, so cached records age without the
// test waiting for them.
type testClock struct{ ahead atomic.Int64 }

func (c *testClock) now() time.Time       { return time.Now().Add(time.Duration(c.ahead.Load())) }
func (c *testClock) skip(d time.Duration) { c.ahead.Add(int64(d)) }

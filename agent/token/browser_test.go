package token

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/vault"
)

// blSource is an in-memory vault.Source for the browser and legacy verifier tests: records by
// path, editable while a test runs.
type blSource struct {
	mu      sync.Mutex
	records map[string]map[string]any
	down    atomic.Bool
	lists   atomic.Int64 // List calls, to see when a browser key set is read
}

func newBLSource() *blSource { return &blSource{records: map[string]map[string]any{}} }

func (s *blSource) set(path string, data map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[path] = data
}

func (s *blSource) del(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.records, path)
}

func (s *blSource) Name() string { return "mem" }

func (s *blSource) Read(_ context.Context, path string) (vault.Raw, error) {
	if s.down.Load() {
		return vault.Raw{}, errors.New("source down")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.records[path]
	if !ok {
		return vault.Raw{}, vault.ErrNotFound
	}
	return vault.Raw{Data: d, Version: 1}, nil
}

func (s *blSource) Versions(ctx context.Context, path string, _ time.Time) ([]vault.Raw, error) {
	r, err := s.Read(ctx, path)
	if err != nil {
		return nil, err
	}
	return []vault.Raw{r}, nil
}

func (s *blSource) List(_ context.Context, dir string) ([]string, error) {
	if s.down.Load() {
		return nil, errors.New("source down")
	}
	s.lists.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for p := range s.records {
		if rest, ok := strings.CutPrefix(p, dir+"/"); ok && !strings.Contains(rest, "/") {
			out = append(out, rest)
		}
	}
	return out, nil
}

func (s *blSource) Ready() error { return nil }

// blClock is a settable clock shared by the store and the verifiers.
type blClock struct{ ns atomic.Int64 }

func newBLClock(t time.Time) *blClock {
	c := &blClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *blClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *blClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func newBLStore(t testing.TB, src vault.Source, now func() time.Time) *vault.Store {
	t.Helper()
	st, err := vault.NewStore(src, vault.StoreOptions{Now: now, Refresh: 30 * time.Second,
		Logger: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

var blSite = &SiteSettings{ID: "docs", Hosts: []string{"docs.example.com", "*.docs.example.com"}}

func browserFixture(t testing.TB) (*BrowserVerifier, *blSource, *blClock, *bytes.Buffer) {
	t.Helper()
	src := newBLSource()
	src.set("sites/docs/browser-tokens/pub1", map[string]any{"origins": []any{"*.example.com", "https://app.example.org"}})
	src.set("sites/docs/browser-tokens/pub2", map[string]any{"origins": []any{"partner.example.net", "http://localhost:8080", "*", "https://*.bad.example"}})
	src.set("sites/other/browser-tokens/pubX", map[string]any{"origins": []any{"other.example.net"}})
	clock := newBLClock(time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC))
	var logs bytes.Buffer
	v := &BrowserVerifier{Keys: newBLStore(t, src, clock.Now), Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	return v, src, clock, &logs
}

func blReason(err error) reason.Reason {
	var e *reason.Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func TestBrowserVerify(t *testing.T) {
	v, _, _, logs := browserFixture(t)
	tests := []struct {
		name, key, origin string
		site              *SiteSettings
		want              reason.Reason // "" for accepted
	}{
		{name: "no origin", key: "pub1"},
		{name: "wildcard origin", key: "pub1", origin: "https://app.example.com"},
		{name: "wildcard origin http and port", key: "pub1", origin: "http://app.example.com:3000"},
		{name: "exact origin", key: "pub1", origin: "https://app.example.org"},
		{name: "exact origin explicit port", key: "pub1", origin: "https://app.example.org:443"},
		{name: "exact origin other scheme", key: "pub1", origin: "http://app.example.org", want: reason.OriginNotAllowed},
		{name: "bare suffix", key: "pub1", origin: "https://example.com", want: reason.OriginNotAllowed},
		{name: "lookalike", key: "pub1", origin: "https://evil-example.com", want: reason.OriginNotAllowed},
		{name: "suffix inside", key: "pub1", origin: "https://example.com.evil.net", want: reason.OriginNotAllowed},
		{name: "site hostname", key: "pub2", origin: "https://docs.example.com"},
		{name: "site hostname any port", key: "pub2", origin: "http://docs.example.com:8080"},
		{name: "site wildcard hostname", key: "pub2", origin: "https://eu.docs.example.com"},
		{name: "other key's origin", key: "pub2", origin: "https://app.example.org", want: reason.OriginNotAllowed},
		{name: "bare host", key: "pub2", origin: "https://partner.example.net:8443"},
		{name: "exact with port", key: "pub2", origin: "http://localhost:8080"},
		{name: "exact with port wrong port", key: "pub2", origin: "http://localhost:8081", want: reason.OriginNotAllowed},
		{name: "invalid pattern matches nothing", key: "pub2", origin: "https://x.bad.example", want: reason.OriginNotAllowed},
		{name: "null origin", key: "pub1", origin: "null", want: reason.OriginNotAllowed},
		{name: "malformed origin", key: "pub1", origin: "https://app.example.com/", want: reason.OriginNotAllowed},
		{name: "userinfo origin", key: "pub1", origin: "https://a@app.example.com", want: reason.OriginNotAllowed},
		{name: "unknown key", key: "nope", want: reason.UnknownKey},
		{name: "key of another site", key: "pubX", want: reason.UnknownKey},
		{name: "empty key", key: "", want: reason.MalformedToken},
		{name: "key with underscore", key: "pub_1", want: reason.MalformedToken},
		{name: "key with dash", key: "pub-1", want: reason.MalformedToken},
		{name: "key too long", key: strings.Repeat("a", 256), want: reason.MalformedToken},
		{name: "key max length unknown", key: strings.Repeat("a", 255), want: reason.UnknownKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			site := tt.site
			if site == nil {
				site = blSite
			}
			id, err := v.Verify(context.Background(), site, tt.key, tt.origin)
			if got := blReason(err); got != tt.want || (tt.want == "" && err != nil) {
				t.Fatalf("Verify(%q, %q) = %v, want reason %q", tt.key, tt.origin, err, tt.want)
			}
			if err == nil && (id.Kind != KindBrowser || id.User != "" || id.Authenticated()) {
				t.Fatalf("identity %+v, want kind browser with no user", id)
			}
			if tt.want == reason.OriginNotAllowed && reason.From(err).HTTPStatus() != 403 {
				t.Fatalf("origin_not_allowed status %d, want 403", reason.From(err).HTTPStatus())
			}
		})
	}
	if n := strings.Count(logs.String(), "origin pattern ignored"); n != 2 {
		t.Errorf("logged %d invalid patterns, want 2 (each once):\n%s", n, logs.String())
	}
}

func TestBrowserVerifyKeysUnavailable(t *testing.T) {
	v, src, _, _ := browserFixture(t)
	src.down.Store(true)
	_, err := v.Verify(context.Background(), blSite, "pub1", "")
	if blReason(err) != reason.KeysUnavailable {
		t.Fatalf("got %v, want keys_unavailable", err)
	}
	_, err = v.Preflight(context.Background(), blSite, "https://app.example.com", "GET", "")
	if blReason(err) != reason.KeysUnavailable {
		t.Fatalf("preflight got %v, want keys_unavailable", err)
	}
	// The site's own hostnames too: a preflight is allowed only when the site has a browser
	// key (SPEC §3.3), which cannot be known while the keys cannot be read.
	if _, err := v.Preflight(context.Background(), blSite, "https://docs.example.com", "GET", ""); blReason(err) != reason.KeysUnavailable {
		t.Fatalf("preflight from the site's own host got %v, want keys_unavailable", err)
	}
}

// TestBrowserRecordRefresh checks that a changed key record is compiled again and a deleted
// one is refused, within the store's refresh interval.
func TestBrowserRecordRefresh(t *testing.T) {
	v, src, clock, _ := browserFixture(t)
	ctx := context.Background()
	if _, err := v.Verify(ctx, blSite, "pub1", "https://new.example.io"); blReason(err) != reason.OriginNotAllowed {
		t.Fatalf("before: %v", err)
	}
	src.set("sites/docs/browser-tokens/pub1", map[string]any{"origins": []any{"new.example.io"}})
	clock.Advance(31 * time.Second)
	if _, err := v.Verify(ctx, blSite, "pub1", "https://new.example.io"); err != nil {
		t.Fatalf("after the change: %v", err)
	}
	if _, err := v.Verify(ctx, blSite, "pub1", "https://app.example.com"); blReason(err) != reason.OriginNotAllowed {
		t.Fatalf("old origin after the change: %v", err)
	}
	n := 0
	v.compiled.Range(func(_, _ any) bool { n++; return true })
	if n != 1 {
		t.Errorf("%d compiled records kept, want 1 (the old one dropped)", n)
	}
	src.del("sites/docs/browser-tokens/pub1")
	clock.Advance(31 * time.Second)
	if _, err := v.Verify(ctx, blSite, "pub1", ""); blReason(err) != reason.UnknownKey {
		t.Fatalf("after delete: %v", err)
	}
}

func TestPreflight(t *testing.T) {
	v, _, _, _ := browserFixture(t)
	tests := []struct {
		name, origin, method, headers string
		want                          reason.Reason
		methods, allowHeaders         string
	}{
		{name: "wildcard origin", origin: "https://app.example.com", method: "PUT",
			methods: PreflightAllowMethods, allowHeaders: PreflightAllowHeaders},
		{name: "origin of second key", origin: "http://localhost:8080", method: "GET",
			methods: PreflightAllowMethods, allowHeaders: PreflightAllowHeaders},
		{name: "site hostname", origin: "https://eu.docs.example.com", method: "GET",
			methods: PreflightAllowMethods, allowHeaders: PreflightAllowHeaders},
		{name: "custom method", origin: "https://app.example.org", method: "PROPFIND",
			methods: PreflightAllowMethods + ", PROPFIND", allowHeaders: PreflightAllowHeaders},
		{name: "invalid method not echoed", origin: "https://app.example.org", method: "GET\r\nX: y",
			methods: PreflightAllowMethods, allowHeaders: PreflightAllowHeaders},
		{name: "requested headers", origin: "https://app.example.com", method: "POST",
			headers: "x-deki-token, content-type,Accept ,if-match, x-auth-user, x-http-method-override, accept",
			methods: PreflightAllowMethods, allowHeaders: PreflightAllowHeaders + ", Accept, If-Match"},
		{name: "not allowed", origin: "https://evil.example.net", method: "GET", want: reason.OriginNotAllowed},
		{name: "bare suffix", origin: "https://example.com", method: "GET", want: reason.OriginNotAllowed},
		{name: "other site's key", origin: "https://other.example.net", method: "GET", want: reason.OriginNotAllowed},
		{name: "null", origin: "null", method: "GET", want: reason.OriginNotAllowed},
		{name: "malformed", origin: "https://app.example.com/x", method: "GET", want: reason.OriginNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := v.Preflight(context.Background(), blSite, tt.origin, tt.method, tt.headers)
			if blReason(err) != tt.want || (tt.want == "" && err != nil) {
				t.Fatalf("Preflight = %v, want %q", err, tt.want)
			}
			if err != nil {
				return
			}
			want := map[string]string{
				"access-control-allow-origin":      tt.origin,
				"access-control-allow-credentials": "true",
				"access-control-allow-methods":     tt.methods,
				"access-control-allow-headers":     tt.allowHeaders,
				"access-control-max-age":           "600",
				"vary":                             "Origin",
			}
			if len(h) != len(want) {
				t.Fatalf("headers %v, want %v", h, want)
			}
			for _, x := range h {
				if want[x.Name] != x.Value {
					t.Errorf("%s: %q, want %q", x.Name, x.Value, want[x.Name])
				}
			}
		})
	}
}

// TestPreflightIndexPerSet checks that the preflight index is built once per key set and
// rebuilt when the store hands out a new set.
// A site with no browser key allows no preflight, not even from its own hostnames on another
// port or scheme (SPEC §3.3).
func TestPreflightSiteWithoutBrowserKeys(t *testing.T) {
	v, _, _, _ := browserFixture(t)
	bare := &SiteSettings{ID: "bare", Hosts: []string{"bare.example.com"}}
	for _, origin := range []string{"https://bare.example.com", "https://bare.example.com:8443", "http://bare.example.com"} {
		if _, err := v.Preflight(context.Background(), bare, origin, "GET", ""); blReason(err) != reason.OriginNotAllowed {
			t.Errorf("preflight from %s at a site without browser keys: %v, want origin_not_allowed", origin, err)
		}
	}
	// With a browser key, the site's own hostnames are allowed on any port and scheme.
	for _, origin := range []string{"https://docs.example.com", "http://docs.example.com:8443"} {
		if _, err := v.Preflight(context.Background(), blSite, origin, "GET", ""); err != nil {
			t.Errorf("preflight from %s: %v", origin, err)
		}
	}
}

func TestPreflightIndexPerSet(t *testing.T) {
	v, src, clock, _ := browserFixture(t)
	ctx := context.Background()
	for range 3 {
		if _, err := v.Preflight(ctx, blSite, "https://a.example.com", "GET", ""); err != nil {
			t.Fatal(err)
		}
	}
	so := v.siteFor(blSite)
	first := so.pre.Load()
	if first == nil || src.lists.Load() != 1 {
		t.Fatalf("index %v, %d lists; want one index from one read", first, src.lists.Load())
	}
	if _, err := v.Preflight(ctx, blSite, "https://fresh.example.io", "GET", ""); blReason(err) != reason.OriginNotAllowed {
		t.Fatalf("before the new key: %v", err)
	}
	if so.pre.Load() != first {
		t.Fatal("the index was rebuilt for the same set")
	}
	src.set("sites/docs/browser-tokens/pub3", map[string]any{"origins": []any{"https://fresh.example.io"}})
	clock.Advance(31 * time.Second)
	if _, err := v.Preflight(ctx, blSite, "https://fresh.example.io", "GET", ""); err != nil {
		t.Fatalf("after the new key: %v", err)
	}
	if so.pre.Load() == first {
		t.Fatal("the index was not rebuilt for the new set")
	}
}

func TestOriginAllowedSiteHostsChange(t *testing.T) {
	v, _, _, _ := browserFixture(t)
	ctx := context.Background()
	s := &SiteSettings{ID: "docs", Hosts: []string{"docs.example.com"}}
	if ok, _ := v.OriginAllowed(ctx, s, "https://wiki.example.io"); ok {
		t.Fatal("allowed before the host was added")
	}
	s2 := &SiteSettings{ID: "docs", Hosts: []string{"docs.example.com", "wiki.example.io"}}
	if ok, err := v.OriginAllowed(ctx, s2, "https://wiki.example.io"); !ok || err != nil {
		t.Fatalf("after the host was added: %v, %v", ok, err)
	}
}

func TestCORSHeaders(t *testing.T) {
	if h := CORSHeaders("", "docs.example.com"); h != nil {
		t.Errorf("no origin: %v", h)
	}
	if h := CORSHeaders("https://docs.example.com", "docs.example.com"); h != nil {
		t.Errorf("same origin: %v", h)
	}
	if h := CORSHeaders("null", "docs.example.com"); h != nil {
		t.Errorf("null origin: %v", h)
	}
	h := CORSHeaders("https://App.example.com", "docs.example.com")
	want := []Header{
		{"access-control-allow-origin", "https://App.example.com"},
		{"access-control-allow-credentials", "true"},
		{"vary", "Origin"},
	}
	if len(h) != len(want) {
		t.Fatalf("got %v, want %v", h, want)
	}
	for i := range want {
		if h[i] != want[i] {
			t.Errorf("header %d: %v, want %v", i, h[i], want[i])
		}
	}
}

func TestBrowserConcurrent(t *testing.T) {
	v, src, clock, _ := browserFixture(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				if _, err := v.Verify(ctx, blSite, "pub1", "https://a.example.com"); err != nil {
					t.Error(err)
					return
				}
				if _, err := v.Preflight(ctx, blSite, "https://a.example.com", "GET", ""); err != nil {
					t.Error(err)
					return
				}
				if g == 0 && i%50 == 0 {
					src.set("sites/docs/browser-tokens/pub1", map[string]any{"origins": []any{"*.example.com", "x.example.io"}})
					clock.Advance(31 * time.Second)
				}
			}
		}()
	}
	wg.Wait()
}

func TestBrowserVerifyAllocs(t *testing.T) {
	v, _, _, _ := browserFixture(t)
	ctx := context.Background()
	if _, err := v.Verify(ctx, blSite, "pub1", "https://a.example.com"); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		_, _ = v.Verify(ctx, blSite, "pub1", "https://a.example.com")
	})
	if allocs != 0 {
		t.Errorf("Verify allocates %v times", allocs)
	}
}

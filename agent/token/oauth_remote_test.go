package token

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/vault/jwks"
)

// oaIssuer is an external issuer's real HTTP endpoint on 127.0.0.1 serving its JWKS.
type oaIssuer struct {
	srv     *httptest.Server
	hits    atomic.Int64
	mu      sync.Mutex
	body    string
	status  int
	gate    chan struct{} // when set, requests wait for it to close
	entered chan struct{} // receives when a request arrives (when set)
}

func newOAIssuer(t testing.TB, body string) *oaIssuer {
	is := &oaIssuer{body: body, status: http.StatusOK}
	is.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		is.hits.Add(1)
		is.mu.Lock()
		gate, entered, body, status := is.gate, is.entered, is.body, is.status
		is.mu.Unlock()
		if entered != nil {
			entered <- struct{}{}
		}
		if gate != nil {
			<-gate
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(is.srv.Close)
	return is
}

func (is *oaIssuer) serve(status int, body string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.status, is.body = status, body
}

// withRemote adds the external issuer "cxone" with jwks_uri at srv to site docs.
func (e *oaEnv) withRemote(uri string) {
	e.src.set("sites/docs/issuers/cxone", map[string]any{"issuer": "https://cxone.example.com", "audience": "docs",
		"jwks_uri": uri})
}

func (e *oaEnv) cxoneClaims() map[string]any {
	return e.claims(map[string]any{"iss": "https://cxone.example.com"})
}

func TestOAuthRemoteRotation(t *testing.T) {
	k := oaKeySet()
	e := newOAEnv(t)
	is := newOAIssuer(t, jwksJSON(t, jwkJSON(t, k.partner, "r1", "RS256")))
	e.withRemote(is.srv.URL + "/jwks.json")
	if _, err := e.verify(e.docs, mint(t, k.partner, "r1", "RS256", e.cxoneClaims())); err != nil {
		t.Fatal(err)
	}
	if n := is.hits.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	// The issuer rotates: a new key r2 is published next to r1.
	is.serve(http.StatusOK, jwksJSON(t, jwkJSON(t, k.partner, "r1", "RS256"), jwkJSON(t, k.ec, "r2", "ES256")))
	e.clock.Advance(31 * time.Second)
	if _, err := e.verify(e.docs, mint(t, k.ec, "r2", "ES256", e.cxoneClaims())); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	if n := is.hits.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2 (one refetch)", n)
	}
	// Both keys keep verifying without more fetches.
	for _, tok := range []string{mint(t, k.partner, "r1", "RS256", e.cxoneClaims()), mint(t, k.ec, "r2", "ES256", e.cxoneClaims())} {
		if _, err := e.verify(e.docs, tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := is.hits.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	// r1 is withdrawn; after MaxAge a use refreshes the set in the background, and r1 stops.
	is.serve(http.StatusOK, jwksJSON(t, jwkJSON(t, k.ec, "r2", "ES256")))
	e.clock.Advance(jwks.DefaultMaxAge + time.Second)
	r1 := mint(t, k.partner, "r1", "RS256", e.cxoneClaims())
	_, _ = e.verify(e.docs, r1) // served from the old set while the refresh runs
	waitFor(t, func() bool {
		return is.hits.Load() == 3 && len(e.v.JWKS.Remote(is.srv.URL+"/jwks.json").Current().ByKID("r1")) == 0
	})
	e.clock.Advance(31 * time.Second)
	if _, err := e.verify(e.docs, r1); reasonOf(t, err) != reason.UnknownKey {
		t.Fatalf("a withdrawn key: %v", err)
	}
}

func TestOAuthKidFlood(t *testing.T) {
	k := oaKeySet()
	e := newOAEnv(t)
	is := newOAIssuer(t, jwksJSON(t, jwkJSON(t, k.partner, "r1", "RS256")))
	e.withRemote(is.srv.URL + "/jwks.json")
	good := mint(t, k.partner, "r1", "RS256", e.cxoneClaims())
	if _, err := e.verify(e.docs, good); err != nil {
		t.Fatal(err)
	}
	flood := func(n int) {
		t.Helper()
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				tok := mint(t, k.partner, fmt.Sprintf("made-up-%d-%d", i, time.Now().UnixNano()), "RS256", e.cxoneClaims())
				if _, err := e.v.Verify(context.Background(), e.docs, tok); reasonOf(t, err) != reason.UnknownKey {
					t.Errorf("made-up kid: %v", err)
				}
			})
		}
		wg.Wait()
	}
	flood(20) // inside the 30 s after the first fetch: no refetch at all
	if n := is.hits.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	for window := 2; window <= 4; window++ {
		e.clock.Advance(30 * time.Second)
		flood(20)
		flood(5)
		if n := is.hits.Load(); n != int64(window) {
			t.Fatalf("window %d: %d fetches, want %d (one refetch per 30 s)", window, n, window)
		}
	}
	if _, err := e.verify(e.docs, good); err != nil {
		t.Fatalf("the real key after the flood: %v", err)
	}
}

// Concurrent requests with an unknown kid share one fetch.
func TestOAuthRefetchShared(t *testing.T) {
	k := oaKeySet()
	e := newOAEnv(t)
	is := newOAIssuer(t, jwksJSON(t, jwkJSON(t, k.partner, "r1", "RS256")))
	e.withRemote(is.srv.URL + "/jwks.json")
	if _, err := e.verify(e.docs, mint(t, k.partner, "r1", "RS256", e.cxoneClaims())); err != nil {
		t.Fatal(err)
	}
	is.serve(http.StatusOK, jwksJSON(t, jwkJSON(t, k.partner, "r1", "RS256"), jwkJSON(t, k.ed, "r2", "")))
	gate, entered := make(chan struct{}), make(chan struct{}, 100)
	is.mu.Lock()
	is.gate, is.entered = gate, entered
	is.mu.Unlock()
	e.clock.Advance(31 * time.Second)
	tok := mint(t, k.ed, "r2", "EdDSA", e.cxoneClaims())
	const n = 16
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := e.v.Verify(context.Background(), e.docs, tok)
			errs <- err
		}()
	}
	<-entered // the one fetch is under way; let every request pile up behind it
	waitFor(t, func() bool { return e.counter("tokenagent_oauth_token_cache_total", "result", "miss") >= n+1 })
	close(gate)
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("a request sharing the refetch: %v", err)
		}
	}
	if got := is.hits.Load(); got != 2 {
		t.Fatalf("%d fetches, want 2", got)
	}
}

func TestOAuthIssuerDown(t *testing.T) {
	k := oaKeySet()
	e := newOAEnv(t)
	is := newOAIssuer(t, jwksJSON(t, jwkJSON(t, k.partner, "r1", "RS256")))
	e.withRemote(is.srv.URL + "/jwks.json")
	good := mint(t, k.partner, "r1", "RS256", e.cxoneClaims())
	if _, err := e.verify(e.docs, good); err != nil {
		t.Fatal(err)
	}
	is.serve(http.StatusInternalServerError, "down")
	e.clock.Advance(31 * time.Second)
	if _, err := e.verify(e.docs, mint(t, k.partner, "r9", "RS256", e.cxoneClaims())); reasonOf(t, err) != reason.UnknownKey {
		t.Fatalf("unknown kid while the issuer is down: %v", err)
	}
	if n := is.hits.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	e.clock.Advance(e.store.Refresh() + time.Second) // no cache hit: the full path
	if _, err := e.verify(e.docs, good); err != nil {
		t.Fatalf("a cached key while the issuer is down: %v", err)
	}
	w := strings.Join(e.v.Warnings(), "\n")
	if !strings.Contains(w, is.srv.URL) || !strings.Contains(w, "500") {
		t.Fatalf("warnings %q do not report the failing jwks_uri", w)
	}
	if e.counter("tokenagent_jwks_fetches_total", "outcome", "status") != 1 || e.counter("tokenagent_jwks_fetches_total", "outcome", "ok") != 1 {
		t.Fatal("fetch metrics do not count the outcomes")
	}
	// The issuer comes back: the next allowed refetch clears the warning.
	is.serve(http.StatusOK, jwksJSON(t, jwkJSON(t, k.partner, "r1", "RS256")))
	e.clock.Advance(31 * time.Second)
	_, _ = e.verify(e.docs, mint(t, k.partner, "r9", "RS256", e.cxoneClaims()))
	if w := e.v.Warnings(); len(w) != 0 {
		t.Fatalf("warnings after recovery: %q", w)
	}
}

func TestOAuthKeysNeverFetched(t *testing.T) {
	k := oaKeySet()
	for _, tc := range []struct {
		name   string
		status int
		body   string
	}{
		{"server error", http.StatusBadGateway, "no"},
		{"not a key set", http.StatusOK, `{"hello":"world"}`},
		{"no usable key", http.StatusOK, jwksJSON(t, jwkJSON(t, k.hs, "k-hs", "HS256"))},
		{"private key published", http.StatusOK, func() string {
			b, _ := (&jose.JSONWebKey{Key: k.ed, KeyID: "r1"}).MarshalJSON()
			return `{"keys":[` + string(b) + `]}`
		}()},
		{"too large", http.StatusOK, `{"keys":[],"pad":"` + strings.Repeat("x", jwks.DefaultMaxBytes) + `"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newOAEnv(t)
			is := newOAIssuer(t, tc.body)
			is.serve(tc.status, tc.body)
			e.withRemote(is.srv.URL + "/jwks.json")
			tok := mint(t, k.ed, "r1", "EdDSA", e.cxoneClaims())
			_, err := e.verify(e.docs, tok)
			r, h := reasonAndHeaders(t, err)
			if r != reason.KeysUnavailable || r.Status() != http.StatusServiceUnavailable || h["Retry-After"] == "" {
				t.Fatalf("reason %q headers %v (%v)", r, h, err)
			}
			// Within the refetch interval nothing is fetched again.
			_, _ = e.verify(e.docs, tok)
			if n := is.hits.Load(); n != 1 {
				t.Fatalf("%d fetches, want 1", n)
			}
			if w := strings.Join(e.v.Warnings(), "\n"); !strings.Contains(w, "could never be fetched") {
				t.Fatalf("warnings %q", w)
			}
			// The issuer is fixed; the next attempt after the interval succeeds.
			is.serve(http.StatusOK, jwksJSON(t, jwkJSON(t, k.ed, "r1", "")))
			e.clock.Advance(31 * time.Second)
			if _, err := e.verify(e.docs, tok); err != nil {
				t.Fatalf("after the issuer recovered: %v", err)
			}
		})
	}
}

func TestOAuthRedirectToPlainHTTP(t *testing.T) {
	k := oaKeySet()
	e := newOAEnv(t)
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://jwks.example.invalid/keys", http.StatusFound)
	}))
	defer redirect.Close()
	e.withRemote(redirect.URL + "/jwks.json")
	_, err := e.verify(e.docs, mint(t, k.ed, "r1", "EdDSA", e.cxoneClaims()))
	if reasonOf(t, err) != reason.KeysUnavailable {
		t.Fatalf("%v", err)
	}
	if w := strings.Join(e.v.Warnings(), "\n"); !strings.Contains(w, "https") {
		t.Fatalf("warnings %q do not say why", w)
	}
}

func TestOAuthPrefetch(t *testing.T) {
	k := oaKeySet()
	e := newOAEnv(t)
	is := newOAIssuer(t, "")
	is.serve(http.StatusNotFound, "")
	e.withRemote(is.srv.URL + "/jwks.json")
	e.v.Prefetch(context.Background(), "docs", "other")
	if n := is.hits.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	if w := strings.Join(e.v.Warnings(), "\n"); !strings.Contains(w, is.srv.URL) {
		t.Fatalf("warnings %q", w)
	}
	_ = k
}

// waitFor polls cond (a background fetch has landed); it never asserts a duration.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// ---- minting ----

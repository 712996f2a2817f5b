package jwks

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
)

type testKeys struct {
	rsa, rsa2 *rsa.PrivateKey
	weak      *rsa.PrivateKey
	ec        *ecdsa.PrivateKey
	p384      *ecdsa.PrivateKey
	ed        ed25519.PrivateKey
	hs        []byte
}

var keys = sync.OnceValue(func() *testKeys {
	k := &testKeys{hs: []byte("a-shared-hmac-secret-of-32-bytes!")}
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.rsa2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.weak, err = rsa.GenerateKey(rand.Reader, 1024); err != nil {
		panic(err)
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		panic(err)
	}
	if k.p384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
		panic(err)
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		panic(err)
	}
	return k
})

// jwk returns the JWK JSON of key (public half unless private is set) with extra members.
func jwk(t testing.TB, key any, kid, alg string, private bool, extra ...string) string {
	t.Helper()
	j := jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: alg}
	if _, sym := key.([]byte); !sym && !private && !j.IsPublic() {
		j = j.Public()
	}
	b, err := j.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(extra); i += 2 {
		s = strings.TrimSuffix(s, "}") + fmt.Sprintf(",%q:%s}", extra[i], extra[i+1])
	}
	return s
}

func set(keys ...string) string { return `{"keys":[` + strings.Join(keys, ",") + `]}` }

func TestParse(t *testing.T) {
	k := keys()
	for _, tc := range []struct {
		name    string
		key     string
		fetched bool
		algs    []string // algorithms the parsed key allows; nil: left out
	}{
		{name: "RSA without alg", key: jwk(t, k.rsa, "a", "", false), algs: []string{RS256, PS256}},
		{name: "RSA RS256", key: jwk(t, k.rsa, "a", "RS256", false), algs: []string{RS256}},
		{name: "RSA PS256", key: jwk(t, k.rsa, "a", "PS256", false), algs: []string{PS256}},
		{name: "RSA RS512", key: jwk(t, k.rsa, "a", "RS512", false)},
		{name: "RSA under 2048 bits", key: jwk(t, k.weak, "a", "", false)},
		{name: "RSA with alg ES256", key: jwk(t, k.rsa, "a", "ES256", false)},
		{name: "RSA private in a stored set", key: jwk(t, k.rsa, "a", "", true), algs: []string{RS256, PS256}},
		{name: "RSA private in a fetched set", key: jwk(t, k.rsa, "a", "", true), fetched: true},
		{name: "EC P-256", key: jwk(t, k.ec, "a", "", false), algs: []string{ES256}},
		{name: "EC P-256 ES256", key: jwk(t, k.ec, "a", "ES256", false), algs: []string{ES256}},
		{name: "EC P-256 with alg EdDSA", key: jwk(t, k.ec, "a", "EdDSA", false)},
		{name: "EC P-384", key: jwk(t, k.p384, "a", "", false)},
		{name: "Ed25519", key: jwk(t, k.ed, "a", "", false), algs: []string{EdDSA}},
		{name: "Ed25519 with alg EdDSA", key: jwk(t, k.ed, "a", "EdDSA", false), algs: []string{EdDSA}},
		{name: "Ed25519 with alg ES256", key: jwk(t, k.ed, "a", "ES256", false)},
		{name: "oct HS256 stored", key: jwk(t, k.hs, "a", "HS256", false), algs: []string{HS256}},
		{name: "oct HS256 fetched", key: jwk(t, k.hs, "a", "HS256", false), fetched: true},
		{name: "oct without alg", key: jwk(t, k.hs, "a", "", false)},
		{name: "oct short", key: jwk(t, []byte("short"), "a", "HS256", false)},
		{name: "use sig", key: jwk(t, k.ec, "a", "", false, "use", `"sig"`), algs: []string{ES256}},
		{name: "use enc", key: jwk(t, k.ec, "a", "", false, "use", `"enc"`)},
		{name: "key_ops verify", key: jwk(t, k.ec, "a", "", false, "key_ops", `["verify"]`), algs: []string{ES256}},
		{name: "key_ops sign only", key: jwk(t, k.ec, "a", "", false, "key_ops", `["sign"]`)},
		{name: "unknown kty", key: `{"kty":"XYZ","kid":"a"}`},
		{name: "not an object", key: `"key"`},
		{name: "EC point off the curve", key: `{"kty":"EC","crv":"P-256","kid":"a","x":"AQ","y":"AQ"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse([]byte(set(tc.key)), ParseOptions{Fetched: tc.fetched})
			if err != nil {
				t.Fatal(err)
			}
			if tc.algs == nil {
				if s.Len() != 0 || len(s.Problems) != 1 {
					t.Fatalf("kept %d keys, problems %q", s.Len(), s.Problems)
				}
				return
			}
			if s.Len() != 1 || len(s.Problems) != 0 {
				t.Fatalf("kept %d keys, problems %q", s.Len(), s.Problems)
			}
			key := s.ByKID("a")[0]
			for _, alg := range []string{RS256, PS256, ES256, EdDSA, HS256, "none", "RS512", ""} {
				want := false
				for _, a := range tc.algs {
					want = want || a == alg
				}
				if key.Allows(alg) != want {
					t.Errorf("Allows(%q) = %v", alg, !want)
				}
			}
			if _, sym := key.Public().([]byte); sym {
				t.Error("Public returned key material")
			}
		})
	}
}

func TestParseNotASet(t *testing.T) {
	for _, raw := range []string{``, `[]`, `{}`, `{"keys":{}}`, `{"keys":null}`, `{"keys":[],"keys":[]}`} {
		if _, err := Parse([]byte(raw), ParseOptions{}); !errors.Is(err, ErrNotKeySet) {
			t.Errorf("%q: %v", raw, err)
		}
	}
	s, err := Parse([]byte(`{"keys":[]}`), ParseOptions{})
	if err != nil || s.Len() != 0 {
		t.Fatalf("empty set: %v %v", s, err)
	}
}

// sign signs input with alg (crypto/* directly, as RFC 7518 §3 says).
func sign(t testing.TB, key any, alg, input string) []byte {
	t.Helper()
	h := sha256.Sum256([]byte(input))
	switch alg {
	case RS256:
		sig, err := rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, h[:])
		if err != nil {
			t.Fatal(err)
		}
		return sig
	case PS256:
		sig, err := rsa.SignPSS(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, h[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		if err != nil {
			t.Fatal(err)
		}
		return sig
	case ES256:
		r, s, err := ecdsa.Sign(rand.Reader, key.(*ecdsa.PrivateKey), h[:])
		if err != nil {
			t.Fatal(err)
		}
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return sig
	case EdDSA:
		return ed25519.Sign(key.(ed25519.PrivateKey), []byte(input))
	case HS256:
		m := hmac.New(sha256.New, key.([]byte))
		m.Write([]byte(input))
		return m.Sum(nil)
	}
	t.Fatalf("alg %s", alg)
	return nil
}

func TestKeyVerify(t *testing.T) {
	k := keys()
	s, err := Parse([]byte(set(jwk(t, k.rsa, "rsa", "", false), jwk(t, k.ec, "ec", "", false),
		jwk(t, k.ed, "ed", "", false), jwk(t, k.hs, "hs", "HS256", false))), ParseOptions{})
	if err != nil || s.Len() != 4 {
		t.Fatalf("%v %v", s, err)
	}
	const input = "eyJhbGciOiJ4In0.eyJzdWIiOiIxIn0"
	for _, tc := range []struct {
		kid, alg string
		key      any
	}{
		{"rsa", RS256, k.rsa}, {"rsa", PS256, k.rsa}, {"ec", ES256, k.ec}, {"ed", EdDSA, k.ed}, {"hs", HS256, k.hs},
	} {
		key := s.ByKID(tc.kid)[0]
		sig := sign(t, tc.key, tc.alg, input)
		if !key.Verify(tc.alg, input, sig) {
			t.Errorf("%s %s: a good signature fails", tc.kid, tc.alg)
		}
		if key.Verify(tc.alg, input+"x", sig) {
			t.Errorf("%s %s: a signature over other input verifies", tc.kid, tc.alg)
		}
		bad := append([]byte(nil), sig...)
		bad[len(bad)/2] ^= 1
		if key.Verify(tc.alg, input, bad) {
			t.Errorf("%s %s: a changed signature verifies", tc.kid, tc.alg)
		}
		for _, other := range []string{RS256, PS256, ES256, EdDSA, HS256, "none"} {
			if other != tc.alg && !(tc.kid == "rsa" && (other == RS256 || other == PS256)) && key.Verify(other, input, sig) {
				t.Errorf("%s: verifies under alg %s", tc.kid, other)
			}
		}
	}
	// Other keys' signatures fail.
	if s.ByKID("rsa")[0].Verify(RS256, input, sign(t, k.rsa2, RS256, input)) {
		t.Error("another RSA key's signature verifies")
	}
}

func TestInlineParsedOnce(t *testing.T) {
	k := keys()
	c := NewCache(Options{})
	raw := []byte(set(jwk(t, k.ec, "a", "", false)))
	a, err := c.Inline(raw)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := c.Inline(append([]byte(nil), raw...))
	if a != b {
		t.Fatal("the same JSON was parsed twice")
	}
	other, _ := c.Inline([]byte(set(jwk(t, k.ed, "a", "", false))))
	if other == a {
		t.Fatal("different JSON returned the same set")
	}
	if _, err := c.Inline([]byte(`{}`)); !errors.Is(err, ErrNotKeySet) {
		t.Fatal(err)
	}
}

// ---- remote sets ----

type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// issuer is a real HTTP endpoint on 127.0.0.1 serving a key set.
type issuer struct {
	*httptest.Server
	hits   atomic.Int64
	mu     sync.Mutex
	status int
	body   string
	gate   chan struct{}
}

func newIssuer(t testing.TB, body string) *issuer {
	is := &issuer{status: http.StatusOK, body: body}
	is.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		is.hits.Add(1)
		is.mu.Lock()
		status, body, gate := is.status, is.body, is.gate
		is.mu.Unlock()
		if gate != nil {
			<-gate
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(is.Close)
	return is
}

func (is *issuer) serve(status int, body string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.status, is.body = status, body
}

func newTestCache(c *clock, reg prometheus.Registerer) *Cache {
	m, err := NewMetrics(reg)
	if err != nil {
		panic(err) // a fresh registry per test
	}
	return NewCache(Options{Now: c.Now, Metrics: m, Logger: slog.New(slog.DiscardHandler)})
}

func TestRemoteRefetchLimit(t *testing.T) {
	k := keys()
	clk := newClock()
	reg := prometheus.NewRegistry()
	c := newTestCache(clk, reg)
	is := newIssuer(t, set(jwk(t, k.ec, "a", "", false)))
	r := c.Remote(is.URL + "/keys")
	ctx := context.Background()
	s1, err := r.Keys(ctx)
	if err != nil || s1.Len() != 1 {
		t.Fatalf("%v %v", s1, err)
	}
	if s, _ := r.Keys(ctx); s != s1 || is.hits.Load() != 1 {
		t.Fatalf("Keys fetched again (%d hits)", is.hits.Load())
	}
	is.serve(http.StatusOK, set(jwk(t, k.ec, "a", "", false), jwk(t, k.ed, "b", "", false)))
	// Inside the interval: no fetch.
	if s, err := r.Refetch(ctx, s1); s != s1 || err != nil || is.hits.Load() != 1 {
		t.Fatalf("refetch inside the interval: %v %v (%d hits)", s, err, is.hits.Load())
	}
	clk.Advance(30 * time.Second)
	s2, err := r.Refetch(ctx, s1)
	if err != nil || s2 == s1 || s2.Len() != 2 || is.hits.Load() != 2 {
		t.Fatalf("refetch after the interval: %v %v (%d hits)", s2, err, is.hits.Load())
	}
	// A caller that still holds the old set gets the new one without a fetch.
	clk.Advance(time.Minute)
	if s, _ := r.Refetch(ctx, s1); s != s2 || is.hits.Load() != 2 {
		t.Fatalf("stale caller: %d hits", is.hits.Load())
	}
	// A failed fetch counts and keeps the old set.
	is.serve(http.StatusInternalServerError, "")
	if s, err := r.Refetch(ctx, s2); s != s2 || err != nil || is.hits.Load() != 3 {
		t.Fatalf("failed refetch: %v %v (%d hits)", s, err, is.hits.Load())
	}
	clk.Advance(29 * time.Second)
	if s, _ := r.Refetch(ctx, s2); s != s2 || is.hits.Load() != 3 {
		t.Fatalf("refetch right after a failure: %d hits", is.hits.Load())
	}
	if w := c.Warnings(); len(w) != 1 || !strings.Contains(w[0], "last fetch failed") || !strings.Contains(w[0], "500") {
		t.Fatalf("warnings %q", w)
	}
	mfs, _ := reg.Gather()
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == "tokenagent_jwks_fetches_total" {
				for _, l := range m.GetLabel() {
					if l.GetName() == "outcome" {
						got[l.GetValue()] = m.GetCounter().GetValue()
					}
				}
			}
		}
	}
	if got["ok"] != 2 || got["status"] != 1 {
		t.Fatalf("fetch metrics %v", got)
	}
}

func TestRemoteSharedFetch(t *testing.T) {
	k := keys()
	clk := newClock()
	c := newTestCache(clk, nil)
	is := newIssuer(t, set(jwk(t, k.ec, "a", "", false)))
	gate := make(chan struct{})
	is.gate = gate
	r := c.Remote(is.URL)
	var wg sync.WaitGroup
	results := make(chan *Set, 32)
	for range 32 {
		wg.Go(func() {
			s, err := r.Keys(context.Background())
			if err != nil {
				t.Error(err)
			}
			results <- s
		})
	}
	for is.hits.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	close(gate)
	wg.Wait()
	close(results)
	var first *Set
	for s := range results {
		if first == nil {
			first = s
		}
		if s != first {
			t.Fatal("callers got different sets")
		}
	}
	if n := is.hits.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
}

func TestRemoteNeverFetched(t *testing.T) {
	clk := newClock()
	c := newTestCache(clk, nil)
	is := newIssuer(t, "")
	is.serve(http.StatusServiceUnavailable, "")
	r := c.Remote(is.URL)
	_, err := r.Keys(context.Background())
	var ue *UnavailableError
	if !errors.As(err, &ue) || ue.RetryAfter <= 0 || ue.RetryAfter > 30*time.Second || ue.URI != is.URL {
		t.Fatalf("%v", err)
	}
	clk.Advance(10 * time.Second)
	_, err = r.Keys(context.Background())
	if !errors.As(err, &ue) || ue.RetryAfter > 20*time.Second || is.hits.Load() != 1 {
		t.Fatalf("%v (%d hits)", err, is.hits.Load())
	}
	if w := c.Warnings(); len(w) != 1 || !strings.Contains(w[0], "could never be fetched") {
		t.Fatalf("warnings %q", w)
	}
}

func TestRemoteFetchRules(t *testing.T) {
	k := keys()
	good := set(jwk(t, k.ec, "a", "", false))
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		opts    Options
		ok      bool
	}{
		{name: "ok", handler: func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, good) }, ok: true},
		{name: "404", handler: func(w http.ResponseWriter, _ *http.Request) { http.NotFound(w, nil) }},
		{name: "over MaxBytes", opts: Options{MaxBytes: 100}, handler: func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, good) }},
		{name: "over MaxBytes without Content-Length", opts: Options{MaxBytes: 100}, handler: func(w http.ResponseWriter, _ *http.Request) {
			for range 10 {
				_, _ = io.WriteString(w, strings.Repeat(" ", 50))
				w.(http.Flusher).Flush()
			}
		}},
		{name: "timeout", opts: Options{Timeout: 50 * time.Millisecond}, handler: func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }},
		{name: "not JSON", handler: func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "<html>") }},
		{name: "only a symmetric key", handler: func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, set(jwk(t, k.hs, "a", "HS256", false)))
		}},
		{name: "redirect to loopback http", handler: func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/old" {
				http.Redirect(w, r, "/new", http.StatusMovedPermanently)
				return
			}
			_, _ = io.WriteString(w, good)
		}, ok: true},
		{name: "redirect to remote http", handler: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://keys.example.invalid/jwks", http.StatusFound)
		}},
		{name: "redirect loop", handler: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/old", http.StatusFound)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			opts := tc.opts
			opts.Logger = slog.New(slog.DiscardHandler)
			c := NewCache(opts)
			s, err := c.Remote(srv.URL + "/old").Keys(context.Background())
			if tc.ok != (err == nil) {
				t.Fatalf("set %v, error %v", s, err)
			}
		})
	}
}

func TestRemoteBadURI(t *testing.T) {
	c := NewCache(Options{Logger: slog.New(slog.DiscardHandler)})
	for _, uri := range []string{"http://keys.example.com/jwks", "ftp://127.0.0.1/jwks", "not a url"} {
		if _, err := c.Remote(uri).Keys(context.Background()); err == nil {
			t.Errorf("%s fetched", uri)
		}
	}
}

func TestRemoteMaxAge(t *testing.T) {
	k := keys()
	clk := newClock()
	c := newTestCache(clk, nil)
	is := newIssuer(t, set(jwk(t, k.ec, "a", "", false)))
	r := c.Remote(is.URL)
	s1, _ := r.Keys(context.Background())
	is.serve(http.StatusOK, set(jwk(t, k.ed, "b", "", false)))
	clk.Advance(DefaultMaxAge + time.Second)
	if s, _ := r.Keys(context.Background()); s != s1 {
		t.Fatal("a stale set is not served while it is refreshed")
	}
	deadline := time.Now().Add(10 * time.Second)
	for r.Current() == s1 {
		if time.Now().After(deadline) {
			t.Fatal("the background refresh never landed")
		}
		time.Sleep(time.Millisecond)
	}
	if len(r.Current().ByKID("b")) != 1 || is.hits.Load() != 2 {
		t.Fatalf("refreshed set %v (%d hits)", r.Current(), is.hits.Load())
	}
}

func TestContextEndsWait(t *testing.T) {
	c := newTestCache(newClock(), nil)
	is := newIssuer(t, "")
	gate := make(chan struct{})
	defer close(gate)
	is.gate = gate
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Remote(is.URL).Keys(ctx)
	var ue *UnavailableError
	if !errors.As(err, &ue) {
		t.Fatalf("%v", err)
	}
}

func TestParseCaseSensitive(t *testing.T) {
	// The JWK member names Parse reads must be the lower-case ones of RFC 7517 exactly.
	k := keys()
	raw := strings.Replace(jwk(t, k.ec, "a", "", false), `"kty"`, `"KTY"`, 1)
	s, err := Parse([]byte(set(raw)), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 0 {
		b, _ := json.Marshal(s.Problems)
		t.Fatalf("a JWK with KTY was used: %s", b)
	}
}

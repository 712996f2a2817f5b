package token

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
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/jwks"
)

// oaKeys are the private keys of the OAuth tests, generated once per test binary.
type oaKeys struct {
	rsa, partner, stranger *rsa.PrivateKey
	weakRSA                *rsa.PrivateKey // 1024 bits: refused in key sets
	ec, ecOther            *ecdsa.PrivateKey
	p384                   *ecdsa.PrivateKey
	ed                     ed25519.PrivateKey
	hs                     []byte
}

var oaKeySet = sync.OnceValue(func() *oaKeys {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	k := &oaKeys{hs: []byte("docs-hs256-shared-secret-of-32+bytes!")}
	var err error
	k.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.partner, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.stranger, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.weakRSA, err = rsa.GenerateKey(rand.Reader, 1024) //nolint:gosec // deliberately weak: must be refused
	must(err)
	k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.ecOther, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.p384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	must(err)
	_, k.ed, err = ed25519.GenerateKey(rand.Reader)
	must(err)
	return k
})

// oaClock is a settable test clock.
type oaClock struct{ ns atomic.Int64 }

func newOAClock() *oaClock {
	c := &oaClock{}
	c.ns.Store(testNow.UnixNano())
	return c
}

func (c *oaClock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *oaClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// oaSource is an in-memory key source whose records tests change while the store runs (the
// Store in front of it is the real one).
type oaSource struct {
	mu   sync.Mutex
	recs map[string]map[string]any
}

func (s *oaSource) Name() string { return "mem" }
func (s *oaSource) Ready() error { return nil }
func (s *oaSource) Read(_ context.Context, path string) (vault.Raw, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.recs[path]
	if !ok {
		return vault.Raw{}, vault.ErrNotFound
	}
	return vault.Raw{Data: d, Version: 1, Created: testNow}, nil
}
func (s *oaSource) Versions(ctx context.Context, path string, _ time.Time) ([]vault.Raw, error) {
	r, err := s.Read(ctx, path)
	if err != nil {
		return nil, err
	}
	return []vault.Raw{r}, nil
}
func (s *oaSource) List(_ context.Context, dir string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for p := range s.recs {
		if name, ok := strings.CutPrefix(p, dir+"/"); ok && !strings.Contains(name, "/") {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out, nil
}
func (s *oaSource) set(path string, data map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs[path] = data
}
func (s *oaSource) del(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.recs, path)
}

// jwkJSON is the public JWK of key (a private or public key, or []byte) as a JSON object.
func jwkJSON(t testing.TB, key any, kid, alg string) map[string]any {
	t.Helper()
	j := jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: alg}
	if !j.IsPublic() {
		if _, sym := key.([]byte); !sym {
			j = j.Public()
		}
	}
	b, err := j.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func jwksJSON(t testing.TB, keys ...map[string]any) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The issuers of the tests.
const (
	docsIssuer    = "https://docs.example.com"
	partnerIssuer = "https://partner.example.com"
	otherIssuer   = "https://other.example.com"
)

// oaEnv is a verifier over a real Store over an in-memory source, with a test clock:
//
//   - site docs: its own issuer (docsIssuer, audience "docs") with keys k-rsa (RSA, no alg:
//     RS256 and PS256), k-rs (the same RSA key, alg RS256 only), k-ec (ES256), k-ed (EdDSA),
//     k-hs (oct, HS256); and the external issuer "partner" (partnerIssuer, audience
//     "docs-api") with key k-partner (RSA, RS256);
//   - site other: its own issuer (otherIssuer, audience "other") with key k-other (EC).
type oaEnv struct {
	t     testing.TB
	clock *oaClock
	src   *oaSource
	store *vault.Store
	reg   *prometheus.Registry
	v     *OAuthVerifier
	docs  *SiteSettings
	other *SiteSettings
}

func newOAEnv(t testing.TB) *oaEnv {
	t.Helper()
	k := oaKeySet()
	e := &oaEnv{t: t, clock: newOAClock(), src: &oaSource{recs: map[string]map[string]any{}}}
	e.src.set("sites/docs/oauth", map[string]any{"issuer": docsIssuer, "audience": "docs",
		"jwks": jwksJSON(t,
			jwkJSON(t, k.rsa, "k-rsa", ""),
			jwkJSON(t, k.rsa, "k-rs", "RS256"),
			jwkJSON(t, k.ec, "k-ec", "ES256"),
			jwkJSON(t, k.ed, "k-ed", ""),
			jwkJSON(t, k.hs, "k-hs", "HS256"),
		)})
	e.src.set("sites/docs/issuers/partner", map[string]any{"issuer": partnerIssuer, "audience": "docs-api",
		"jwks": jwksJSON(t, jwkJSON(t, k.partner, "k-partner", "RS256"))})
	e.src.set("sites/other/oauth", map[string]any{"issuer": otherIssuer, "audience": "other",
		"jwks": jwksJSON(t, jwkJSON(t, k.ecOther, "k-other", ""))})
	store, err := vault.NewStore(e.src, vault.StoreOptions{Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	e.store = store
	e.reg = prometheus.NewRegistry()
	metrics, err := NewOAuthMetrics(e.reg)
	if err != nil {
		t.Fatal(err)
	}
	jm, err := jwks.NewMetrics(e.reg)
	if err != nil {
		t.Fatal(err)
	}
	cache, err := NewVerifiedTokens(0, metrics)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cache.Close)
	e.v = &OAuthVerifier{Keys: store, Now: e.clock.Now, Metrics: metrics, Cache: cache, MaxCacheAge: store.Refresh(),
		Logger: slog.New(slog.DiscardHandler),
		JWKS:   jwks.NewCache(jwks.Options{Now: e.clock.Now, Metrics: jm, Logger: slog.New(slog.DiscardHandler)})}
	e.docs, e.other = testSite("docs"), testSite("other")
	return e
}

// verify runs the verifier and waits for the token cache to settle, so a following call sees
// what this one cached.
func (e *oaEnv) verify(site *SiteSettings, tok string) (Identity, error) {
	id, err := e.v.Verify(context.Background(), site, tok)
	e.v.Cache.Wait()
	return id, err
}

// counter reads a counter of the env's registry (0 when absent).
func (e *oaEnv) counter(name string, labels ...string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// claims returns valid claims of docs' own issuer, with changes applied (a nil value deletes
// the claim).
func (e *oaEnv) claims(changes map[string]any) map[string]any {
	now := e.clock.Now()
	c := map[string]any{
		"iss": docsIssuer, "aud": "docs", "sub": "user-1", "client_id": "app-1",
		"scope": "read write", "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
	for k, v := range changes {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// mint signs claims with key (private key or []byte) under kid and alg.
func mint(t testing.TB, key any, kid, alg string, claims map[string]any) string {
	t.Helper()
	tok, err := MintJWT(jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: alg}, claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// rawJWT builds a token with any header: header and claims as given (a string is used as the
// raw JSON), signed by sign over the signing input (nil: empty signature).
func rawJWT(t testing.TB, header, claims any, sign func(input string) []byte) string {
	t.Helper()
	enc := func(v any) string {
		if s, ok := v.(string); ok {
			return b64url([]byte(s))
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b64url(b)
	}
	input := enc(header) + "." + enc(claims)
	var sig []byte
	if sign != nil {
		sig = sign(input)
	}
	return input + "." + b64url(sig)
}

// signWith returns a signer for rawJWT: key (a private key, or []byte for HS256) with alg,
// computed over the exact signing input.
func signWith(t testing.TB, key any, alg string) func(string) []byte {
	return func(input string) []byte {
		t.Helper()
		return rawSign(t, key, alg, input)
	}
}

// rawSign signs input as JWS alg does (RFC 7518 §3), with crypto/* directly.
func rawSign(t testing.TB, key any, alg, input string) []byte {
	t.Helper()
	var sig []byte
	var err error
	switch alg {
	case "RS256":
		h := sha256.Sum256([]byte(input))
		sig, err = rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, h[:])
	case "PS256":
		h := sha256.Sum256([]byte(input))
		sig, err = rsa.SignPSS(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, h[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case "ES256", "ES384":
		k := key.(*ecdsa.PrivateKey)
		size := (k.Curve.Params().BitSize + 7) / 8
		var digest []byte
		if alg == "ES256" {
			h := sha256.Sum256([]byte(input))
			digest = h[:]
		} else {
			h := sha512.Sum384([]byte(input))
			digest = h[:]
		}
		r, s, serr := ecdsa.Sign(rand.Reader, k, digest)
		if serr != nil {
			t.Fatal(serr)
		}
		sig = make([]byte, 2*size)
		r.FillBytes(sig[:size])
		s.FillBytes(sig[size:])
	case "EdDSA":
		sig = ed25519.Sign(key.(ed25519.PrivateKey), []byte(input))
	case "HS256":
		m := hmac.New(sha256.New, key.([]byte))
		m.Write([]byte(input))
		sig = m.Sum(nil)
	default:
		t.Fatalf("rawSign: alg %q", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// reasonAndHeaders returns a verifier error's reason and headers.
func reasonAndHeaders(t *testing.T, err error) (reason.Reason, map[string]string) {
	t.Helper()
	if err == nil {
		return "", nil
	}
	var e *reason.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not a *reason.Error", err)
	}
	return e.Reason, e.Headers
}

// ---- the rules ----

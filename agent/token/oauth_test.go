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
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"runtime"
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
	"github.com/tokenagent/tokenagent/vault/file/filetest"
	"github.com/tokenagent/tokenagent/vault/jwks"
)

// ---- test keys, clock, key source ----

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

func TestOAuthVerify(t *testing.T) {
	e := newOAEnv(t)
	k := oaKeySet()
	now := e.clock.Now()
	c := e.claims
	type tc struct {
		name string
		site *SiteSettings
		tok  string
		want reason.Reason
		// checks on success
		user, client string
		app          bool
		scopes       []string
	}
	cases := []tc{
		{name: "RS256", tok: mint(t, k.rsa, "k-rsa", "RS256", c(nil)), user: "user-1", client: "app-1", scopes: []string{"read", "write"}},
		{name: "PS256 with an RSA key whose JWK has no alg", tok: mint(t, k.rsa, "k-rsa", "PS256", c(nil)), user: "user-1", client: "app-1", scopes: []string{"read", "write"}},
		{name: "RS256 key refuses PS256", tok: mint(t, k.rsa, "k-rs", "PS256", c(nil)), want: reason.UnsupportedAlgorithm},
		{name: "RS256 key with alg RS256", tok: mint(t, k.rsa, "k-rs", "RS256", c(nil)), user: "user-1", client: "app-1", scopes: []string{"read", "write"}},
		{name: "ES256", tok: mint(t, k.ec, "k-ec", "ES256", c(nil)), user: "user-1", client: "app-1", scopes: []string{"read", "write"}},
		{name: "EdDSA", tok: mint(t, k.ed, "k-ed", "EdDSA", c(nil)), user: "user-1", client: "app-1", scopes: []string{"read", "write"}},
		{name: "HS256 with a stored oct key", tok: mint(t, k.hs, "k-hs", "HS256", c(nil)), user: "user-1", client: "app-1", scopes: []string{"read", "write"}},
		{name: "no kid: the key that allows the alg", tok: mint(t, k.ec, "", "ES256", c(nil)), user: "user-1", client: "app-1", scopes: []string{"read", "write"}},
		{name: "external issuer", tok: mint(t, k.partner, "k-partner", "RS256", c(map[string]any{"iss": partnerIssuer, "aud": "docs-api"})), user: "user-1", client: "app-1", scopes: []string{"read", "write"}},
		{name: "application token: sub == client_id", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"sub": "app-1"})), client: "app-1", app: true, scopes: []string{"read", "write"}},
		{name: "application token: client_id, no sub", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"sub": nil})), client: "app-1", app: true, scopes: []string{"read", "write"}},
		{name: "user token without client_id", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"client_id": nil})), user: "user-1", scopes: []string{"read", "write"}},
		{name: "neither sub nor client_id", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"sub": nil, "client_id": nil})), want: reason.MalformedToken},
		{name: "aud array holding the audience", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"aud": []string{"elsewhere", "docs"}})), user: "user-1", client: "app-1", scopes: []string{"read", "write"}},
		{name: "aud array without the audience", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"aud": []string{"elsewhere", "docs-api"}})), want: reason.InvalidAudience},
		{name: "aud of another issuer", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"aud": "docs-api"})), want: reason.InvalidAudience},
		{name: "aud missing", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"aud": nil})), want: reason.InvalidAudience},
		{name: "aud empty array", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"aud": []string{}})), want: reason.InvalidAudience},
		{name: "aud a number", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"aud": 7})), want: reason.MalformedToken},
		{name: "exp missing", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"exp": nil})), want: reason.MalformedToken},
		{name: "exp a string", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"exp": fmt.Sprint(now.Add(time.Hour).Unix())})), want: reason.MalformedToken},
		{name: "exp null", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"exp": json.RawMessage("null")})), want: reason.MalformedToken},
		{name: "exp huge", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"exp": 1e300})), want: reason.MalformedToken},
		{name: "exp fractional", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"exp": float64(now.Unix()) + 600.5})), user: "user-1", client: "app-1", scopes: []string{"read", "write"}},
		{name: "expired beyond the leeway", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"exp": now.Add(-61 * time.Second).Unix()})), want: reason.TokenExpired},
		{name: "expired within the leeway", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"exp": now.Add(-59 * time.Second).Unix()})), user: "user-1", client: "app-1", scopes: []string{"read", "write"}},
		{name: "nbf beyond the leeway", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"nbf": now.Add(61 * time.Second).Unix()})), want: reason.TokenNotYetValid},
		{name: "nbf within the leeway", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"nbf": now.Add(59 * time.Second).Unix()})), user: "user-1", client: "app-1", scopes: []string{"read", "write"}},
		{name: "iat beyond the leeway", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"iat": now.Add(61 * time.Second).Unix()})), want: reason.TokenNotYetValid},
		{name: "iat within the leeway", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"iat": now.Add(59 * time.Second).Unix()})), user: "user-1", client: "app-1", scopes: []string{"read", "write"}},
		{name: "no nbf, no iat", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"nbf": nil, "iat": nil})), user: "user-1", client: "app-1", scopes: []string{"read", "write"}},
		{name: "unknown issuer", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"iss": "https://evil.example.com"})), want: reason.UnknownIssuer},
		{name: "no iss", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"iss": nil})), want: reason.UnknownIssuer},
		{name: "iss differing in case", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"iss": strings.ToUpper(docsIssuer)})), want: reason.UnknownIssuer},
		{name: "iss with a trailing slash", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"iss": docsIssuer + "/"})), want: reason.UnknownIssuer},
		{name: "iss a number", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"iss": 1})), want: reason.MalformedToken},
		{name: "another site's token", tok: mint(t, k.ecOther, "k-other", "ES256", c(map[string]any{"iss": otherIssuer, "aud": "other"})), want: reason.UnknownIssuer},
		{name: "another site's token at that site", site: e.other, tok: mint(t, k.ecOther, "k-other", "ES256", c(map[string]any{"iss": otherIssuer, "aud": "other"})), user: "user-1", client: "app-1", scopes: []string{"read", "write"}},
		{name: "docs token at site other", site: e.other, tok: mint(t, k.ec, "k-ec", "ES256", c(nil)), want: reason.UnknownIssuer},
		{name: "unknown kid", tok: mint(t, k.ec, "k-nope", "ES256", c(nil)), want: reason.UnknownKey},
		{name: "scp array", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"scope": nil, "scp": []string{"a", "b"}})), user: "user-1", client: "app-1", scopes: []string{"a", "b"}},
		{name: "scope split on U+0020 only", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"scope": "read\u00a0write  admin\u2003x"})), user: "user-1", client: "app-1", scopes: []string{"read\u00a0write", "admin\u2003x"}},
		{name: "scp string", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"scope": nil, "scp": "a b"})), user: "user-1", client: "app-1", scopes: []string{"a", "b"}},
		{name: "scope wins over scp", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"scope": "x", "scp": []string{"a"}})), user: "user-1", client: "app-1", scopes: []string{"x"}},
		{name: "scope with repeated spaces", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"scope": "  read   write "})), user: "user-1", client: "app-1", scopes: []string{"read", "write"}},
		{name: "no scope", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"scope": nil})), user: "user-1", client: "app-1"},
		{name: "scp of numbers", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"scope": nil, "scp": []int{1}})), want: reason.MalformedToken},
		{name: "scope a list", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"scope": []string{"read"}})), want: reason.MalformedToken},
		{name: "scope with a control character", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"scope": "read\nx-auth-user: 1"})), want: reason.MalformedToken},
		{name: "sub with a newline", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"sub": "1\r\nx-auth-elevated: true"})), want: reason.MalformedToken},
		{name: "client_id with a NUL", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"client_id": "app\x00"})), want: reason.MalformedToken},
		{name: "sub a number", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"sub": 12})), want: reason.MalformedToken},
		{name: "unicode sub", tok: mint(t, k.ec, "k-ec", "ES256", c(map[string]any{"sub": "zoë"})), user: "zoë", client: "app-1", scopes: []string{"read", "write"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			site := tc.site
			if site == nil {
				site = e.docs
			}
			id, err := e.verify(site, tc.tok)
			got, headers := reasonAndHeaders(t, err)
			if got != tc.want {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.want)
			}
			if tc.want != "" {
				if headers["WWW-Authenticate"] == "" {
					t.Errorf("a 401 without WWW-Authenticate: %v", headers)
				}
				if id.Kind != "" || id.User != "" || id.ClientID != "" {
					t.Errorf("a denial returned an identity: %+v", id)
				}
				return
			}
			if id.Kind != KindOAuth || id.User != tc.user || id.ClientID != tc.client || id.Application != tc.app ||
				!slices.Equal(id.Scopes, tc.scopes) {
				t.Fatalf("identity %+v, want user %q client %q app %v scopes %v", id, tc.user, tc.client, tc.app, tc.scopes)
			}
			if id.Expires.IsZero() {
				t.Error("Expires not set")
			}
			if tc.app && (id.HasUser() || !id.Authenticated()) {
				t.Errorf("an application token: HasUser %v Authenticated %v", id.HasUser(), id.Authenticated())
			}
		})
	}
}

func TestOAuthExpiredChallenge(t *testing.T) {
	e := newOAEnv(t)
	tok := mint(t, oaKeySet().ec, "k-ec", "ES256", e.claims(map[string]any{"exp": e.clock.Now().Add(-time.Hour).Unix()}))
	_, err := e.verify(e.docs, tok)
	r, h := reasonAndHeaders(t, err)
	if r != reason.TokenExpired || r.Status() != http.StatusUnauthorized {
		t.Fatalf("reason %q status %d", r, r.Status())
	}
	if want := `Bearer error="invalid_token", error_description="token expired"`; h["WWW-Authenticate"] != want {
		t.Fatalf("WWW-Authenticate %q, want %q", h["WWW-Authenticate"], want)
	}
}

func TestOAuthExpires(t *testing.T) {
	e := newOAEnv(t)
	exp := e.clock.Now().Add(10 * time.Minute).Truncate(time.Second)
	id, err := e.verify(e.docs, mint(t, oaKeySet().ed, "k-ed", "EdDSA", e.claims(map[string]any{"exp": exp.Unix()})))
	if err != nil {
		t.Fatal(err)
	}
	if !id.Expires.Equal(exp) {
		t.Fatalf("Expires %v, want %v", id.Expires, exp)
	}
}

func TestOAuthHeaderTypes(t *testing.T) {
	e := newOAEnv(t)
	k := oaKeySet()
	claims := e.claims(nil)
	for _, tc := range []struct {
		typ  any
		cty  any
		want reason.Reason
	}{
		{typ: nil},
		{typ: "JWT"},
		{typ: "at+jwt"},
		{typ: "application/at+JWT"},
		{typ: "JOSE"},
		{typ: "dpop+jwt", want: reason.MalformedToken},
		{typ: "logout+jwt", want: reason.MalformedToken},
		{typ: "application/secevent+jwt", want: reason.MalformedToken},
		{typ: 7, want: reason.MalformedToken},
		{cty: "JWT", want: reason.MalformedToken},
		{cty: "jwt", want: reason.MalformedToken},
		{cty: "json"},
	} {
		t.Run(fmt.Sprintf("typ=%v,cty=%v", tc.typ, tc.cty), func(t *testing.T) {
			h := map[string]any{"alg": "ES256", "kid": "k-ec"}
			if tc.typ != nil {
				h["typ"] = tc.typ
			}
			if tc.cty != nil {
				h["cty"] = tc.cty
			}
			_, err := e.verify(e.docs, rawJWT(t, h, claims, signWith(t, k.ec, "ES256")))
			if got, _ := reasonAndHeaders(t, err); got != tc.want {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.want)
			}
		})
	}
}

func TestOAuthSizeLimit(t *testing.T) {
	e := newOAEnv(t)
	k := oaKeySet()
	// A valid token padded with a claim to exactly MaxJWTLen, and one byte more.
	base := mint(t, k.ec, "k-ec", "ES256", e.claims(map[string]any{"pad": ""}))
	var atLimit string
	for n := (MaxJWTLen - len(base)) * 3 / 4; n > 0; n-- {
		tok := mint(t, k.ec, "k-ec", "ES256", e.claims(map[string]any{"pad": strings.Repeat("p", n)}))
		if len(tok) <= MaxJWTLen {
			atLimit = tok
			break
		}
	}
	if len(atLimit) < MaxJWTLen-8 {
		t.Fatalf("could not build a token near the limit (%d bytes)", len(atLimit))
	}
	if _, err := e.verify(e.docs, atLimit); err != nil {
		t.Fatalf("a %d-byte token: %v", len(atLimit), err)
	}
	over := mint(t, k.ec, "k-ec", "ES256", e.claims(map[string]any{"pad": strings.Repeat("p", MaxJWTLen)}))
	if _, err := e.verify(e.docs, over); reasonOf(t, err) != reason.MalformedToken {
		t.Fatalf("a %d-byte token: %v", len(over), err)
	}
	if _, err := e.verify(e.docs, ""); reasonOf(t, err) != reason.MalformedToken {
		t.Fatalf("empty token: %v", err)
	}
}

// ---- the verified-token cache ----

func TestOAuthTokenCache(t *testing.T) {
	e := newOAEnv(t)
	tok := mint(t, oaKeySet().rsa, "k-rsa", "RS256", e.claims(nil))
	first, err := e.verify(e.docs, tok)
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.verify(e.docs, tok)
	if err != nil {
		t.Fatal(err)
	}
	if first.User != second.User || !slices.Equal(first.Scopes, second.Scopes) || !first.Expires.Equal(second.Expires) {
		t.Fatalf("cached identity %+v differs from %+v", second, first)
	}
	if n := e.counter("tokenagent_oauth_verifications_total", "result", "ok"); n != 1 {
		t.Fatalf("%v full verifications, want 1 (the second is a cache hit)", n)
	}
	if n := e.counter("tokenagent_oauth_token_cache_total", "result", "hit"); n != 1 {
		t.Fatalf("%v cache hits, want 1", n)
	}
	// The same token at another site is not a hit there.
	if _, err := e.verify(e.other, tok); reasonOf(t, err) != reason.UnknownIssuer {
		t.Fatalf("docs token at other: %v", err)
	}
	// A near-identical token (one more character) is no hit.
	if _, err := e.verify(e.docs, tok+"A"); err == nil {
		t.Fatal("a changed token verified")
	}
}

func TestOAuthTokenCacheSkipped(t *testing.T) {
	e := newOAEnv(t)
	e.v.Cache = nil // every token verified in full
	tok := mint(t, oaKeySet().ec, "k-ec", "ES256", e.claims(nil))
	for range 3 {
		if _, err := e.verify(e.docs, tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.counter("tokenagent_oauth_verifications_total", "result", "ok"); n != 3 {
		t.Fatalf("%v full verifications, want 3", n)
	}
}

func TestOAuthCachedTokenExpires(t *testing.T) {
	e := newOAEnv(t)
	tok := mint(t, oaKeySet().ec, "k-ec", "ES256", e.claims(map[string]any{"exp": e.clock.Now().Add(10 * time.Second).Unix()}))
	if _, err := e.verify(e.docs, tok); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(69 * time.Second) // exp + 59 s: inside the leeway
	if _, err := e.verify(e.docs, tok); err != nil {
		t.Fatalf("inside the leeway: %v", err)
	}
	e.clock.Advance(2 * time.Second)
	_, err := e.verify(e.docs, tok)
	if r, h := reasonAndHeaders(t, err); r != reason.TokenExpired || !strings.Contains(h["WWW-Authenticate"], "token expired") {
		t.Fatalf("after exp + leeway: %v %v", err, h)
	}
}

func TestOAuthRevocation(t *testing.T) {
	k := oaKeySet()
	t.Run("key removed from the site's issuer", func(t *testing.T) {
		e := newOAEnv(t)
		tok := mint(t, k.ec, "k-ec", "ES256", e.claims(nil))
		if _, err := e.verify(e.docs, tok); err != nil {
			t.Fatal(err)
		}
		e.src.set("sites/docs/oauth", map[string]any{"issuer": docsIssuer, "audience": "docs",
			"jwks": jwksJSON(t, jwkJSON(t, k.ed, "k-ed", ""))})
		e.clock.Advance(e.store.Refresh() + time.Second)
		if _, err := e.verify(e.docs, tok); reasonOf(t, err) != reason.UnknownKey {
			t.Fatalf("after the key's removal and one refresh interval: %v", err)
		}
	})
	t.Run("site issuer deleted", func(t *testing.T) {
		e := newOAEnv(t)
		tok := mint(t, k.ec, "k-ec", "ES256", e.claims(nil))
		if _, err := e.verify(e.docs, tok); err != nil {
			t.Fatal(err)
		}
		e.src.del("sites/docs/oauth")
		e.clock.Advance(e.store.Refresh() + time.Second)
		if _, err := e.verify(e.docs, tok); reasonOf(t, err) != reason.UnknownIssuer {
			t.Fatalf("after the record's deletion: %v", err)
		}
	})
	t.Run("external issuer deleted", func(t *testing.T) {
		e := newOAEnv(t)
		tok := mint(t, k.partner, "k-partner", "RS256", e.claims(map[string]any{"iss": partnerIssuer, "aud": "docs-api"}))
		if _, err := e.verify(e.docs, tok); err != nil {
			t.Fatal(err)
		}
		if _, err := e.verify(e.docs, tok); err != nil {
			t.Fatal(err)
		}
		e.src.del("sites/docs/issuers/partner")
		e.clock.Advance(e.store.Refresh() + time.Second)
		if _, err := e.verify(e.docs, tok); reasonOf(t, err) != reason.UnknownIssuer {
			t.Fatalf("after the record's deletion: %v", err)
		}
	})
	t.Run("audience changed", func(t *testing.T) {
		e := newOAEnv(t)
		tok := mint(t, k.ec, "k-ec", "ES256", e.claims(nil))
		if _, err := e.verify(e.docs, tok); err != nil {
			t.Fatal(err)
		}
		e.src.set("sites/docs/oauth", map[string]any{"issuer": docsIssuer, "audience": "docs-v2",
			"jwks": jwksJSON(t, jwkJSON(t, k.ec, "k-ec", ""))})
		e.clock.Advance(e.store.Refresh() + time.Second)
		if _, err := e.verify(e.docs, tok); reasonOf(t, err) != reason.InvalidAudience {
			t.Fatalf("after the audience changed: %v", err)
		}
	})
	t.Run("unchanged record keeps verifying across refreshes", func(t *testing.T) {
		e := newOAEnv(t)
		tok := mint(t, k.ec, "k-ec", "ES256", e.claims(nil))
		for range 4 {
			if _, err := e.verify(e.docs, tok); err != nil {
				t.Fatal(err)
			}
			e.clock.Advance(e.store.Refresh())
		}
	})
}

// ---- key sets in records ----

func TestOAuthUnusableStoredKeys(t *testing.T) {
	e := newOAEnv(t)
	k := oaKeySet()
	shortHS := jwkJSON(t, []byte("short"), "k-short", "HS256")
	noAlgHS := jwkJSON(t, k.hs, "k-hs-noalg", "")
	encKey := jwkJSON(t, k.ec, "k-enc", "")
	encKey["use"] = "enc"
	opsKey := jwkJSON(t, k.ed, "k-ops", "")
	opsKey["key_ops"] = []string{"encrypt"}
	mismatch := jwkJSON(t, k.ec, "k-mismatch", "")
	mismatch["alg"] = "RS256"
	private := jwkJSON(t, k.rsa, "k-private", "")
	priv, err := (&jose.JSONWebKey{Key: k.ed, KeyID: "k-ed-private"}).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var privMap map[string]any
	_ = json.Unmarshal(priv, &privMap)
	_ = private
	e.src.set("sites/docs/oauth", map[string]any{"issuer": docsIssuer, "audience": "docs",
		"jwks": jwksJSON(t,
			jwkJSON(t, k.weakRSA, "k-weak", "RS256"),
			jwkJSON(t, k.p384, "k-p384", ""),
			shortHS, noAlgHS, encKey, opsKey, mismatch,
			map[string]any{"kty": "XYZ", "kid": "k-alien"},
			privMap,
		)})
	for _, tc := range []struct {
		name string
		tok  string
		want reason.Reason
	}{
		{"RSA under 2048 bits", mint(t, k.weakRSA, "k-weak", "RS256", e.claims(nil)), reason.UnknownKey},
		{"P-384 key", rawJWT(t, map[string]any{"alg": "ES384", "kid": "k-p384"}, e.claims(nil), signWith(t, k.p384, "ES384")), reason.UnsupportedAlgorithm},
		{"P-384 key claimed as ES256", rawJWT(t, map[string]any{"alg": "ES256", "kid": "k-p384"}, e.claims(nil), signWith(t, k.p384, "ES384")), reason.UnknownKey},
		{"short HS256 key", rawJWT(t, map[string]any{"alg": "HS256", "kid": "k-short"}, e.claims(nil), signWith(t, []byte("short"), "HS256")), reason.UnknownKey},
		{"oct key without alg", mint(t, k.hs, "k-hs-noalg", "HS256", e.claims(nil)), reason.UnknownKey},
		{"use enc", mint(t, k.ec, "k-enc", "ES256", e.claims(nil)), reason.UnknownKey},
		{"key_ops without verify", mint(t, k.ed, "k-ops", "EdDSA", e.claims(nil)), reason.UnknownKey},
		{"alg not fitting the key", mint(t, k.ec, "k-mismatch", "ES256", e.claims(nil)), reason.UnknownKey},
		{"stored private key: its public half verifies", mint(t, k.ed, "k-ed-private", "EdDSA", e.claims(nil)), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.verify(e.docs, tc.tok)
			if got := reasonOf(t, err); got != tc.want {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.want)
			}
		})
	}
	w := strings.Join(e.v.Warnings(), "\n")
	for _, want := range []string{`"k-weak"`, `"k-p384"`, `"k-short"`, `"k-hs-noalg"`, `"k-enc"`, `"k-ops"`, `"k-mismatch"`, `"k-alien"`} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings do not name %s:\n%s", want, w)
		}
	}
	if strings.Contains(w, string(k.hs)) || strings.Contains(w, b64url(k.hs)) {
		t.Error("a warning holds key material")
	}
}

// The keys file source (YAML, jwks as a nested map) goes through the same path.
func TestOAuthFileSource(t *testing.T) {
	k := oaKeySet()
	key := jwkJSON(t, k.ed, "k-ed", "EdDSA")
	keyYAML, _ := json.Marshal(key) // JSON is YAML
	store := filetest.Store(t, `
sites:
  docs:
    oauth:
      issuer: "`+docsIssuer+`"
      audience: docs
      jwks: {keys: [`+string(keyYAML)+`]}
`, vault.StoreOptions{Now: func() time.Time { return testNow }})
	v := &OAuthVerifier{Keys: store, Now: func() time.Time { return testNow }, JWKS: jwks.NewCache(jwks.Options{})}
	claims := map[string]any{"iss": docsIssuer, "aud": "docs", "sub": "42", "exp": testNow.Add(time.Hour).Unix()}
	id, err := v.Verify(context.Background(), testSite("docs"), mint(t, k.ed, "k-ed", "EdDSA", claims))
	if err != nil || id.User != "42" {
		t.Fatalf("%+v %v", id, err)
	}
}

// ---- remote key sets ----

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

// A remote set that changed invalidates tokens cached with the old one.
func TestOAuthCacheFollowsRemoteSet(t *testing.T) {
	k := oaKeySet()
	e := newOAEnv(t)
	is := newOAIssuer(t, jwksJSON(t, jwkJSON(t, k.partner, "r1", "RS256")))
	e.withRemote(is.srv.URL + "/jwks.json")
	r1 := mint(t, k.partner, "r1", "RS256", e.cxoneClaims())
	if _, err := e.verify(e.docs, r1); err != nil {
		t.Fatal(err)
	}
	is.serve(http.StatusOK, jwksJSON(t, jwkJSON(t, k.ed, "r2", "")))
	e.clock.Advance(31 * time.Second)
	// r2 forces a refetch; the new set no longer holds r1.
	if _, err := e.verify(e.docs, mint(t, k.ed, "r2", "EdDSA", e.cxoneClaims())); err != nil {
		t.Fatal(err)
	}
	if _, err := e.verify(e.docs, r1); reasonOf(t, err) != reason.UnknownKey {
		t.Fatalf("a token cached with a withdrawn key: %v", err)
	}
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

func TestMintJWT(t *testing.T) {
	k := oaKeySet()
	claims := map[string]any{"iss": docsIssuer, "aud": "docs", "sub": "1", "exp": testNow.Add(time.Hour).Unix()}
	for _, tc := range []struct {
		key     any
		alg     string
		wantAlg string
		wantErr bool
	}{
		{key: k.rsa, wantAlg: "RS256"},
		{key: k.rsa, alg: "PS256", wantAlg: "PS256"},
		{key: k.ec, wantAlg: "ES256"},
		{key: k.ed, wantAlg: "EdDSA"},
		{key: k.hs, wantAlg: "HS256"},
		{key: &k.rsa.PublicKey, wantErr: true},
		{key: k.rsa, alg: "RS512", wantErr: true},
	} {
		tok, err := MintJWT(jose.JSONWebKey{Key: tc.key, KeyID: "kid-1", Algorithm: tc.alg}, claims)
		if tc.wantErr {
			if err == nil {
				t.Errorf("%T %s: no error", tc.key, tc.alg)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%T: %v", tc.key, err)
		}
		jws, err := jose.ParseSignedCompact(tok, jwks.Algorithms())
		if err != nil {
			t.Fatal(err)
		}
		h := jws.Signatures[0].Header
		if h.Algorithm != tc.wantAlg || h.KeyID != "kid-1" || h.ExtraHeaders["typ"] != "at+jwt" {
			t.Errorf("%T: header %+v", tc.key, h)
		}
	}
}

// ---- fuzzing ----

// FuzzOAuthParse fuzzes the splitter and the header and claims parsing: whatever it accepts is
// a canonical three-segment JWS with an accepted alg.
func FuzzOAuthParse(f *testing.F) {
	e := newOAEnv(f)
	k := oaKeySet()
	for _, tok := range oaSeeds(f, e, k) {
		f.Add(tok)
	}
	strict := base64.RawURLEncoding.Strict()
	f.Fuzz(func(t *testing.T, tok string) {
		lastDot, ok := splitJWT(tok)
		if ok {
			parts := strings.Split(tok, ".")
			if len(parts) != 3 || parts[0] == "" || parts[1] == "" || lastDot != len(parts[0])+1+len(parts[1]) {
				t.Fatalf("splitJWT accepted %q", tok)
			}
			for _, p := range parts {
				if _, err := strict.DecodeString(p); err != nil {
					t.Fatalf("splitJWT accepted a non-canonical segment %q: %v", p, err)
				}
			}
		}
		p, rerr := parseJWS(tok, accessTokenKind)
		if rerr != nil {
			if rerr.Reason != reason.MalformedToken && rerr.Reason != reason.UnsupportedAlgorithm {
				t.Fatalf("parse refused with %q", rerr.Reason)
			}
			return
		}
		if !ok || !jwks.Accepts(jose.SignatureAlgorithm(p.alg)) || p.input != tok[:lastDot] {
			t.Fatalf("parseJWS accepted %q (alg %q)", tok, p.alg)
		}
	})
}

// FuzzOAuthVerify fuzzes the whole verifier against the test keys. A token it accepts must be
// one go-jose also verifies with the key its kid names, and every refusal is a known reason.
func FuzzOAuthVerify(f *testing.F) {
	e := newOAEnv(f)
	e.v.Cache = nil // every token verified in full
	k := oaKeySet()
	for _, tok := range oaSeeds(f, e, k) {
		f.Add(tok)
	}
	pub := map[string]any{"k-rsa": &k.rsa.PublicKey, "k-rs": &k.rsa.PublicKey, "k-ec": &k.ec.PublicKey,
		"k-ed": k.ed.Public(), "k-hs": k.hs, "k-partner": &k.partner.PublicKey}
	known := map[reason.Reason]bool{}
	for _, r := range reason.All() {
		known[r] = true
	}
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := e.v.Verify(context.Background(), e.docs, tok)
		if err != nil {
			var re *reason.Error
			if !errors.As(err, &re) || !known[re.Reason] || re.Reason == reason.KeysUnavailable {
				t.Fatalf("refused with %v", err)
			}
			return
		}
		if id.Kind != KindOAuth || id.Expires.IsZero() || (id.User == "" && id.ClientID == "") {
			t.Fatalf("accepted with identity %+v", id)
		}
		jws, perr := jose.ParseSignedCompact(tok, jwks.Algorithms())
		if perr != nil {
			t.Fatalf("accepted a token go-jose cannot parse: %v", perr)
		}
		kid := jws.Signatures[0].Header.KeyID
		candidates := []any{pub[kid]}
		if kid == "" {
			candidates = slices.Collect(maps.Values(pub))
		}
		for _, key := range candidates {
			if key == nil {
				continue
			}
			if _, verr := jws.Verify(key); verr == nil {
				return
			}
		}
		t.Fatalf("accepted a token go-jose does not verify (kid %q)", kid)
	})
}

// oaSeeds are the fuzz seeds: valid tokens of every algorithm and near misses.
func oaSeeds(t testing.TB, e *oaEnv, k *oaKeys) []string {
	c := e.claims(nil)
	rs := mint(t, k.rsa, "k-rsa", "RS256", c)
	return []string{
		rs,
		mint(t, k.rsa, "k-rsa", "PS256", c),
		mint(t, k.ec, "k-ec", "ES256", c),
		mint(t, k.ed, "k-ed", "EdDSA", c),
		mint(t, k.hs, "k-hs", "HS256", c),
		mint(t, k.ec, "", "ES256", e.claims(map[string]any{"aud": []string{"x", "docs"}, "sub": "app-1"})),
		mint(t, k.partner, "k-partner", "RS256", e.claims(map[string]any{"iss": partnerIssuer, "aud": "docs-api"})),
		rawJWT(t, map[string]any{"alg": "none"}, c, nil),
		rawJWT(t, map[string]any{"alg": "HS256", "kid": "k-rsa"}, c, signWith(t, k.rsa.N.Bytes(), "HS256")),
		rawJWT(t, map[string]any{"alg": "ES256", "kid": "k-ec", "crit": []string{"b64"}, "b64": false}, c, signWith(t, k.ec, "ES256")),
		rawJWT(t, map[string]any{"alg": "ES256", "kid": "k-ec", "jku": "https://evil.example/jwks"}, c, signWith(t, k.ec, "ES256")),
		strings.TrimSuffix(rs, rs[strings.LastIndexByte(rs, '.'):]),
		rs + ".AAAA.AAAA",
		"",
		"..",
		"e30.e30.",
	}
}

// ---- the claims parser ----

func TestParseClaims(t *testing.T) {
	for _, tc := range []struct {
		name    string
		payload string
		ok      bool
		check   func(c *accessClaims) bool
	}{
		{"minimal", `{"iss":"a","exp":1}`, true, func(c *accessClaims) bool { return c.Iss == "a" && c.Exp.set && c.Exp.secs == 1 }},
		{"whitespace everywhere", " \t\n{ \"iss\" : \"a\" ,\r\n \"aud\" : [ \"x\" , \"y\" ] } \n", true,
			func(c *accessClaims) bool { return c.Iss == "a" && slices.Equal(c.Aud.many, []string{"x", "y"}) }},
		{"escaped key names the claim", `{"\u0069ss":"a"}`, true, func(c *accessClaims) bool { return c.Iss == "a" }},
		{"escaped value", `{"sub":"a\"b\\c\/d\u00e9\ud83d\ude00"}`, true, func(c *accessClaims) bool { return c.Sub == "a\"b\\c/dé😀" }},
		{"unknown members of every type", `{"x":{"y":[1,-2.5e+3,true,false,null,"s",{}],"z":[]},"iss":"a"}`, true, func(c *accessClaims) bool { return c.Iss == "a" }},
		{"null claims are absent", `{"iss":null,"sub":null,"client_id":null,"scope":null,"aud":null,"scp":null}`, true,
			func(c *accessClaims) bool { return c.Iss == "" && c.Scope == nil && !c.Aud.set && !c.Scp.set }},
		{"fractional and exponent dates", `{"exp":1.5e9,"nbf":-0,"iat":1700000000.25}`, true,
			func(c *accessClaims) bool { return c.Exp.secs == 1.5e9 && c.Nbf.set && c.Iat.secs == 1700000000.25 }},
		{"case-variant names are other members", `{"ISS":"x","Aud":"y","EXP":1}`, true,
			func(c *accessClaims) bool { return c.Iss == "" && !c.Aud.set && !c.Exp.set }},
		{"duplicate unknown member", `{"x":1,"x":2}`, false, nil}, // go-jose's JSON refuses every duplicate
		{"empty object", `{}`, true, nil},
		{"duplicate iss", `{"iss":"a","iss":"b"}`, false, nil},
		{"duplicate via escape", `{"iss":"a","\u0069ss":"b"}`, false, nil},
		{"duplicate exp", `{"exp":1,"exp":2}`, false, nil},
		{"array", `["iss"]`, false, nil},
		{"string", `"iss"`, false, nil},
		{"empty", ``, false, nil},
		{"trailing garbage", `{"iss":"a"}x`, false, nil},
		{"two objects", `{}{}`, false, nil},
		{"trailing comma", `{"iss":"a",}`, false, nil},
		{"leading comma", `{,"iss":"a"}`, false, nil},
		{"missing colon", `{"iss" "a"}`, false, nil},
		{"single quotes", `{'iss':'a'}`, false, nil},
		{"bare key", `{iss:"a"}`, false, nil},
		{"unterminated", `{"iss":"a"`, false, nil},
		{"unterminated string", `{"iss":"a}`, false, nil},
		{"raw control character", "{\"iss\":\"a\tb\"}", false, nil},
		{"bad escape", `{"iss":"\x41"}`, false, nil},
		{"short unicode escape", `{"iss":"\u12"}`, false, nil},
		{"invalid UTF-8", "{\"iss\":\"\xff\"}", false, nil},
		{"invalid UTF-8 in an unknown member", "{\"x\":\"\xc3\x28\"}", false, nil},
		{"iss a number", `{"iss":1}`, false, nil},
		{"sub an object", `{"sub":{}}`, false, nil},
		{"aud a number", `{"aud":1}`, false, nil},
		{"aud list of numbers", `{"aud":[1]}`, false, nil},
		{"aud list with null", `{"aud":["a",null]}`, false, nil},
		{"aud list trailing comma", `{"aud":["a",]}`, false, nil},
		{"exp a string", `{"exp":"1"}`, false, nil},
		{"exp null", `{"exp":null}`, false, nil},
		{"exp true", `{"exp":true}`, false, nil},
		{"exp leading zero", `{"exp":01}`, false, nil},
		{"exp plus sign", `{"exp":+1}`, false, nil},
		{"exp bare dot", `{"exp":1.}`, false, nil},
		{"exp leading dot", `{"exp":.5}`, false, nil},
		{"exp bare exponent", `{"exp":1e}`, false, nil},
		{"exp hex", `{"exp":0x10}`, false, nil},
		{"exp NaN", `{"exp":NaN}`, false, nil},
		{"exp beyond 2^62", `{"exp":5e18}`, false, nil},
		{"exp below -2^62", `{"exp":-5e18}`, false, nil},
		{"deep nesting is only bounded by the token's size", `{"x":` + strings.Repeat("[", 400) + strings.Repeat("]", 400) + `}`, true, nil},
		{"bad literal", `{"x":nul}`, false, nil},
		{"NUL after the object", "{}\x00", false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c accessClaims
			ok := decodeClaims([]byte(tc.payload), &c)
			if ok != tc.ok {
				t.Fatalf("parseClaims = %v, want %v", ok, tc.ok)
			}
			if ok && tc.check != nil && !tc.check(&c) {
				t.Fatalf("claims %+v", c)
			}
		})
	}
}

// FuzzOAuthClaims checks decodeClaims against encoding/json: whatever it accepts is valid JSON
// whose claims (matched case-sensitively, as a map does) have the values it read.
func FuzzOAuthClaims(f *testing.F) {
	for _, s := range []string{`{"iss":"a","sub":"b","aud":["x","y"],"exp":1.5,"nbf":0,"iat":-1,"scope":"r w","client_id":"c"}`,
		`{"\u0069ss":"a","x":{"y":[null,true]}}`, `{"scp":["a","b"]}`, `{"scp":"a b"}`, `{"aud":"x"}`, `{}`, `[]`,
		`{"exp":1e3}`, `{"sub":"\ud83d\ude00"}`, `{"scope":"read\u00a0write"}`, "{\"scope\":\"read\u00a0write \u2003admin\"}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var c accessClaims
		if !decodeClaims(b, &c) {
			return
		}
		if !json.Valid(b) {
			t.Fatalf("accepted invalid JSON %q", b)
		}
		var m map[string]any
		d := json.NewDecoder(strings.NewReader(string(b)))
		d.UseNumber()
		if err := d.Decode(&m); err != nil {
			t.Fatalf("accepted %q that encoding/json cannot read as an object: %v", b, err)
		}
		str := func(k string) string { s, _ := m[k].(string); return s }
		if c.Iss != str("iss") || c.Sub != str("sub") || c.ClientID != str("client_id") || (c.Scope == nil) != (m["scope"] == nil) || (c.Scope != nil && *c.Scope != str("scope")) {
			t.Fatalf("strings differ: %+v vs %v", c, m)
		}
		for _, d := range []struct {
			k string
			n numericDate
		}{{"exp", c.Exp}, {"nbf", c.Nbf}, {"iat", c.Iat}} {
			v, present := m[d.k]
			if present != d.n.set {
				t.Fatalf("%s presence differs", d.k)
			}
			if present {
				f, err := v.(json.Number).Float64()
				if err != nil || f != d.n.secs {
					t.Fatalf("%s: %v vs %v", d.k, v, d.n.secs)
				}
			}
		}
		for _, a := range []struct {
			k string
			v audience
		}{{"aud", c.Aud}, {"scp", c.Scp}} {
			var want []string
			switch v := m[a.k].(type) {
			case string:
				want = []string{v}
			case []any:
				for _, e := range v {
					want = append(want, e.(string))
				}
			}
			got := a.v.many
			if a.v.one != "" || (a.v.set && a.v.many == nil && m[a.k] != nil && len(want) == 1) {
				got = []string{a.v.one}
			}
			if len(got) != len(want) || (len(want) > 0 && !slices.Equal(got, want)) {
				t.Fatalf("%s: %q vs %q", a.k, got, want)
			}
		}
	})
}

// A cached entry does not keep the issuer record it verified with alive: records change every
// refresh interval, and long-lived entries must not pile them up.
func TestOAuthCacheHoldsRecordsWeakly(t *testing.T) {
	e := newOAEnv(t)
	tok := mint(t, oaKeySet().ec, "k-ec", "ES256", e.claims(nil))
	if _, err := e.verify(e.docs, tok); err != nil {
		t.Fatal(err)
	}
	entry, ok := e.v.Cache.get(e.v.Cache.key("docs", tok), "docs", tok)
	if !ok || entry.rec.Value() == nil {
		t.Fatal("no cache entry")
	}
	// The store reads the (unchanged) record again: a new record value replaces the old one.
	e.clock.Advance(e.store.Refresh() + time.Second)
	if _, err := e.verify(e.docs, mint(t, oaKeySet().ed, "k-ed", "EdDSA", e.claims(nil))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { runtime.GC(); return entry.rec.Value() == nil })
	if _, err := e.verify(e.docs, tok); err != nil {
		t.Fatalf("a token whose cached record was collected: %v", err)
	}
}

package agent

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/exchange"
	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/agent/token/idtokentest"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file/filetest"
	"github.com/tokenagent/tokenagent/vault/users"
)

const exConfig = `
keys: {source: file, file: keys.yaml}
sites:
  - id: docs
    hosts: [docs.example.com]
    authtoken_ttl: 24h
    routes:
      - {path: "/private", require: user}
  - id: other
    hosts: [other.example.com]
  - id: nokey
    hosts: [nokey.example.com]
`

// exEnv is an agent whose site docs trusts these identity providers:
//   - corp: inline JWK Set with a key of every algorithm, default max_age;
//   - strict: another issuer, max_age 120 s, the same client_id;
//   - remote: a jwks_uri served by a loopback HTTP server (public keys only);
//   - down: a jwks_uri nobody answers.
//
// Site other trusts no provider; site nokey trusts corp but has no Auth Token key.
type exEnv struct {
	a            *Agent
	corp, strict *idtokentest.Provider
	remote, down *idtokentest.Provider
	dir          *users.File
	usersPath    string
	jwksHits     *int
	jwksMu       *sync.Mutex
}

func newExEnv(t testing.TB) *exEnv {
	t.Helper()
	e := &exEnv{
		corp:   idtokentest.NewProvider(t, "https://idp.example.com", "docs-app"),
		strict: idtokentest.NewProvider(t, "https://strict.example.com", "docs-app"),
		remote: idtokentest.NewProvider(t, "https://remote.example.com", "docs-remote"),
		down:   idtokentest.NewProvider(t, "https://down.example.com", "docs-app"),
		jwksMu: &sync.Mutex{}, jwksHits: new(int),
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		e.jwksMu.Lock()
		*e.jwksHits++
		e.jwksMu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(e.remote.JWKS(t, false)))
	}))
	t.Cleanup(srv.Close)
	keys := `
sites:
  docs:
    authtoken:
      - {key: "` + base64.StdEncoding.EncodeToString(testAuthKey) + `", created: "2026-11-01T00:00:00Z"}
    idps:
      corp: ` + e.corp.RecordYAML(t, 0) + `
      strict: ` + e.strict.RecordYAML(t, 120) + `
      remote: {issuer: "https://remote.example.com", client_id: docs-remote, jwks_uri: "` + srv.URL + `/jwks"}
      down: {issuer: "https://down.example.com", client_id: docs-app, jwks_uri: "http://127.0.0.1:1/jwks"}
  other:
    authtoken:
      - {key: "` + base64.StdEncoding.EncodeToString(testOtherKey) + `", created: "2026-11-01T00:00:00Z"}
  nokey:
    idps:
      corp: ` + e.corp.RecordYAML(t, 0) + `
`
	cfg, err := config.Parse([]byte(exConfig), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	clock := func() time.Time { return testNow }
	store := filetest.Store(t, keys, vault.StoreOptions{Now: clock, Logger: slog.New(slog.DiscardHandler)})
	e.usersPath = filepath.Join(t.TempDir(), "users.yaml")
	if e.dir, err = users.OpenFile(e.usersPath, users.FileOptions{Now: clock}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.dir.Close() })
	if e.a, err = New(newRuntime(t, RuntimeOptions{Keys: store, Now: clock, Logger: slog.New(slog.DiscardHandler), Users: e.dir}), cfg); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *exEnv) exchange(t testing.TB, host string, body string, headers map[string]string) *Decision {
	t.Helper()
	h := map[string]string{"content-type": "application/jwt"}
	for k, v := range headers {
		h[k] = v
	}
	return e.a.Check(context.Background(), &Request{Method: "POST", Scheme: "https", Host: host,
		Path: exchange.Path, Headers: h, Body: []byte(body)})
}

var cookieRE = regexp.MustCompile(`^authtoken=([0-9]{1,19}_[0-9]{18}_[0-9a-f]{64}); Path=/; Max-Age=86400; HttpOnly; Secure; SameSite=Lax$`)

// wantExchanged checks a 200 answer and returns the user id and the Auth Token of its cookie.
func wantExchanged(t *testing.T, d *Decision, sub, fullname, email string) (id, session string) {
	t.Helper()
	if d.Allowed || !d.Answered || d.Status != 200 || d.Reason != "" {
		t.Fatalf("want the agent's 200 answer, got allowed=%v answered=%v %d %s %s", d.Allowed, d.Answered, d.Status, d.Reason, d.Body)
	}
	if ct, _ := header(d.Headers, "content-type"); ct != "application/json" {
		t.Errorf("content-type %q", ct)
	}
	var u map[string]string
	if err := json.Unmarshal(d.Body, &u); err != nil {
		t.Fatalf("body %s: %v", d.Body, err)
	}
	id = u["@id"]
	want := fmt.Sprintf(`{"@id":%q,"@anonymous":"false","username":%s,"fullname":%s,"email":%s}`,
		id, jsonString(sub), jsonString(fullname), jsonString(email))
	if string(d.Body) != want {
		t.Errorf("body\n got %s\nwant %s", d.Body, want)
	}
	if !token.ValidUserID(id) {
		t.Errorf("@id %q is not a decimal user id", id)
	}
	c, _ := header(d.Headers, "set-cookie")
	m := cookieRE.FindStringSubmatch(c)
	if m == nil {
		t.Fatalf("set-cookie %q", c)
	}
	if !strings.HasPrefix(m[1], id+"_") {
		t.Errorf("the cookie's Auth Token %q is not for user %s", m[1], id)
	}
	return id, m[1]
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func wantRefused(t *testing.T, d *Decision, status int, r reason.Reason) {
	t.Helper()
	if d.Allowed || d.Answered || d.Status != status || d.Reason != r {
		t.Fatalf("want %d %s, got allowed=%v answered=%v %d %s %s", status, r, d.Allowed, d.Answered, d.Status, d.Reason, d.Body)
	}
	var b errorBody
	if err := json.Unmarshal(d.Body, &b); err != nil || b.Error != string(r) || b.Description == "" {
		t.Errorf("error body %s", d.Body)
	}
	if ct, _ := header(d.Headers, "content-type"); ct != "application/json" {
		t.Errorf("content-type %q", ct)
	}
	if _, ok := header(d.Headers, "set-cookie"); ok {
		t.Error("a refusal sets a cookie")
	}
}

// TestExchangeAnswersAndSessionVerifies: a valid id_token is answered 200 with the user and a
// cookie whose Auth Token then verifies as that user; the same identity gets the same id, a
// new one a new id.
func TestExchangeAnswersAndSessionVerifies(t *testing.T) {
	e := newExEnv(t)
	tok := e.corp.Mint(t, e.corp.Claims(testNow, "alice", nil))
	d := e.exchange(t, "docs.example.com", tok, nil)
	id, session := wantExchanged(t, d, "alice", "Given alice Family", "alice@example.com")
	if id != fmt.Sprint(users.DefaultFirstID) {
		t.Errorf("first user's id %s, want %d", id, users.DefaultFirstID)
	}
	if v, _ := header(d.Headers, "cache-control"); v != "no-store" {
		t.Errorf("cache-control %q", v)
	}

	// The cookie is a session at this site: it passes a route that needs a user.
	c := check(t, e.a, "GET", "docs.example.com", "/private", map[string]string{"cookie": "authtoken=" + session})
	if !c.Allowed || c.Identity.User != id || c.Identity.Kind != "authtoken" {
		t.Fatalf("the exchanged session: allowed=%v %+v %s", c.Allowed, c.Identity, c.Reason)
	}
	if v, _ := header(c.UpstreamHeaders, HeaderUser); v != id {
		t.Errorf("x-auth-user %q, want %s", v, id)
	}
	// …and only at this site.
	if c := check(t, e.a, "GET", "other.example.com", "/", map[string]string{"cookie": "authtoken=" + session}); c.Allowed {
		t.Error("the session verified at another site")
	}

	// Same identity, a fresh token: same id. Another identity: a new id.
	d = e.exchange(t, "docs.example.com", e.corp.Mint(t, e.corp.Claims(testNow.Add(-time.Minute), "alice", nil)), nil)
	if again, _ := wantExchanged(t, d, "alice", "Given alice Family", "alice@example.com"); again != id {
		t.Errorf("alice again: id %s, want %s", again, id)
	}
	d = e.exchange(t, "docs.example.com", e.corp.Mint(t, e.corp.Claims(testNow, "bob", nil)), nil)
	if bob, _ := wantExchanged(t, d, "bob", "Given bob Family", "bob@example.com"); bob == id {
		t.Errorf("bob got alice's id %s", id)
	}
	// The same sub at another provider is another identity.
	d = e.exchange(t, "docs.example.com", idtokentest.Sign(t, e.strict.ES256, e.strict.Claims(testNow, "alice", nil), nil), nil)
	if strictAlice, _ := wantExchanged(t, d, "alice", "Given alice Family", "alice@example.com"); strictAlice == id {
		t.Errorf("alice at provider strict got corp's alice's id %s", id)
	}

	if got := exchangeCount(t, e.a, "docs", "corp", "created"); got != 2 {
		t.Errorf("exchanges created at corp: %v, want 2", got)
	}
	if got := exchangeCount(t, e.a, "docs", "corp", "existing"); got != 1 {
		t.Errorf("exchanges existing at corp: %v, want 1", got)
	}
}

// TestExchangeValid: every accepted algorithm and claim form.
func TestExchangeValid(t *testing.T) {
	e := newExEnv(t)
	now := testNow
	for _, tc := range []struct {
		name     string
		tok      func() string
		sub      string
		fullname string
		email    string
	}{
		{"RS256", func() string { return idtokentest.Sign(t, e.corp.RS256, e.corp.Claims(now, "rs", nil), nil) }, "rs", "Given rs Family", "rs@example.com"},
		{"PS256", func() string { return idtokentest.Sign(t, e.corp.PS256, e.corp.Claims(now, "ps", nil), nil) }, "ps", "Given ps Family", "ps@example.com"},
		{"ES256", func() string { return idtokentest.Sign(t, e.corp.ES256, e.corp.Claims(now, "es", nil), nil) }, "es", "Given es Family", "es@example.com"},
		{"EdDSA", func() string { return idtokentest.Sign(t, e.corp.EdDSA, e.corp.Claims(now, "ed", nil), nil) }, "ed", "Given ed Family", "ed@example.com"},
		{"HS256 with a stored symmetric key", func() string {
			return idtokentest.Sign(t, e.corp.HS256, e.corp.Claims(now, "hs", nil), nil)
		}, "hs", "Given hs Family", "hs@example.com"},
		{"no kid: the keys allowing the alg are tried", func() string {
			return idtokentest.Sign(t, e.corp.ES256, e.corp.Claims(now, "nokid", nil), map[string]any{"kid": nil})
		}, "nokid", "Given nokid Family", "nokid@example.com"},
		{"no typ", func() string {
			return idtokentest.Sign(t, e.corp.RS256, e.corp.Claims(now, "notyp", nil), map[string]any{"typ": nil})
		}, "notyp", "Given notyp Family", "notyp@example.com"},
		{"email absent", func() string {
			return e.corp.Mint(t, e.corp.Claims(now, "noemail", map[string]any{"email": nil}))
		}, "noemail", "Given noemail Family", ""},
		{"aud a list holding the client_id, azp the client_id", func() string {
			return e.corp.Mint(t, e.corp.Claims(now, "list", map[string]any{"aud": []string{"other", "docs-app"}, "azp": "docs-app"}))
		}, "list", "Given list Family", "list@example.com"},
		{"iat at the edge of max_age plus leeway", func() string {
			return e.corp.Mint(t, e.corp.Claims(now.Add(-11*time.Minute), "old-ok", map[string]any{"exp": now.Add(time.Minute).Unix()}))
		}, "old-ok", "Given old-ok Family", "old-ok@example.com"},
		{"iat ahead within the leeway", func() string {
			return e.corp.Mint(t, e.corp.Claims(now.Add(59*time.Second), "ahead", nil))
		}, "ahead", "Given ahead Family", "ahead@example.com"},
		{"exp past within the leeway", func() string {
			return e.corp.Mint(t, e.corp.Claims(now.Add(-2*time.Minute), "late", map[string]any{"exp": now.Add(-59 * time.Second).Unix()}))
		}, "late", "Given late Family", "late@example.com"},
		{"names and sub that need JSON escaping", func() string {
			return e.corp.Mint(t, e.corp.Claims(now, `o"brien\ü<x>`, map[string]any{"given_name": `Jo "J" <b>`, "family_name": "Ünal", "email": "o&b@example.com"}))
		}, `o"brien\ü<x>`, `Jo "J" <b> Ünal`, "o&b@example.com"},
		{"remote key set from a jwks_uri", func() string {
			return idtokentest.Sign(t, e.remote.ES256, e.remote.Claims(now, "far", nil), nil)
		}, "far", "Given far Family", "far@example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantExchanged(t, e.exchange(t, "docs.example.com", tc.tok(), nil), tc.sub, tc.fullname, tc.email)
		})
	}
}

// TestExchangeRefusals: every refusal of SPEC §3.5.
func TestExchangeRefusals(t *testing.T) {
	e := newExEnv(t)
	now := testNow
	forged := idtokentest.Key{KID: "rsa-1", Alg: "RS256", Private: idtokentest.NewRSAKey(t)}
	claims := func(changes map[string]any) map[string]any { return e.corp.Claims(now, "mallory", changes) }
	rsaPublicAsHMAC := func() string { // the classic confusion: HS256 keyed with the RSA public key's JWK
		return idtokentest.Sign(t, idtokentest.Key{KID: "rsa-1", Alg: "HS256", Private: []byte(e.corp.JWKS(t, false))}, claims(nil), nil)
	}
	for _, tc := range []struct {
		name   string
		host   string
		body   func() string
		status int
		reason reason.Reason
		detail string
	}{
		{"bad signature: another key under the provider's kid", "", func() string { return idtokentest.Sign(t, forged, claims(nil), nil) }, 401, reason.InvalidIDToken, "signature does not verify"},
		{"tampered claims", "", func() string {
			tok := e.corp.Mint(t, claims(nil))
			parts := strings.Split(tok, ".")
			other := strings.Split(e.corp.Mint(t, claims(map[string]any{"sub": "admin"})), ".")
			return parts[0] + "." + other[1] + "." + parts[2]
		}, 401, reason.InvalidIDToken, "signature does not verify"},
		{"signed with another provider's key", "", func() string {
			return idtokentest.Sign(t, e.strict.HS256, claims(nil), map[string]any{"kid": "hs-1"})
		}, 401, reason.InvalidIDToken, "signature does not verify"},
		{"wrong iss: unknown provider", "", func() string { return e.corp.Mint(t, claims(map[string]any{"iss": "https://evil.example.com"})) }, 401, reason.InvalidIDToken, "not an identity provider of this site"},
		{"iss differing by a trailing slash", "", func() string { return e.corp.Mint(t, claims(map[string]any{"iss": "https://idp.example.com/"})) }, 401, reason.InvalidIDToken, "not an identity provider of this site"},
		{"no iss", "", func() string { return e.corp.Mint(t, claims(map[string]any{"iss": nil})) }, 401, reason.InvalidIDToken, "not an identity provider of this site"},
		{"wrong aud", "", func() string { return e.corp.Mint(t, claims(map[string]any{"aud": "another-app"})) }, 401, reason.InvalidIDToken, "aud does not hold"},
		{"aud list without the client_id", "", func() string { return e.corp.Mint(t, claims(map[string]any{"aud": []string{"a", "b"}})) }, 401, reason.InvalidIDToken, "aud does not hold"},
		{"no aud", "", func() string { return e.corp.Mint(t, claims(map[string]any{"aud": nil})) }, 401, reason.InvalidIDToken, "aud does not hold"},
		{"azp another client", "", func() string { return e.corp.Mint(t, claims(map[string]any{"azp": "another-app"})) }, 401, reason.InvalidIDToken, "azp"},
		{"expired", "", func() string {
			return e.corp.Mint(t, e.corp.Claims(now.Add(-3*time.Minute), "mallory", map[string]any{"exp": now.Add(-61 * time.Second).Unix()}))
		}, 401, reason.TokenExpired, "expired"},
		{"no exp", "", func() string { return e.corp.Mint(t, claims(map[string]any{"exp": nil})) }, 401, reason.InvalidIDToken, "no exp"},
		{"iat older than max_age", "", func() string {
			return e.corp.Mint(t, e.corp.Claims(now.Add(-11*time.Minute-time.Second), "mallory", map[string]any{"exp": now.Add(time.Hour).Unix()}))
		}, 401, reason.InvalidIDToken, "more than 10m0s ago"},
		{"iat older than the provider's own max_age", "", func() string {
			return idtokentest.Sign(t, e.strict.RS256, e.strict.Claims(now.Add(-3*time.Minute-time.Second), "mallory", nil), nil)
		}, 401, reason.InvalidIDToken, "more than 2m0s ago"},
		{"iat in the future", "", func() string {
			return e.corp.Mint(t, e.corp.Claims(now.Add(61*time.Second), "mallory", nil))
		}, 401, reason.InvalidIDToken, "iat is in the future"},
		{"no iat", "", func() string { return e.corp.Mint(t, claims(map[string]any{"iat": nil})) }, 401, reason.InvalidIDToken, "no iat"},
		{"nbf in the future", "", func() string { return e.corp.Mint(t, claims(map[string]any{"nbf": now.Add(2 * time.Minute).Unix()})) }, 401, reason.InvalidIDToken, "nbf"},
		{"iat a string", "", func() string { return e.corp.Mint(t, claims(map[string]any{"iat": fmt.Sprint(now.Unix())})) }, 401, reason.InvalidIDToken, "not a valid JSON object"},
		{"missing sub", "", func() string { return e.corp.Mint(t, claims(map[string]any{"sub": nil})) }, 401, reason.InvalidIDToken, "no sub"},
		{"empty sub", "", func() string { return e.corp.Mint(t, claims(map[string]any{"sub": ""})) }, 401, reason.InvalidIDToken, "no sub"},
		{"sub over 255 bytes", "", func() string { return e.corp.Mint(t, claims(map[string]any{"sub": strings.Repeat("s", 256)})) }, 401, reason.InvalidIDToken, "sub claim is too long"},
		{"sub with a control character", "", func() string { return e.corp.Mint(t, claims(map[string]any{"sub": "a\nb"})) }, 401, reason.InvalidIDToken, "sub claim is too long or holds control"},
		{"missing given_name", "", func() string { return e.corp.Mint(t, claims(map[string]any{"given_name": nil})) }, 401, reason.InvalidIDToken, "no given_name"},
		{"missing family_name", "", func() string { return e.corp.Mint(t, claims(map[string]any{"family_name": nil})) }, 401, reason.InvalidIDToken, "no family_name"},
		{"given_name not a string", "", func() string { return e.corp.Mint(t, claims(map[string]any{"given_name": 7})) }, 401, reason.InvalidIDToken, "not a valid JSON object"},
		{"blank family_name", "", func() string { return e.corp.Mint(t, claims(map[string]any{"family_name": "  "})) }, 401, reason.InvalidIDToken, "no family_name"},
		{"email not a string", "", func() string { return e.corp.Mint(t, claims(map[string]any{"email": true})) }, 401, reason.InvalidIDToken, "not a valid JSON object"},
		{"sub given twice", "", func() string {
			payload := fmt.Sprintf(`{"iss":"https://idp.example.com","aud":"docs-app","sub":"alice","sub":"admin","iat":%d,"exp":%d,"given_name":"A","family_name":"B"}`,
				now.Unix(), now.Add(time.Minute).Unix())
			return idtokentest.Raw(t, map[string]any{"alg": "EdDSA", "kid": "ed-1"}, []byte(payload), idtokentest.SignFunc(t, e.corp.EdDSA))
		}, 401, reason.InvalidIDToken, "not a valid JSON object"},
		{"ISS in capitals does not stand in for iss", "", func() string {
			c := claims(map[string]any{"iss": nil})
			c["ISS"] = e.corp.Issuer
			return e.corp.Mint(t, c)
		}, 401, reason.InvalidIDToken, "not an identity provider"},
		{"alg none", "", func() string {
			return idtokentest.Raw(t, map[string]any{"alg": "none", "kid": "rsa-1"}, claims(nil), nil)
		}, 401, reason.InvalidIDToken, "alg is not accepted"},
		{"alg None", "", func() string {
			return idtokentest.Raw(t, map[string]any{"alg": "None"}, claims(nil), nil)
		}, 401, reason.InvalidIDToken, "alg is not accepted"},
		{"alg RS512", "", func() string {
			return idtokentest.Raw(t, map[string]any{"alg": "RS512", "kid": "rsa-1"}, claims(nil), func(string) []byte { return make([]byte, 256) })
		}, 401, reason.InvalidIDToken, "alg is not accepted"},
		{"alg HS256 keyed with the RSA public key", "", rsaPublicAsHMAC, 401, reason.InvalidIDToken, "alg is not one"},
		{"alg mismatch: ES256 header on the RSA kid", "", func() string {
			return idtokentest.Sign(t, idtokentest.Key{KID: "rsa-1", Alg: "ES256", Private: e.corp.ES256.Private}, claims(nil), nil)
		}, 401, reason.InvalidIDToken, "alg is not one its provider's key accepts"},
		{"unknown kid", "", func() string {
			return idtokentest.Sign(t, idtokentest.Key{KID: "nope", Alg: "RS256", Private: e.corp.RS256.Private}, claims(nil), nil)
		}, 401, reason.InvalidIDToken, "kid"},
		{"typed as an access token", "", func() string { return idtokentest.Sign(t, e.corp.RS256, claims(nil), map[string]any{"typ": "at+jwt"}) }, 401, reason.InvalidIDToken, "at+jwt"},
		{"a logout token", "", func() string {
			return e.corp.Mint(t, claims(map[string]any{"events": map[string]any{"http://schemas.openid.net/event/backchannel-logout": map[string]any{}}}))
		}, 401, reason.InvalidIDToken, "logout"},
		{"crit header", "", func() string {
			return idtokentest.Sign(t, e.corp.RS256, claims(nil), map[string]any{"crit": []string{"exp"}, "exp": 1})
		}, 401, reason.InvalidIDToken, "crit"},
		{"not a JWT", "", func() string { return "hello" }, 401, reason.InvalidIDToken, "compact form"},
		{"a JWE-shaped token", "", func() string { return "a.b.c.d.e" }, 401, reason.InvalidIDToken, "compact form"},
		{"empty body", "", func() string { return "" }, 401, reason.InvalidIDToken, "no id_token"},
		{"a site with no identity provider", "other.example.com", func() string { return e.corp.Mint(t, claims(nil)) }, 401, reason.InvalidIDToken, "not an identity provider"},
		{"a site with no Auth Token key", "nokey.example.com", func() string { return e.corp.Mint(t, claims(nil)) }, 503, reason.KeysUnavailable, "no auth token key"},
		{"a provider whose keys could never be fetched", "", func() string {
			return idtokentest.Sign(t, e.down.RS256, e.down.Claims(now, "mallory", nil), nil)
		}, 503, reason.KeysUnavailable, "cannot be fetched"},
		{"a stored symmetric key is not in the published set", "", func() string {
			return idtokentest.Sign(t, e.remote.HS256, e.remote.Claims(now, "mallory", nil), nil)
		}, 401, reason.InvalidIDToken, "kid"},
		{"body over 16 KiB", "", func() string { return e.corp.Mint(t, claims(nil)) + strings.Repeat(" ", exchange.MaxBody) }, 413, reason.BodyTooLarge, "16 KiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := tc.host
			if host == "" {
				host = "docs.example.com"
			}
			d := e.exchange(t, host, tc.body(), nil)
			wantRefused(t, d, tc.status, tc.reason)
			if !strings.Contains(string(d.Body), tc.detail) {
				t.Errorf("body %s does not say %q", d.Body, tc.detail)
			}
		})
	}
	if n := exchangeCount(t, e.a, "docs", "corp", "created"); n != 0 {
		t.Errorf("a refused exchange created %v users", n)
	}
	if n := exchangeCount(t, e.a, "docs", "unknown", "invalid_id_token"); n == 0 {
		t.Error("refusals without a provider are not counted")
	}
}

// TestExchangeBodySize: the size limit holds before any parsing, and a body Envoy cut short
// is refused the same way.
func TestExchangeBodySize(t *testing.T) {
	e := newExEnv(t)
	tok := e.corp.Mint(t, e.corp.Claims(testNow, "sized", nil))
	exact := tok + strings.Repeat(" ", exchange.MaxBody-len(tok))
	wantExchanged(t, e.exchange(t, "docs.example.com", exact, nil), "sized", "Given sized Family", "sized@example.com")
	wantRefused(t, e.exchange(t, "docs.example.com", exact+" ", nil), 413, reason.BodyTooLarge)
	wantRefused(t, e.exchange(t, "docs.example.com", strings.Repeat("{", exchange.MaxBody+1), nil), 413, reason.BodyTooLarge)
	d := e.a.Check(context.Background(), &Request{Method: "POST", Host: "docs.example.com", Path: exchange.Path,
		Headers: map[string]string{}, Body: []byte(tok[:100]), BodyTruncated: true})
	wantRefused(t, d, 413, reason.BodyTooLarge)
	// Envoy's x-envoy-auth-partial-body is the transport's to read (extauthz sets
	// BodyTruncated): the pipeline knows nothing of Envoy.
}

// TestExchangeBodyForms: every body form SPEC §3.5 names, in any content type, and the form
// post `id_token=<jwt>`.
func TestExchangeBodyForms(t *testing.T) {
	e := newExEnv(t)
	tok := e.corp.Mint(t, e.corp.Claims(testNow, "forms", nil))
	var firstID string
	for _, tc := range []struct {
		name, contentType, body string
	}{
		{"raw JWT, application/jwt", "application/jwt", tok},
		{"raw JWT, text/plain with a newline", "text/plain", tok + "\r\n"},
		{"raw JWT, form content type", "application/x-www-form-urlencoded", tok},
		{"raw JWT, no content type", "", "  " + tok},
		{"JSON string", "application/json", `"` + tok + `"`},
		{"JSON object", "application/json", `{"id_token": "` + tok + `"}`},
		{"JSON object, other members too", "application/json", `{"provider":"corp","id_token":"` + tok + `","n":[1,{"a":null}]}`},
		{"JSON object, text/plain", "text/plain", "\n{\"id_token\":\"" + tok + "\"}\n"},
		{"form id_token=", "application/x-www-form-urlencoded", "id_token=" + tok},
		{"form with other fields", "application/x-www-form-urlencoded", "grant_type=x&id_token=" + url.QueryEscape(tok) + "&state=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{}
			if tc.contentType != "" {
				h["content-type"] = tc.contentType
			}
			id, _ := wantExchanged(t, e.exchange(t, "docs.example.com", tc.body, h), "forms", "Given forms Family", "forms@example.com")
			if firstID == "" {
				firstID = id
			} else if id != firstID {
				t.Errorf("id %s, want %s", id, firstID)
			}
		})
	}
}

func TestParseExchangeBody(t *testing.T) {
	const jwt = "aaa.bbb.ccc"
	for _, tc := range []struct {
		name, body, want string
	}{
		{"raw", jwt, jwt},
		{"raw with spaces", " \t" + jwt + "\n", jwt},
		{"JSON string", `"aaa.bbb.ccc"`, jwt},
		{"JSON string with escapes", `"aaa\u002ebbb.ccc"`, jwt},
		{"JSON object", `{"id_token":"aaa.bbb.ccc"}`, jwt},
		{"JSON object with others", `{"a":{"id_token":"x"},"id_token":"aaa.bbb.ccc","b":[]}`, jwt},
		{"form", "id_token=aaa.bbb.ccc", jwt},
		{"form with others", "a=1&id_token=aaa.bbb.ccc&b=2", jwt},
		{"empty", "", ""},
		{"blank", " \n ", ""},
		{"JSON object without id_token", `{"token":"aaa.bbb.ccc"}`, ""},
		{"JSON object with id_token twice", `{"id_token":"aaa.bbb.ccc","id_token":"x.y.z"}`, ""},
		{"JSON object with a number", `{"id_token":7}`, ""},
		{"JSON object with null", `{"id_token":null}`, ""},
		{"JSON object, trailing data", `{"id_token":"aaa.bbb.ccc"} x`, ""},
		{"two JSON objects", `{"id_token":"aaa.bbb.ccc"}{}`, ""},
		{"JSON object, ID_TOKEN", `{"ID_TOKEN":"aaa.bbb.ccc"}`, ""},
		{"JSON object unfinished", `{"id_token":"aaa.bbb.ccc"`, ""},
		{"JSON string unfinished", `"aaa.bbb.ccc`, ""},
		{"JSON string, trailing data", `"aaa.bbb.ccc" "x"`, ""},
		{"form without id_token", "token=aaa.bbb.ccc", ""},
		{"form with id_token twice", "id_token=aaa.bbb.ccc&id_token=x.y.z", ""},
		{"form with an empty id_token", "id_token=", ""},
		{"form with a bad escape", "id_token=%zz", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := exchange.ParseBody([]byte(tc.body))
			if tc.want == "" {
				if err == nil || err.Reason != reason.InvalidIDToken {
					t.Fatalf("got %q, %v; want invalid_id_token", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestExchangeWithoutDirectory: an agent built without a user directory refuses the exchange
// (fails closed) instead of answering with an id it cannot keep.
func TestExchangeWithoutDirectory(t *testing.T) {
	e := newExEnv(t)
	a, err := New(newRuntime(t, RuntimeOptions{Keys: e.a.rt.keys, Now: e.a.rt.now, Logger: slog.New(slog.DiscardHandler)}), e.a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := a.Check(context.Background(), &Request{Method: "POST", Host: "docs.example.com", Path: exchange.Path,
		Headers: map[string]string{}, Body: []byte(e.corp.Mint(t, e.corp.Claims(testNow, "alice", nil)))})
	wantRefused(t, d, 503, reason.KeysUnavailable)
}

// TestExchangeOnlyPOST: another method on the exchange path is an ordinary request, and the
// exchange is found after path normalisation.
func TestExchangeOnlyPOST(t *testing.T) {
	e := newExEnv(t)
	if d := check(t, e.a, "GET", "docs.example.com", exchange.Path, nil); !d.Allowed {
		t.Errorf("GET on the exchange path: %d %s", d.Status, d.Reason)
	}
	d := e.a.Check(context.Background(), &Request{Method: "POST", Host: "docs.example.com", Path: "/@app/auth/x/../token//exchange?x=1",
		Headers: map[string]string{}, Body: []byte(e.corp.Mint(t, e.corp.Claims(testNow, "norm", nil)))})
	wantExchanged(t, d, "norm", "Given norm Family", "norm@example.com")
}

// TestExchangeRemoteKeysFetchedOnce: a provider's jwks_uri is fetched once and shared.
func TestExchangeRemoteKeysFetchedOnce(t *testing.T) {
	e := newExEnv(t)
	for i := range 3 {
		tok := idtokentest.Sign(t, e.remote.EdDSA, e.remote.Claims(testNow, fmt.Sprint("r", i), nil), nil)
		wantExchanged(t, e.exchange(t, "docs.example.com", tok, nil), fmt.Sprint("r", i), fmt.Sprintf("Given r%d Family", i), fmt.Sprintf("r%d@example.com", i))
	}
	e.jwksMu.Lock()
	defer e.jwksMu.Unlock()
	if *e.jwksHits != 1 {
		t.Errorf("jwks_uri fetched %d times, want 1", *e.jwksHits)
	}
}

// exchangeCount reads tokenagent_exchanges_total{site,provider,outcome} of a.
func exchangeCount(t *testing.T, a *Agent, site, provider, outcome string) float64 {
	t.Helper()
	var m dto.Metric
	if err := a.rt.exchange.Total.WithLabelValues(site, provider, outcome).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

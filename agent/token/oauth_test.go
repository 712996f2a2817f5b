package token

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file/filetest"
	"github.com/tokenagent/tokenagent/vault/jwks"
)

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

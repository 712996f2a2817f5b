package token

import (
	"context"
	"encoding/base64"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/vault/jwks"
)

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

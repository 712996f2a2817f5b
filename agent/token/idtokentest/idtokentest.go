// Package idtokentest makes an identity provider for tests and benchmarks of the Identity
// Token Exchange: real keys generated at run time (never committed), their JWK Set as an
// `idps/<name>` record holds it, and id_tokens signed with them (or forged: alg none, a
// wrong key, any header).
//
//	p := idtokentest.NewProvider(t, "https://idp.example.com", "docs-app")
//	keysYAML := "idps:\n  corp: " + p.RecordYAML()
//	tok := p.Mint(t, p.Claims(now, "alice", nil))
package idtokentest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Key is one signing key of a Provider.
type Key struct {
	// KID is the key's id; Alg its JWS algorithm.
	KID, Alg string
	// Private is the signing key: *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey or
	// []byte (HS256).
	Private any
}

// Provider is an identity provider with one key of each accepted algorithm.
type Provider struct {
	Issuer, ClientID                  string
	RS256, PS256, ES256, EdDSA, HS256 Key
}

var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey
	ecKey    *ecdsa.PrivateKey
	edKey    ed25519.PrivateKey
	keysErr  error
)

// sharedKeys generates the asymmetric keys once per test binary (RSA generation is slow).
func sharedKeys(tb testing.TB) {
	tb.Helper()
	keysOnce.Do(func() {
		if rsaKey, keysErr = rsa.GenerateKey(rand.Reader, 2048); keysErr != nil {
			return
		}
		if ecKey, keysErr = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); keysErr != nil {
			return
		}
		_, edKey, keysErr = ed25519.GenerateKey(rand.Reader)
	})
	if keysErr != nil {
		tb.Fatal(keysErr)
	}
}

// NewProvider returns a provider with issuer and clientID. Its asymmetric keys are shared by
// every provider of the test binary (under different kids); NewRSAKey makes a distinct one.
func NewProvider(tb testing.TB, issuer, clientID string) *Provider {
	tb.Helper()
	sharedKeys(tb)
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		tb.Fatal(err)
	}
	return &Provider{Issuer: issuer, ClientID: clientID,
		RS256: Key{KID: "rsa-1", Alg: "RS256", Private: rsaKey},
		PS256: Key{KID: "rsa-pss-1", Alg: "PS256", Private: rsaKey},
		ES256: Key{KID: "ec-1", Alg: "ES256", Private: ecKey},
		EdDSA: Key{KID: "ed-1", Alg: "EdDSA", Private: edKey},
		HS256: Key{KID: "hs-1", Alg: "HS256", Private: secret},
	}
}

// NewRSAKey generates a fresh 2048-bit RSA key (for a forged signature under a known kid).
func NewRSAKey(tb testing.TB) *rsa.PrivateKey {
	tb.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// Keys lists the provider's keys.
func (p *Provider) Keys() []Key { return []Key{p.RS256, p.PS256, p.ES256, p.EdDSA, p.HS256} }

// JWKS is the provider's JWK Set as JSON: the public halves of the asymmetric keys, and the
// HS256 secret (as a key source may store it). withSecret false leaves the secret out (a
// published set).
func (p *Provider) JWKS(tb testing.TB, withSecret bool) string {
	tb.Helper()
	var set jose.JSONWebKeySet
	for _, k := range p.Keys() {
		var key any
		switch pk := k.Private.(type) {
		case *rsa.PrivateKey:
			key = &pk.PublicKey
		case *ecdsa.PrivateKey:
			key = &pk.PublicKey
		case ed25519.PrivateKey:
			key = pk.Public()
		case []byte:
			if !withSecret {
				continue
			}
			key = pk
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: key, KeyID: k.KID, Algorithm: k.Alg, Use: "sig"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// RecordYAML is the provider's `idps/<name>` record for a keys file, in flow style, with its
// inline JWK Set (secret included) and maxAge seconds (0: none given).
func (p *Provider) RecordYAML(tb testing.TB, maxAge int) string {
	tb.Helper()
	rec := map[string]any{"issuer": p.Issuer, "client_id": p.ClientID, "jwks": p.JWKS(tb, true)}
	if maxAge > 0 {
		rec["max_age"] = maxAge
	}
	b, err := json.Marshal(rec) // JSON is YAML
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// Claims are an id_token's claims for sub, issued at now for 5 minutes, with both names and
// an email. changes are applied over them; a nil value removes the claim.
func (p *Provider) Claims(now time.Time, sub string, changes map[string]any) map[string]any {
	c := map[string]any{
		"iss": p.Issuer, "aud": p.ClientID, "sub": sub,
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"given_name": "Given " + sub, "family_name": "Family", "email": sub + "@example.com",
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

// Mint signs claims with the provider's RS256 key and header typ JWT.
func (p *Provider) Mint(tb testing.TB, claims map[string]any) string {
	tb.Helper()
	return Sign(tb, p.RS256, claims, nil)
}

// Sign signs claims with k; header holds extra header members (alg and kid come from k,
// typ is "JWT" unless header sets it; a nil value removes a member).
func Sign(tb testing.TB, k Key, claims map[string]any, header map[string]any) string {
	tb.Helper()
	h := map[string]any{"alg": k.Alg, "kid": k.KID, "typ": "JWT"}
	for name, v := range header {
		if v == nil {
			delete(h, name)
		} else {
			h[name] = v
		}
	}
	return Raw(tb, h, claims, SignFunc(tb, k))
}

// SignFunc returns a function that signs a JWS signing input with k (for Raw).
func SignFunc(tb testing.TB, k Key) func(input string) []byte {
	return func(input string) []byte { return rawSign(tb, k, input) }
}

// Raw builds a compact JWS from any header and claims, signed by sign (nil: an empty
// signature, as `alg: none` has).
func Raw(tb testing.TB, header, claims any, sign func(input string) []byte) string {
	tb.Helper()
	hb, err := json.Marshal(header)
	if err != nil {
		tb.Fatal(err)
	}
	cb, ok := claims.([]byte)
	if !ok {
		if cb, err = json.Marshal(claims); err != nil {
			tb.Fatal(err)
		}
	}
	input := b64(hb) + "." + b64(cb)
	var sig []byte
	if sign != nil {
		sig = sign(input)
	}
	return input + "." + b64(sig)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// rawSign signs input with k.Private for k.Alg (JWS signature bytes).
func rawSign(tb testing.TB, k Key, input string) []byte {
	tb.Helper()
	h := sha256.Sum256([]byte(input))
	var sig []byte
	var err error
	switch k.Alg {
	case "RS256":
		sig, err = rsa.SignPKCS1v15(rand.Reader, k.Private.(*rsa.PrivateKey), crypto.SHA256, h[:])
	case "PS256":
		sig, err = rsa.SignPSS(rand.Reader, k.Private.(*rsa.PrivateKey), crypto.SHA256, h[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case "ES256":
		var r, s []byte
		r, s, err = ecdsaSign(k.Private.(*ecdsa.PrivateKey), h[:])
		sig = append(r, s...)
	case "EdDSA":
		sig = ed25519.Sign(k.Private.(ed25519.PrivateKey), []byte(input))
	case "HS256":
		m := hmac.New(sha256.New, k.Private.([]byte))
		m.Write([]byte(input))
		sig = m.Sum(nil)
	default:
		tb.Fatalf("idtokentest: cannot sign with alg %q", k.Alg)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return sig
}

// ecdsaSign returns r and s, each left-padded to 32 bytes (JWS ES256).
func ecdsaSign(k *ecdsa.PrivateKey, hash []byte) ([]byte, []byte, error) {
	r, s, err := ecdsa.Sign(rand.Reader, k, hash)
	if err != nil {
		return nil, nil, err
	}
	rb, sb := make([]byte, 32), make([]byte, 32)
	r.FillBytes(rb)
	s.FillBytes(sb)
	return rb, sb, nil
}

// Unix is t as a JSON NumericDate.
func Unix(t time.Time) json.Number { return json.Number(strconv.FormatInt(t.Unix(), 10)) }

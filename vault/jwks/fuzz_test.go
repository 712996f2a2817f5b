package jwks

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// FuzzParseJWKS feeds arbitrary JSON to the JWK Set parser, as a fetched set (what an issuer's
// jwks_uri, or whoever answers in its place, can send) and as a stored one. It never panics,
// and every key it keeps is one a verifier may use: an RSA key of at least 2048 bits, a P-256
// key, an Ed25519 key, or an HS256 secret of at least 32 bytes that never comes from a fetched
// set; each key allows at least one algorithm, only of its type, and is found by its kid.
func FuzzParseJWKS(f *testing.F) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ed, _, _ := ed25519.GenerateKey(rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	var keys []json.RawMessage
	for _, k := range []jose.JSONWebKey{{Key: &ec.PublicKey, KeyID: "ec", Algorithm: ES256, Use: "sig"},
		{Key: ed, KeyID: "ed"}, {Key: &rk.PublicKey, KeyID: "rsa", Algorithm: PS256},
		{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "hs", Algorithm: HS256}, {Key: ec, KeyID: "private"}} {
		b, err := k.MarshalJSON()
		if err != nil {
			f.Fatal(err)
		}
		keys = append(keys, b)
	}
	all, _ := json.Marshal(map[string]any{"keys": keys})
	f.Add(all, true)
	f.Add(all, false)
	f.Add([]byte(`{"keys":[{"kty":"oct","k":"AAAA","alg":"HS256"},{"kty":"EC","crv":"P-384","x":"","y":""},{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`), true)
	f.Add([]byte(`{"keys":null}`), false)
	f.Add([]byte(`{"KEYS":[],"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","use":"enc"}]}`), true)
	f.Fuzz(func(t *testing.T, raw []byte, fetched bool) {
		set, err := Parse(raw, ParseOptions{Fetched: fetched})
		if err != nil {
			if set != nil {
				t.Fatal("an error with a set")
			}
			return
		}
		for _, k := range set.Keys {
			if k.algs == 0 {
				t.Fatalf("key %q allows no algorithm", k.ID)
			}
			n := 0
			switch {
			case k.rsa != nil:
				n++
				if k.rsa.N.BitLen() < MinRSABits || k.algs&^(algRS256|algPS256) != 0 {
					t.Fatalf("RSA key %q of %d bits, algs %b", k.ID, k.rsa.N.BitLen(), k.algs)
				}
			case k.ec != nil:
				n++
				if k.ec.Curve != elliptic.P256() || k.algs != algES256 {
					t.Fatalf("EC key %q on %v, algs %b", k.ID, k.ec.Curve.Params().Name, k.algs)
				}
			case k.ed != nil:
				n++
				if len(k.ed) != ed25519.PublicKeySize || k.algs != algEdDSA {
					t.Fatalf("Ed25519 key %q of %d bytes, algs %b", k.ID, len(k.ed), k.algs)
				}
			case k.secret != nil:
				n++
				if fetched || k.secret.Len() < MinHMACKeyLen || k.algs != algHS256 {
					t.Fatalf("HS256 key %q of %d bytes in a set fetched=%v", k.ID, k.secret.Len(), fetched)
				}
			}
			if n != 1 {
				t.Fatalf("key %q holds no key material", k.ID)
			}
			found := false
			for _, b := range set.ByKID(k.ID) {
				found = found || b == k
			}
			if !found {
				t.Fatalf("key %q is not found by its kid", k.ID)
			}
		}
	})
}

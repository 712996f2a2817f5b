package token

import (
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenagent/tokenagent/vault/jwks"
)

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

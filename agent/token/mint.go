package token

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenagent/tokenagent/vault/jwks"
)

// MintJWT signs claims with key, a private JWK (RSA, EC P-256, Ed25519, or a symmetric key of
// at least 32 bytes), and returns the JWS compact serialization, for tests and `tokenagent
// mint jwt`. The algorithm is key.Algorithm, or RS256, ES256, EdDSA or HS256 by the key's
// type when it gives none; the header carries `kid` (key.KeyID, when set) and
// `typ: at+jwt` (RFC 9068).
func MintJWT(key jose.JSONWebKey, claims map[string]any) (string, error) {
	alg := jose.SignatureAlgorithm(key.Algorithm)
	if alg == "" {
		switch key.Key.(type) {
		case []byte:
			alg = jose.HS256
		default:
			if key.IsPublic() {
				return "", errors.New("token: MintJWT needs a private key")
			}
			switch key.Public().Key.(type) {
			case *rsa.PublicKey:
				alg = jose.RS256
			case *ecdsa.PublicKey:
				alg = jose.ES256
			case ed25519.PublicKey:
				alg = jose.EdDSA
			default:
				return "", errors.New("token: MintJWT: unsupported key type")
			}
		}
	}
	if !jwks.Accepts(alg) {
		return "", errors.New("token: MintJWT: algorithm " + string(alg) + " is not accepted by tokenagent")
	}
	opts := (&jose.SignerOptions{}).WithType("at+jwt")
	if _, sym := key.Key.([]byte); sym && key.KeyID != "" {
		opts = opts.WithHeader("kid", key.KeyID) // go-jose names only asymmetric keys itself
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return obj.CompactSerialize()
}

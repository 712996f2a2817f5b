// Package jwks holds the verification keys of JWT issuers (SPEC §3.4): key sets stored inline
// in a key record (`jwks`) and key sets fetched from an issuer's `jwks_uri`.
//
// A Set is parsed once and is immutable; it holds only keys a verifier may use:
//
//   - RSA public keys of at least 2048 bits, for RS256 and PS256 (a key whose JWK has no
//     `alg` accepts both; one with `alg` accepts only that);
//   - EC P-256 public keys, for ES256;
//   - Ed25519 public keys (OKP), for EdDSA;
//   - symmetric (`oct`) keys of at least 32 bytes, for HS256, only when the JWK says
//     `alg: HS256` and only in a set stored in the key source (never in a fetched set, which is
//     public).
//
// Any other key (another curve or type, an `alg` outside that list or not matching the key's
// type, `use` other than `sig`, `key_ops` without `verify`, a fetched key with private
// parameters) is left out and listed in Set.Problems. The private part of a key stored in the
// key source is dropped: only its public half is kept.
//
// A Cache parses inline sets once per distinct JSON and fetches remote sets (see Cache).
//
//	c := jwks.NewCache(jwks.Options{})
//	set, err := c.Inline(record.JWKS)        // parsed once, then a map read
//	r := c.Remote("https://issuer.example/jwks.json")
//	set, err = r.Keys(ctx)                  // fetched on first use, cached after
//	set, err = r.Refetch(ctx, set)          // an unknown kid: at most once per 30 s
//
// # Notes
//
//   - Sets, Keys, Caches and Remotes are safe for concurrent use.
//   - Key.Verify checks a JWS signature over the exact signing input received; it allocates
//     little (ES256 allocates its two big integers).
package jwks

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"unsafe"

	jose "github.com/go-jose/go-jose/v4"
	josejson "github.com/go-jose/go-jose/v4/json"

	"github.com/tokenagent/tokenagent/vault"
)

// The JWS algorithms tokenagent accepts (SPEC §3.4).
const (
	RS256 = "RS256"
	PS256 = "PS256"
	ES256 = "ES256"
	EdDSA = "EdDSA"
	HS256 = "HS256"
)

// algorithms are the accepted JWS algorithms: read-only (Algorithms hands out copies).
var algorithms = [...]jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256, jose.EdDSA, jose.HS256}

// Algorithms lists every accepted JWS algorithm, as go-jose wants it for parsing: a new slice
// at each call, so no caller can change what is accepted.
func Algorithms() []jose.SignatureAlgorithm { return slices.Clone(algorithms[:]) }

// Accepts reports whether alg is an accepted JWS algorithm.
func Accepts(alg jose.SignatureAlgorithm) bool { return slices.Contains(algorithms[:], alg) }

// MinRSABits is the smallest RSA modulus accepted (RFC 7518 §3.3, RFC 8725 §3.5).
const MinRSABits = 2048

// MinHMACKeyLen is the shortest HS256 key accepted, in bytes (RFC 7518 §3.2).
const MinHMACKeyLen = 32

type algSet uint8

const (
	algRS256 algSet = 1 << iota
	algPS256
	algES256
	algEdDSA
	algHS256
)

func algBit(alg string) algSet {
	switch alg {
	case RS256:
		return algRS256
	case PS256:
		return algPS256
	case ES256:
		return algES256
	case EdDSA:
		return algEdDSA
	case HS256:
		return algHS256
	}
	return 0
}

// Key is one usable verification key of a Set.
type Key struct {
	// ID is the JWK's `kid` (may be empty).
	ID string
	// Type is the JWK's `kty`: "RSA", "EC", "OKP" or "oct".
	Type string
	// Alg is the JWK's `alg`, empty when the JWK gives none.
	Alg string

	algs   algSet
	rsa    *rsa.PublicKey
	ec     *ecdsa.PublicKey
	ed     ed25519.PublicKey
	secret *vault.Secret
}

// Allows reports whether the key verifies signatures made with the JWS algorithm alg (the
// header's `alg`, compared exactly).
func (k *Key) Allows(alg string) bool {
	b := algBit(alg)
	return b != 0 && k.algs&b != 0
}

// Verify reports whether sig is a valid signature by this key over signingInput (the JWS
// compact serialization up to its last '.') with algorithm alg. It is false for an algorithm
// the key does not allow.
func (k *Key) Verify(alg, signingInput string, sig []byte) bool {
	if !k.Allows(alg) {
		return false
	}
	msg := bytesView(signingInput)
	switch alg {
	case RS256:
		h := sha256.Sum256(msg)
		return rsa.VerifyPKCS1v15(k.rsa, crypto.SHA256, h[:], sig) == nil
	case PS256:
		h := sha256.Sum256(msg)
		return rsa.VerifyPSS(k.rsa, crypto.SHA256, h[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}) == nil
	case ES256:
		if len(sig) != 64 {
			return false
		}
		h := sha256.Sum256(msg)
		var r, s big.Int
		r.SetBytes(sig[:32])
		s.SetBytes(sig[32:])
		return ecdsa.Verify(k.ec, h[:], &r, &s)
	case EdDSA:
		return len(sig) == ed25519.SignatureSize && ed25519.Verify(k.ed, msg, sig)
	case HS256:
		var buf [sha256.Size]byte
		return hmac.Equal(k.secret.MAC(buf[:0], signingInput), sig)
	}
	return false
}

// Public returns the key's public key (*rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey),
// or nil for a symmetric key.
func (k *Key) Public() crypto.PublicKey {
	switch {
	case k.rsa != nil:
		return k.rsa
	case k.ec != nil:
		return k.ec
	case k.ed != nil:
		return k.ed
	}
	return nil
}

// Set is a parsed, immutable JSON Web Key Set holding only usable keys.
type Set struct {
	// Keys are the usable keys, in the set's order.
	Keys []*Key
	// Problems say which keys were left out and why (no key material in them).
	Problems []string

	byKID map[string][]*Key
}

// ByKID returns the usable keys whose `kid` is kid (usually one).
func (s *Set) ByKID(kid string) []*Key {
	if s == nil {
		return nil
	}
	return s.byKID[kid]
}

// Len is the number of usable keys.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.Keys)
}

// ParseOptions tune Parse.
type ParseOptions struct {
	// Fetched marks a set fetched from a jwks_uri: symmetric keys and keys with private
	// parameters are left out (a published secret is no secret).
	Fetched bool
}

// ErrNotKeySet reports JSON that is not a JWKS object with a "keys" list.
var ErrNotKeySet = errors.New("jwks: not a JWK Set (a JSON object with a \"keys\" list)")

// Parse parses a JWK Set. Keys that cannot be used are left out and reported in
// Set.Problems; the error is ErrNotKeySet (wrapped) only when raw is not a JWK Set at all.
func Parse(raw []byte, opts ParseOptions) (*Set, error) {
	var doc struct {
		Keys []josejson.RawMessage `json:"keys"`
	}
	if err := josejson.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotKeySet, err)
	}
	if doc.Keys == nil {
		return nil, ErrNotKeySet
	}
	set := &Set{byKID: make(map[string][]*Key, len(doc.Keys))}
	for i, rk := range doc.Keys {
		k, err := parseKey(rk, opts)
		if err != nil {
			set.Problems = append(set.Problems, fmt.Sprintf("key %d%s left out: %v", i, kidNote(rk), err))
			continue
		}
		set.Keys = append(set.Keys, k)
		set.byKID[k.ID] = append(set.byKID[k.ID], k)
	}
	return set, nil
}

// jwkMeta are the JWK members go-jose does not keep.
type jwkMeta struct {
	Kty    string   `json:"kty"`
	Alg    string   `json:"alg"`
	Use    string   `json:"use"`
	KeyOps []string `json:"key_ops"`
	KID    string   `json:"kid"`
	D      string   `json:"d"`
}

func kidNote(raw []byte) string {
	var m jwkMeta
	if josejson.Unmarshal(raw, &m) == nil && m.KID != "" {
		kid := m.KID
		if len(kid) > 64 {
			kid = kid[:64] + "…"
		}
		return fmt.Sprintf(" (kid %q)", kid)
	}
	return ""
}

func parseKey(raw []byte, opts ParseOptions) (*Key, error) {
	var m jwkMeta
	if err := josejson.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("not a JWK object: %v", err)
	}
	if m.Use != "" && m.Use != "sig" {
		return nil, fmt.Errorf("use is %q, not \"sig\"", m.Use)
	}
	if m.KeyOps != nil && !contains(m.KeyOps, "verify") {
		return nil, errors.New("key_ops does not hold \"verify\"")
	}
	if m.Alg != "" && algBit(m.Alg) == 0 {
		return nil, fmt.Errorf("alg %q is not accepted (RS256, PS256, ES256, EdDSA, HS256)", m.Alg)
	}
	if opts.Fetched && m.Kty == "oct" {
		return nil, errors.New("a symmetric key in a published key set is not secret")
	}
	if opts.Fetched && m.D != "" {
		return nil, errors.New("a published key set must not hold private keys")
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil {
		return nil, fmt.Errorf("cannot be read: %v", err)
	}
	k := &Key{ID: jwk.KeyID, Type: m.Kty, Alg: m.Alg}
	want := algBit(m.Alg)
	switch key := jwk.Key.(type) {
	case *rsa.PrivateKey:
		return rsaKey(k, &key.PublicKey, want)
	case *rsa.PublicKey:
		return rsaKey(k, key, want)
	case *ecdsa.PrivateKey:
		return ecKey(k, &key.PublicKey, want)
	case *ecdsa.PublicKey:
		return ecKey(k, key, want)
	case ed25519.PrivateKey:
		return edKey(k, key.Public().(ed25519.PublicKey), want)
	case ed25519.PublicKey:
		return edKey(k, key, want)
	case []byte:
		if want != algHS256 {
			return nil, errors.New("a symmetric key is used only with \"alg\": \"HS256\" in its JWK")
		}
		if len(key) < MinHMACKeyLen {
			return nil, fmt.Errorf("HS256 key is %d bytes, want at least %d", len(key), MinHMACKeyLen)
		}
		k.algs, k.secret = algHS256, vault.NewSecret(key)
		return k, nil
	}
	return nil, fmt.Errorf("key type %T is not supported", jwk.Key)
}

func rsaKey(k *Key, pub *rsa.PublicKey, want algSet) (*Key, error) {
	if pub.N.BitLen() < MinRSABits {
		return nil, fmt.Errorf("RSA key has %d bits, want at least %d", pub.N.BitLen(), MinRSABits)
	}
	switch want {
	case 0:
		k.algs = algRS256 | algPS256
	case algRS256, algPS256:
		k.algs = want
	default:
		return nil, fmt.Errorf("alg %q does not fit an RSA key", k.Alg)
	}
	k.rsa = pub
	return k, nil
}

func ecKey(k *Key, pub *ecdsa.PublicKey, want algSet) (*Key, error) {
	if pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("EC curve %s is not accepted (P-256 only)", pub.Curve.Params().Name)
	}
	if want != 0 && want != algES256 {
		return nil, fmt.Errorf("alg %q does not fit a P-256 key", k.Alg)
	}
	if _, err := pub.ECDH(); err != nil {
		return nil, errors.New("EC point is not on the curve")
	}
	k.algs, k.ec = algES256, pub
	return k, nil
}

func edKey(k *Key, pub ed25519.PublicKey, want algSet) (*Key, error) {
	if want != 0 && want != algEdDSA {
		return nil, fmt.Errorf("alg %q does not fit an Ed25519 key", k.Alg)
	}
	if len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("the Ed25519 key has the wrong length")
	}
	k.algs, k.ed = algEdDSA, pub
	return k, nil
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// bytesView returns s's bytes without copying; the result must not be written to.
func bytesView(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

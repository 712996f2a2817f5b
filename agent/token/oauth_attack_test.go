package token

import (
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenagent/tokenagent/agent/reason"
)

// TestOAuthAttacks is the attack suite: the JWT attacks of RFC 8725 and of known CVEs in JWT
// libraries, each refused with its exact reason.
func TestOAuthAttacks(t *testing.T) {
	e := newOAEnv(t)
	k := oaKeySet()
	claims := e.claims(nil)
	valid := func(key any, kid, alg string) string { return mint(t, key, kid, alg, claims) }
	hdr := func(alg, kid string, extra ...any) map[string]any {
		h := map[string]any{"alg": alg}
		if kid != "" {
			h["kid"] = kid
		}
		for i := 0; i+1 < len(extra); i += 2 {
			h[extra[i].(string)] = extra[i+1]
		}
		return h
	}
	segs := func(tok string) []string { return strings.Split(tok, ".") }

	// An attacker's key server: jku/x5u pointing here must never be fetched.
	var attackerHits atomic.Int64
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attackerHits.Add(1)
		_, _ = w.Write([]byte(jwksJSON(t, jwkJSON(t, k.stranger, "attacker", "RS256"))))
	}))
	defer attacker.Close()

	// Public key encodings an attacker can get hold of, used as HMAC secrets (alg confusion).
	rsaPKIX, _ := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaPKIX})
	rsaPKCS1 := x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)
	rsaJWK, _ := json.Marshal(jwkJSON(t, k.rsa, "k-rsa", ""))
	ecPKIX, _ := x509.MarshalPKIXPublicKey(&k.ec.PublicKey)
	ecPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecPKIX})
	edPKIX, _ := x509.MarshalPKIXPublicKey(k.ed.Public())

	// A self-signed certificate of the attacker's key, for x5c.
	certDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(1),
		Subject: pkix.Name{CommonName: "docs.example.com"}, NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(time.Hour)},
		&x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "docs.example.com"}},
		&k.stranger.PublicKey, k.stranger)
	if err != nil {
		t.Fatal(err)
	}
	strangerJWK := jwkJSON(t, k.stranger, "k-rsa", "RS256")
	privateJWK := func() map[string]any {
		b, _ := (&jose.JSONWebKey{Key: k.stranger, KeyID: "x"}).MarshalJSON()
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		return m
	}()

	// flipTail changes the unused low bits of a segment's last character: the segment decodes
	// to the same bytes in a lenient decoder.
	flipTail := func(seg string) string {
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		i := strings.IndexByte(alphabet, seg[len(seg)-1])
		return seg[:len(seg)-1] + string(alphabet[i^1])
	}
	// A token whose payload segment has unused trailing bits (its length is not 0 mod 4).
	oddPayload := func() string {
		for n := 0; ; n++ {
			tok := mint(t, k.ec, "k-ec", "ES256", e.claims(map[string]any{"pad": strings.Repeat("p", n)}))
			if len(segs(tok)[1])%4 != 0 {
				return tok
			}
		}
	}()
	rs := valid(k.rsa, "k-rsa", "RS256")
	es := valid(k.ec, "k-ec", "ES256")

	type tc struct {
		name string
		tok  string
		want reason.Reason
	}
	cases := []tc{
		// alg none in every spelling, signed or not (CVE-2015-9235 and kin).
		{"alg none", rawJWT(t, hdr("none", ""), claims, nil), reason.UnsupportedAlgorithm},
		{"alg None", rawJWT(t, hdr("None", ""), claims, nil), reason.UnsupportedAlgorithm},
		{"alg NONE", rawJWT(t, hdr("NONE", ""), claims, nil), reason.UnsupportedAlgorithm},
		{"alg nOnE", rawJWT(t, hdr("nOnE", ""), claims, nil), reason.UnsupportedAlgorithm},
		{"alg none with a kid", rawJWT(t, hdr("none", "k-rsa"), claims, nil), reason.UnsupportedAlgorithm},
		{"alg none with a signature", rawJWT(t, hdr("none", "k-rsa"), claims, func(string) []byte { return []byte("sig") }), reason.UnsupportedAlgorithm},
		{"alg none, original signature kept", rawJWT(t, hdr("none", "k-rsa"), claims, nil) + segs(rs)[2], reason.UnsupportedAlgorithm},
		{"alg missing", rawJWT(t, map[string]any{"kid": "k-rsa"}, claims, signWith(t, k.rsa, "RS256")), reason.UnsupportedAlgorithm},
		{"alg empty", rawJWT(t, hdr("", "k-rsa"), claims, signWith(t, k.rsa, "RS256")), reason.UnsupportedAlgorithm},
		{"alg a number", rawJWT(t, map[string]any{"alg": 256, "kid": "k-rsa"}, claims, signWith(t, k.rsa, "RS256")), reason.UnsupportedAlgorithm},
		{"alg lower case", rawJWT(t, hdr("rs256", "k-rsa"), claims, signWith(t, k.rsa, "RS256")), reason.UnsupportedAlgorithm},
		{"alg with a space", rawJWT(t, hdr("RS256 ", "k-rsa"), claims, signWith(t, k.rsa, "RS256")), reason.UnsupportedAlgorithm},
		{"alg RS512", rawJWT(t, hdr("RS512", "k-rsa"), claims, signWith(t, k.rsa, "RS256")), reason.UnsupportedAlgorithm},
		{"alg HS512", rawJWT(t, hdr("HS512", "k-hs"), claims, signWith(t, k.hs, "HS256")), reason.UnsupportedAlgorithm},
		{"alg ES256K", rawJWT(t, hdr("ES256K", "k-ec"), claims, signWith(t, k.ec, "ES256")), reason.UnsupportedAlgorithm},
		{"alg a JWE algorithm", rawJWT(t, hdr("RSA-OAEP", "k-rsa"), claims, signWith(t, k.rsa, "RS256")), reason.UnsupportedAlgorithm},

		// Algorithm confusion: HS256 keyed with a public key (CVE-2016-10555, CVE-2022-29217).
		{"HS256 with the RSA PEM", rawJWT(t, hdr("HS256", "k-rsa"), claims, signWith(t, rsaPEM, "HS256")), reason.UnsupportedAlgorithm},
		{"HS256 with the RSA PKIX DER", rawJWT(t, hdr("HS256", "k-rsa"), claims, signWith(t, rsaPKIX, "HS256")), reason.UnsupportedAlgorithm},
		{"HS256 with the RSA PKCS#1 DER", rawJWT(t, hdr("HS256", "k-rsa"), claims, signWith(t, rsaPKCS1, "HS256")), reason.UnsupportedAlgorithm},
		{"HS256 with the RSA JWK", rawJWT(t, hdr("HS256", "k-rsa"), claims, signWith(t, rsaJWK, "HS256")), reason.UnsupportedAlgorithm},
		{"HS256 with the RSA modulus", rawJWT(t, hdr("HS256", "k-rs"), claims, signWith(t, k.rsa.N.Bytes(), "HS256")), reason.UnsupportedAlgorithm},
		{"HS256 with the EC PEM", rawJWT(t, hdr("HS256", "k-ec"), claims, signWith(t, ecPEM, "HS256")), reason.UnsupportedAlgorithm},
		{"HS256 with the Ed25519 key", rawJWT(t, hdr("HS256", "k-ed"), claims, signWith(t, edPKIX, "HS256")), reason.UnsupportedAlgorithm},
		{"HS256 without kid at an RSA-only issuer", rawJWT(t, hdr("HS256", ""), e.claims(map[string]any{"iss": partnerIssuer, "aud": "docs-api"}),
			signWith(t, rsaPEM, "HS256")), reason.UnsupportedAlgorithm},
		{"HS256 without kid, the issuer has an HMAC key", rawJWT(t, hdr("HS256", ""), claims, signWith(t, rsaPEM, "HS256")), reason.BadSignature},
		{"RS256 header on the EC key", rawJWT(t, hdr("RS256", "k-ec"), claims, signWith(t, k.rsa, "RS256")), reason.UnsupportedAlgorithm},
		{"ES256 header on the Ed25519 key", rawJWT(t, hdr("ES256", "k-ed"), claims, signWith(t, k.ec, "ES256")), reason.UnsupportedAlgorithm},
		{"EdDSA header on the RSA key", rawJWT(t, hdr("EdDSA", "k-rsa"), claims, signWith(t, k.ed, "EdDSA")), reason.UnsupportedAlgorithm},
		{"PS256 on a key stored for RS256", rawJWT(t, hdr("PS256", "k-rs"), claims, signWith(t, k.rsa, "PS256")), reason.UnsupportedAlgorithm},
		{"RS256 on the HMAC key", rawJWT(t, hdr("RS256", "k-hs"), claims, signWith(t, k.rsa, "RS256")), reason.UnsupportedAlgorithm},

		// A kid pointing at another issuer's key, or another site's.
		{"kid of the external issuer, iss of the site", valid(k.partner, "k-partner", "RS256"), reason.UnknownKey},
		{"kid of the site, iss of the external issuer", mint(t, k.rsa, "k-rsa", "RS256", e.claims(map[string]any{"iss": partnerIssuer, "aud": "docs-api"})), reason.UnknownKey},
		{"kid of another site's issuer", valid(k.ecOther, "k-other", "ES256"), reason.UnknownKey},

		// kid injection (CVE-2018-0114-style lookups, path traversal, SQL): only a map key here.
		{"kid path traversal", valid(k.ec, "../../../../../etc/passwd", "ES256"), reason.UnknownKey},
		{"kid /dev/null", valid(k.ec, "/dev/null", "ES256"), reason.UnknownKey},
		{"kid SQL", valid(k.ec, "' OR '1'='1' --", "ES256"), reason.UnknownKey},
		{"kid SQL union", valid(k.ec, "x' UNION SELECT 'secret", "ES256"), reason.UnknownKey},
		{"kid with a NUL", valid(k.ec, "k-ec\x00", "ES256"), reason.UnknownKey},
		{"kid with a trailing space", valid(k.ec, "k-ec ", "ES256"), reason.UnknownKey},
		{"kid in upper case", valid(k.ec, "K-EC", "ES256"), reason.UnknownKey},
		{"kid a URL", valid(k.ec, attacker.URL+"/key", "ES256"), reason.UnknownKey},
		{"kid 4 KiB long", valid(k.ec, strings.Repeat("k", 4096), "ES256"), reason.UnknownKey},
		{"kid a number", rawJWT(t, map[string]any{"alg": "ES256", "kid": 1}, claims, signWith(t, k.ec, "ES256")), reason.MalformedToken},

		// Headers that name keys elsewhere are never followed (RFC 8725 §3.10).
		{"jku to the attacker", rawJWT(t, hdr("RS256", "attacker", "jku", attacker.URL), claims, signWith(t, k.stranger, "RS256")), reason.UnknownKey},
		{"jku with a real kid", rawJWT(t, hdr("RS256", "k-rsa", "jku", attacker.URL), claims, signWith(t, k.stranger, "RS256")), reason.BadSignature},
		{"x5u to the attacker", rawJWT(t, hdr("RS256", "attacker", "x5u", attacker.URL+"/cert.pem"), claims, signWith(t, k.stranger, "RS256")), reason.UnknownKey},
		{"embedded jwk, its own kid", rawJWT(t, hdr("RS256", "attacker", "jwk", jwkJSON(t, k.stranger, "attacker", "RS256")), claims, signWith(t, k.stranger, "RS256")), reason.UnknownKey},
		{"embedded jwk, a real kid", rawJWT(t, hdr("RS256", "k-rsa", "jwk", strangerJWK), claims, signWith(t, k.stranger, "RS256")), reason.BadSignature},
		{"embedded jwk, no kid", rawJWT(t, hdr("RS256", "", "jwk", strangerJWK), claims, signWith(t, k.stranger, "RS256")), reason.BadSignature},
		{"embedded private jwk", rawJWT(t, hdr("RS256", "k-rsa", "jwk", privateJWK), claims, signWith(t, k.stranger, "RS256")), reason.MalformedToken},
		{"x5c of the attacker", rawJWT(t, hdr("RS256", "", "x5c", []string{b64std(certDER)}), claims, signWith(t, k.stranger, "RS256")), reason.BadSignature},

		// Critical headers we do not understand (RFC 7515 §4.1.11).
		{"crit exp", rawJWT(t, hdr("ES256", "k-ec", "crit", []string{"exp"}, "exp", 1), claims, signWith(t, k.ec, "ES256")), reason.MalformedToken},
		{"crit b64", rawJWT(t, hdr("ES256", "k-ec", "crit", []string{"b64"}, "b64", false), claims, signWith(t, k.ec, "ES256")), reason.MalformedToken},
		{"crit empty", rawJWT(t, hdr("ES256", "k-ec", "crit", []string{}), claims, signWith(t, k.ec, "ES256")), reason.MalformedToken},
		{"crit unknown", rawJWT(t, hdr("ES256", "k-ec", "crit", []string{"urn:example:x"}, "urn:example:x", true), claims, signWith(t, k.ec, "ES256")), reason.MalformedToken},
		{"b64 false without crit", rawJWT(t, hdr("ES256", "k-ec", "b64", false), claims, signWith(t, k.ec, "ES256")), reason.MalformedToken},

		// Claims.
		{"expired", valid(k.ec, "k-ec", "ES256") + "", reason.TokenExpired},
		{"nbf in the future", mint(t, k.ec, "k-ec", "ES256", e.claims(map[string]any{"nbf": testNow.Add(2 * time.Minute).Unix()})), reason.TokenNotYetValid},
		{"iat in the future", mint(t, k.ec, "k-ec", "ES256", e.claims(map[string]any{"iat": testNow.Add(time.Hour).Unix()})), reason.TokenNotYetValid},
		{"wrong iss", mint(t, k.ec, "k-ec", "ES256", e.claims(map[string]any{"iss": "https://docs.example.com.evil.example"})), reason.UnknownIssuer},
		{"wrong aud", mint(t, k.ec, "k-ec", "ES256", e.claims(map[string]any{"aud": "other"})), reason.InvalidAudience},
		{"aud array without the audience", mint(t, k.ec, "k-ec", "ES256", e.claims(map[string]any{"aud": []string{"other", "docs "}})), reason.InvalidAudience},
		{"aud array holding the audience", mint(t, k.ec, "k-ec", "ES256", e.claims(map[string]any{"aud": []string{"other", "docs"}})), ""},
		{"missing exp", mint(t, k.ec, "k-ec", "ES256", e.claims(map[string]any{"exp": nil})), reason.MalformedToken},
		{"exp far in the past as a negative number", mint(t, k.ec, "k-ec", "ES256", e.claims(map[string]any{"exp": -1})), reason.TokenExpired},
		{"nbf near int64 overflow", mint(t, k.ec, "k-ec", "ES256", e.claims(map[string]any{"nbf": 9.2e18})), reason.MalformedToken},
		{"AUD in upper case does not count as aud", mint(t, k.ec, "k-ec", "ES256", e.claims(map[string]any{"aud": "other", "AUD": "docs"})), reason.InvalidAudience},
		{"Exp in mixed case does not count as exp", mint(t, k.ec, "k-ec", "ES256", e.claims(map[string]any{"exp": nil, "Exp": testNow.Add(time.Hour).Unix()})), reason.MalformedToken},
		{"duplicate aud", rawJWT(t, hdr("ES256", "k-ec"), `{"iss":"`+docsIssuer+`","aud":"other","aud":"docs","sub":"1","exp":`+itoa(testNow.Add(time.Hour).Unix())+`}`, signWith(t, k.ec, "ES256")), reason.MalformedToken},
		{"duplicate alg in the header", rawJWT(t, `{"alg":"none","alg":"ES256","kid":"k-ec"}`, claims, signWith(t, k.ec, "ES256")), reason.MalformedToken},
		{"claims not an object", rawJWT(t, hdr("ES256", "k-ec"), `["iss"]`, signWith(t, k.ec, "ES256")), reason.MalformedToken},
		{"claims not JSON", rawJWT(t, hdr("ES256", "k-ec"), `iss=x`, signWith(t, k.ec, "ES256")), reason.MalformedToken},

		// Shape and encoding.
		{"two parts", strings.Join(segs(es)[:2], "."), reason.MalformedToken},
		{"one part", segs(es)[0], reason.MalformedToken},
		{"four parts", es + ".AAAA", reason.MalformedToken},
		{"five parts (JWE)", rawJWT(t, map[string]any{"alg": "RSA-OAEP", "enc": "A256GCM"}, "key", nil) + "AAAA.iviviviv.Y2lwaGVy.dGFn", reason.MalformedToken},
		{"empty header", "." + segs(es)[1] + "." + segs(es)[2], reason.MalformedToken},
		{"empty payload", segs(es)[0] + ".." + segs(es)[2], reason.MalformedToken},
		{"only dots", "..", reason.MalformedToken},
		{"base64 padding", segs(es)[0] + "==." + segs(es)[1] + "." + segs(es)[2], reason.MalformedToken},
		{"standard base64 characters", strings.Replace(es, "-", "+", 1) + "+/", reason.MalformedToken},
		{"bad base64 character", es[:10] + "!" + es[11:], reason.MalformedToken},
		{"segment of impossible length", segs(es)[0] + "." + segs(es)[1] + "A." + segs(es)[2], reason.MalformedToken},
		{"non-canonical payload encoding", strings.Join([]string{segs(oddPayload)[0], flipTail(segs(oddPayload)[1]), segs(oddPayload)[2]}, "."), reason.MalformedToken},
		{"non-canonical signature encoding", segs(rs)[0] + "." + segs(rs)[1] + "." + flipTail(segs(rs)[2]), reason.MalformedToken},
		{"header not JSON", b64url([]byte("alg=ES256")) + "." + segs(es)[1] + "." + segs(es)[2], reason.MalformedToken},
		{"header a JSON array", b64url([]byte(`["ES256"]`)) + "." + segs(es)[1] + "." + segs(es)[2], reason.MalformedToken},
		{"leading space", " " + es, reason.MalformedToken},
		{"trailing newline", es + "\n", reason.MalformedToken},
		{"Bearer prefix left on", "Bearer " + es, reason.MalformedToken},
		{"JSON serialization", `{"payload":"` + segs(es)[1] + `","protected":"` + segs(es)[0] + `","signature":"` + segs(es)[2] + `"}`, reason.MalformedToken},
		{"one byte over 8 KiB", strings.Repeat("A", MaxJWTLen-len(es)+1) + es, reason.MalformedToken},
		{"1 MiB", strings.Repeat("eyJ", 1<<20/3), reason.MalformedToken},

		// Signatures.
		{"signature of another token", segs(es)[0] + "." + segs(mint(t, k.ec, "k-ec", "ES256", e.claims(map[string]any{"sub": "admin"})))[1] + "." + segs(es)[2], reason.BadSignature},
		{"signature of another token by the same key", segs(rs)[0] + "." + segs(rs)[1] + "." + segs(valid(k.rsa, "k-rsa", "PS256"))[2], reason.BadSignature},
		{"payload changed", segs(es)[0] + "." + b64url(mustJSON(t, e.claims(map[string]any{"sub": "admin"}))) + "." + segs(es)[2], reason.BadSignature},
		{"header changed (kid swapped for the same key)", rawJWT(t, hdr("RS256", "k-rs"), claims, nil) + segs(rs)[2], reason.BadSignature},
		{"signature stripped", segs(rs)[0] + "." + segs(rs)[1] + ".", reason.BadSignature},
		{"RSA signature truncated", segs(rs)[0] + "." + segs(rs)[1] + "." + segs(rs)[2][:40], reason.BadSignature},
		{"ES256 psychic signature r=s=0 (CVE-2022-21449)", rawJWT(t, hdr("ES256", "k-ec"), claims, func(string) []byte { return make([]byte, 64) }), reason.BadSignature},
		{"ES256 signature in ASN.1 DER", rawJWT(t, hdr("ES256", "k-ec"), claims, func(in string) []byte { return derECDSA(t, rawSign(t, k.ec, "ES256", in)) }), reason.BadSignature},
		{"ES256 signature with r = n", rawJWT(t, hdr("ES256", "k-ec"), claims, func(in string) []byte { return rEqualsOrder(rawSign(t, k.ec, "ES256", in)) }), reason.BadSignature},
		{"EdDSA signature with S+L (malleable)", rawJWT(t, hdr("EdDSA", "k-ed"), claims, func(in string) []byte { return edMalleate(rawSign(t, k.ed, "EdDSA", in)) }), reason.BadSignature},
		{"HS256 signed with another secret", rawJWT(t, hdr("HS256", "k-hs"), claims, signWith(t, []byte("not-the-docs-hs256-secret-32bytes!!"), "HS256")), reason.BadSignature},
		{"HS256 signature truncated", rawJWT(t, hdr("HS256", "k-hs"), claims, func(in string) []byte { return rawSign(t, k.hs, "HS256", in)[:16] }), reason.BadSignature},
		{"signed by a stranger under a real kid", valid(k.stranger, "k-rsa", "RS256"), reason.BadSignature},
	}
	// The expired case needs an expired token.
	for i := range cases {
		if cases[i].name == "expired" {
			cases[i].tok = mint(t, k.ec, "k-ec", "ES256", e.claims(map[string]any{"exp": testNow.Add(-2 * time.Minute).Unix()}))
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, err := e.verify(e.docs, tc.tok)
			got, h := reasonAndHeaders(t, err)
			if got != tc.want {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.want)
			}
			if tc.want == "" {
				return
			}
			if id.Kind != "" || id.User != "" {
				t.Fatalf("a refused token returned an identity: %+v", id)
			}
			if got.Status() != http.StatusUnauthorized || !strings.HasPrefix(h["WWW-Authenticate"], `Bearer error="invalid_token"`) {
				t.Fatalf("status %d, WWW-Authenticate %q", got.Status(), h["WWW-Authenticate"])
			}
			if strings.Contains(err.Error(), tc.tok) && len(tc.tok) > 8 {
				t.Fatal("the error echoes the token")
			}
		})
	}
	if n := attackerHits.Load(); n != 0 {
		t.Fatalf("the attacker's server was asked %d times", n)
	}
}

func b64std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// derECDSA re-encodes a JWS ES256 signature (r||s) as ASN.1 DER, the X.509 form.
func derECDSA(t testing.TB, sig []byte) []byte {
	t.Helper()
	der, err := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// rEqualsOrder replaces r with the P-256 group order n, a value outside [1, n-1].
func rEqualsOrder(sig []byte) []byte {
	out := append([]byte(nil), sig...)
	elliptic.P256().Params().N.FillBytes(out[:32])
	return out
}

// edMalleate adds the group order L to an Ed25519 signature's S (little endian), the
// malleability RFC 8032 §5.1.7 makes verifiers refuse.
func edMalleate(sig []byte) []byte {
	l := [32]byte{0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10}
	out := append([]byte(nil), sig...)
	var carry uint16
	for i := 0; i < 32; i++ {
		v := uint16(out[32+i]) + uint16(l[i]) + carry
		out[32+i], carry = byte(v), v>>8
	}
	return out
}

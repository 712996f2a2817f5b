package bench

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file/filetest"
	"github.com/tokenagent/tokenagent/vault/jwks"
)

// Benchmarks of the OAuth bearer JWT verifier (issue 5). Targets: a token seen for the first
// time (verified-token cache off) costs at most 1.15× the bare crypto/* verification of the
// same signature; a cache hit at most 250 ns.
//
//	go test ./bench -run '^$' -bench 'OAuth' -benchmem -count 6 | tee oauth.txt

const oaIssuer = "https://docs.example.com"

type oaBench struct {
	rsa *rsa.PrivateKey
	ec  *ecdsa.PrivateKey
	ed  ed25519.PrivateKey
}

// oaKeys are generated once per benchmark binary.
var oaKeys = sync.OnceValues(func() (*oaBench, error) {
	k := &oaBench{}
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, err
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		return nil, err
	}
	return k, nil
})

func oaSetup(b *testing.B) (*oaBench, *vault.Store) {
	b.Helper()
	k, err := oaKeys()
	if err != nil {
		b.Fatal(err)
	}
	var keys []string
	for _, j := range []jose.JSONWebKey{
		{Key: &k.rsa.PublicKey, KeyID: "k-rsa", Algorithm: "RS256"},
		{Key: &k.ec.PublicKey, KeyID: "k-ec", Algorithm: "ES256"},
		{Key: k.ed.Public(), KeyID: "k-ed", Algorithm: "EdDSA"},
	} {
		raw, err := j.MarshalJSON()
		if err != nil {
			b.Fatal(err)
		}
		keys = append(keys, string(raw))
	}
	yaml := "sites:\n  docs:\n    oauth:\n      issuer: \"" + oaIssuer + "\"\n      audience: docs\n" +
		"      jwks: {keys: [" + strings.Join(keys, ", ") + "]}\n"
	return k, filetest.Store(b, yaml, vault.StoreOptions{Logger: slog.New(slog.DiscardHandler)})
}

// oaClaims are realistic access token claims (RFC 9068).
func oaClaims() map[string]any {
	now := time.Now()
	return map[string]any{"iss": oaIssuer, "aud": []string{"docs", "https://api.example.com"},
		"sub": "248289761001", "client_id": "s6BhdRkqt3", "scope": "openid profile pages:read pages:write",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": "dbe39bf3a3ba4238a513f51d6e1691c4"}
}

func oaMint(b *testing.B, key any, kid, alg string) string {
	b.Helper()
	tok, err := token.MintJWT(jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: alg}, oaClaims())
	if err != nil {
		b.Fatal(err)
	}
	return tok
}

// rawVerify is the bare crypto/* verification of tok's signature: SHA-256 of the signing input
// and the algorithm's verify, as a hand-written verifier of this one token would do it.
func rawVerify(alg string, pub crypto.PublicKey, tok string) func() bool {
	i := strings.LastIndexByte(tok, '.')
	input := []byte(tok[:i])
	sig, _ := base64.RawURLEncoding.DecodeString(tok[i+1:])
	switch alg {
	case "RS256":
		return func() bool {
			h := sha256.Sum256(input)
			return rsa.VerifyPKCS1v15(pub.(*rsa.PublicKey), crypto.SHA256, h[:], sig) == nil
		}
	case "ES256":
		return func() bool {
			h := sha256.Sum256(input)
			r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
			return ecdsa.Verify(pub.(*ecdsa.PublicKey), h[:], r, s)
		}
	case "EdDSA":
		return func() bool { return ed25519.Verify(pub.(ed25519.PublicKey), input, sig) }
	}
	panic(alg)
}

// BenchmarkOAuthFirstSight compares, per algorithm, a full verification of a token never seen
// before (the verified-token cache off: parse, issuer, key, signature, claims) with the bare
// crypto verification of the same signature. The ratio verifier/raw is the overhead.
func BenchmarkOAuthFirstSight(b *testing.B) {
	k, store := oaSetup(b)
	site := &token.SiteSettings{ID: "docs"}
	ctx := context.Background()
	for _, tc := range []struct {
		alg, kid string
		priv     any
		pub      crypto.PublicKey
	}{
		{"RS256", "k-rsa", k.rsa, &k.rsa.PublicKey},
		{"ES256", "k-ec", k.ec, &k.ec.PublicKey},
		{"EdDSA", "k-ed", k.ed, k.ed.Public()},
	} {
		tok := oaMint(b, tc.priv, tc.kid, tc.alg)
		v := oaVerifier(b, store, false)
		if _, err := v.Verify(ctx, site, tok); err != nil {
			b.Fatal(err)
		}
		raw := rawVerify(tc.alg, tc.pub, tok)
		if !raw() {
			b.Fatal("raw verify failed")
		}
		b.Run(tc.alg+"/verifier", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, site, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.alg+"/raw", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !raw() {
					b.Fatal("raw verify failed")
				}
			}
		})
	}
}

// BenchmarkOAuthCacheHit is a token verified before: the verified-token cache answers.
func BenchmarkOAuthCacheHit(b *testing.B) {
	k, store := oaSetup(b)
	site := &token.SiteSettings{ID: "docs"}
	ctx := context.Background()
	v := oaVerifier(b, store, true)
	tok := oaMint(b, k.ec, "k-ec", "ES256")
	warm(b, v, site, tok)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, site, tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOAuthCacheHitParallel(b *testing.B) {
	k, store := oaSetup(b)
	site := &token.SiteSettings{ID: "docs"}
	ctx := context.Background()
	v := oaVerifier(b, store, true)
	tok := oaMint(b, k.ed, "k-ed", "EdDSA")
	warm(b, v, site, tok)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := v.Verify(ctx, site, tok); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkOAuthRefused is the cost of refusing garbage cheaply: alg none, and an unknown kid.
func BenchmarkOAuthRefused(b *testing.B) {
	k, store := oaSetup(b)
	site := &token.SiteSettings{ID: "docs"}
	ctx := context.Background()
	v := oaVerifier(b, store, true)
	enc := func(v any) string { j, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(j) }
	for name, tok := range map[string]string{
		"alg-none":    enc(map[string]any{"alg": "none"}) + "." + enc(oaClaims()) + ".",
		"unknown-kid": oaMint(b, k.ec, "k-nope", "ES256"),
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, site, tok); err == nil {
					b.Fatal("accepted")
				}
			}
		})
	}
}

// oaVerifier is the OAuth verifier as an agent builds it, with the verified-token cache when
// cached.
func oaVerifier(b *testing.B, store *vault.Store, cached bool) *token.OAuthVerifier {
	b.Helper()
	m, err := token.NewOAuthMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	v := &token.OAuthVerifier{Keys: store, JWKS: jwks.NewCache(jwks.Options{}), Metrics: m, MaxCacheAge: store.Refresh()}
	if cached {
		if v.Cache, err = token.NewVerifiedTokens(0, m); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(v.Cache.Close)
	}
	return v
}

// warm verifies tok, then waits until the cache (ristretto admits asynchronously) holds it.
func warm(b *testing.B, v *token.OAuthVerifier, site *token.SiteSettings, tok string) {
	b.Helper()
	if _, err := v.Verify(context.Background(), site, tok); err != nil {
		b.Fatal(err)
	}
	v.Cache.Wait()
}

// BenchmarkOAuthCacheHitParts are the parts of a cache hit that are not the verifier's own:
// the key store's lookup of the issuer record (a hit re-checks it, so revocation takes effect
// within the refresh interval) and one clock read (a hit reads the clock three times: the
// verifier, the store, the store's ristretto).
func BenchmarkOAuthCacheHitParts(b *testing.B) {
	_, store := oaSetup(b)
	ctx := context.Background()
	if _, err := store.OAuthIssuer(ctx, "docs"); err != nil {
		b.Fatal(err)
	}
	b.Run("store-lookup", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := store.OAuthIssuer(ctx, "docs"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("clock-read", func(b *testing.B) {
		var t time.Time
		for b.Loop() {
			t = time.Now()
		}
		_ = t
	})
}

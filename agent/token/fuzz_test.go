package token

import (
	"context"
	"strings"
	"testing"

	"github.com/tokenagent/tokenagent/vault"
)

// FuzzParseAuthToken checks that the Auth Token parser never panics, accepts only the shape of
// SPEC §3.1, and that what it accepts it splits without loss.
func FuzzParseAuthToken(f *testing.F) {
	f.Add(MintAuthToken(vault.NewSecret(keyNew), "42", testNow))
	f.Add("42_638679232000000000_" + hex64("a"))
	f.Add("_" + "_")
	f.Add("1__")
	f.Add(strings.Repeat("9", 19) + "_" + strings.Repeat("9", 18) + "_" + hex64("F"))
	f.Fuzz(func(t *testing.T, tok string) {
		p, ok := parseAuthToken(tok)
		if !ok {
			return
		}
		if len(tok) > MaxTokenLen || !allDigits(p.user) || len(p.user) > 19 || !isHex64(p.sig) {
			t.Fatalf("accepted a token of the wrong shape: %q -> %+v", tok, p)
		}
		if p.signed+"_"+p.sig != tok || !strings.HasPrefix(p.signed, p.user+"_") {
			t.Fatalf("split loses data: %q -> %+v", tok, p)
		}
	})
}

// FuzzParseServerToken checks the Server API Token parser the same way, and that verification
// of whatever it accepts answers with a reason rather than panicking.
func FuzzParseServerToken(f *testing.F) {
	f.Add(MintServerToken("k1", vault.NewSecret([]byte("s3cret")), "=john_doe%40x", testNow))
	f.Add("tkn_k1_1_2_" + hex64("a"))
	f.Add("tkn_k1_1_=a_b_c_" + hex64("0"))
	f.Add("tkn____")
	f.Add("k1_99999999999999999999_1_" + hex64("a"))
	store := testStore(f)
	v := &ServerTokenVerifier{Keys: store, Replay: NewReplayCache(nil)}
	site := testSite("docs")
	f.Fuzz(func(t *testing.T, tok string) {
		body := strings.TrimPrefix(tok, ServerTokenPrefix)
		if p, ok := parseServerToken(body); ok {
			if !isAlnum(p.key) || len(p.key) > 64 || !validUser(p.user) || !isHex64(p.sig) {
				t.Fatalf("accepted a token of the wrong shape: %q -> %+v", tok, p)
			}
			if p.key+"_"+p.epochStr+"_"+p.user+"_"+p.sig != body {
				t.Fatalf("split loses data: %q -> %+v", tok, p)
			}
		}
		if _, err := v.Verify(context.Background(), site, tok); err == nil && !strings.HasPrefix(tok, ServerTokenPrefix) {
			t.Fatalf("accepted %q without the tkn_ prefix", tok)
		}
	})
}

//go:build tokenagent_keyuse

// These tests need vault.Secret.Observe, which only the tokenagent_keyuse build has:
//
//	go test -tags tokenagent_keyuse ./agent/token/    (.ci/test runs it)

package token

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/vault"
)

// keyUses records the key uses (vault.Secret.Observe) of the secrets it watches while f runs.
// These tests prove timing safety by the code path each case takes — which key is used, how,
// and how often — not by measuring time, which a loaded test machine cannot do reliably.
func keyUses(t *testing.T, watch map[*vault.Secret]string, f func()) []string {
	t.Helper()
	var mu sync.Mutex
	var uses []string
	for s, name := range watch {
		stop := s.Observe(func(u vault.KeyUse) {
			mu.Lock()
			uses = append(uses, name+"/"+useName(u))
			mu.Unlock()
		})
		defer stop()
	}
	f()
	mu.Lock()
	defer mu.Unlock()
	return append([]string(nil), uses...)
}

func useName(u vault.KeyUse) string {
	switch u {
	case vault.KeyUseMAC:
		return "mac"
	case vault.KeyUseEqual:
		return "equal"
	case vault.KeyUseBytes:
		return "bytes"
	case vault.KeyUseAppend:
		return "append"
	}
	return "?"
}

// TestServerTokenDecoyPath: a Server API Token naming an unknown key and one naming a known
// key with a bad signature take the same path — exactly one HMAC over the same message, with
// the decoy secret for the unknown key and the key's secret for the known one, the signature
// compared in constant time either way — and only their reasons differ. Both forms of the
// token (prefixed and legacy unprefixed).
func TestServerTokenDecoyPath(t *testing.T) {
	store := testStore(t)
	rec, err := store.ServerKey(context.Background(), "docs", "k1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.ServerKey(context.Background(), "docs", "nokey"); err == nil {
		t.Fatal("nokey exists")
	}
	watch := map[*vault.Secret]string{decoySecret: "decoy", rec.Secret: "k1"}
	site := testSite("docs")
	site.LegacyUnprefixedServerToken = true
	v := &ServerTokenVerifier{Keys: store, Replay: NewReplayCache(nil), Now: func() time.Time { return testNow }}
	epoch := "1795262400" // testNow
	for _, tc := range []struct {
		name, tok, want string
		unprefixed      bool
		reason          reason.Reason
	}{
		{"unknown key", "tkn_nokey_" + epoch + "_42_" + hex64("a"), "decoy/mac", false, reason.UnknownKey},
		{"known key, bad signature", "tkn_k1_" + epoch + "_42_" + hex64("a"), "k1/mac", false, reason.BadSignature},
		{"unknown key, unprefixed", "nokey_" + epoch + "_42_" + hex64("a"), "decoy/mac", true, reason.UnknownKey},
		{"known key, bad signature, unprefixed", "k1_" + epoch + "_42_" + hex64("a"), "k1/mac", true, reason.BadSignature},
	} {
		var got reason.Reason
		uses := keyUses(t, watch, func() {
			var err error
			if tc.unprefixed {
				_, err = v.VerifyUnprefixed(context.Background(), site, tc.tok)
			} else {
				_, err = v.Verify(context.Background(), site, tc.tok)
			}
			got = reasonOf(t, err)
		})
		if len(uses) != 1 || uses[0] != tc.want {
			t.Errorf("%s: key uses %v, want exactly [%s]", tc.name, uses, tc.want)
		}
		if got != tc.reason {
			t.Errorf("%s: reason %s, want %s", tc.name, got, tc.reason)
		}
	}
}

// TestAPIKeyDecoyPath: a Site API Key at a site without a legacy key and a wrong key at a site
// with one take the same path — one read of a key (the decoy's or the site's) into one
// SHA-256 compare — and the same answer, invalid_api_key.
func TestAPIKeyDecoyPath(t *testing.T) {
	f := newLegacyFixture(t)
	store := f.store
	leg, err := store.Legacy(context.Background(), "docs")
	if err != nil {
		t.Fatal(err)
	}
	watch := map[*vault.Secret]string{decoyAPIKey: "decoy", leg.APIKey: "docs"}
	v := &APIKeyVerifier{Keys: store}
	for _, tc := range []struct{ name, site, want string }{
		{"site without a legacy key", "nolegacy", "decoy/bytes"},
		{"wrong key", "docs", "docs/bytes"},
	} {
		site := testSite(tc.site)
		site.LegacyAPIKey = true
		var got reason.Reason
		uses := keyUses(t, watch, func() {
			_, err := v.Verify(context.Background(), site, "not-the-key", "")
			got = reasonOf(t, err)
		})
		if len(uses) != 1 || uses[0] != tc.want {
			t.Errorf("%s: key uses %v, want exactly [%s]", tc.name, uses, tc.want)
		}
		if got != reason.InvalidAPIKey {
			t.Errorf("%s: reason %s, want invalid_api_key", tc.name, got)
		}
	}
}

// TestAuthTokenBadSignaturePath: an Auth Token with a bad signature is checked against every
// key generation still valid (one HMAC each), whatever the signature holds, so its timing does
// not depend on how close the forgery is; a valid token stops at the generation that signed it.
func TestAuthTokenBadSignaturePath(t *testing.T) {
	store := testStore(t)
	keys, err := store.AuthTokenKeys(context.Background(), "docs", DefaultAuthTokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	watch := map[*vault.Secret]string{}
	for i, g := range keys.Generations {
		watch[g.Secret] = []string{"new", "old", "older"}[i]
	}
	v := &AuthTokenVerifier{Keys: store, Now: func() time.Time { return testNow }}
	good := MintAuthToken(vault.NewSecret(keyNew), "42", testNow)
	forged := good[:len(good)-64] + hex64("0")
	almost := good[:len(good)-1] + map[bool]string{true: "0", false: "1"}[good[len(good)-1] != '0']
	for _, tc := range []struct{ name, tok, want string }{
		{"forged", forged, "[new/mac old/mac]"},
		{"one digit off", almost, "[new/mac old/mac]"},
		{"valid", good, "[new/mac]"},
	} {
		uses := keyUses(t, watch, func() { _, _ = v.Verify(context.Background(), testSite("docs"), tc.tok) })
		if got := fmtUses(uses); got != tc.want {
			t.Errorf("%s: key uses %s, want %s", tc.name, got, tc.want)
		}
	}
}

func fmtUses(u []string) string {
	s := "["
	for i, x := range u {
		if i > 0 {
			s += " "
		}
		s += x
	}
	return s + "]"
}

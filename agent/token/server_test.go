package token

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/vault"
)

func TestServerTokenVerify(t *testing.T) {
	store := testStore(t)
	v := &ServerTokenVerifier{Keys: store, Replay: NewReplayCache(func() time.Time { return testNow }),
		Now: func() time.Time { return testNow }}
	k1 := vault.NewSecret([]byte("s3cret"))
	mint := func(key, secret, user string, at time.Time) string {
		return MintServerToken(key, vault.NewSecret([]byte(secret)), user, at)
	}
	valid := MintServerToken("k1", k1, "42", testNow)
	epoch := strconv.FormatInt(testNow.Unix(), 10)

	tests := []struct {
		name     string
		site     string
		tok      string
		want     reason.Reason
		wantUser string
	}{
		{"user id", "docs", valid, "", "42"},
		{"upper-case signature", "docs", valid[:len(valid)-64] + strings.ToUpper(valid[len(valid)-64:]), "", "42"},
		{"username", "docs", MintServerToken("k1", k1, "=alice", testNow), "", "=alice"},
		{"username with _ and encoding", "docs", MintServerToken("k1", k1, "=john_doe@x y", testNow), "", "=john_doe%40x+y"},
		{"300 s old", "docs", MintServerToken("k1", k1, "42", testNow.Add(-300*time.Second)), "", "42"},
		{"301 s old", "docs", MintServerToken("k1", k1, "42", testNow.Add(-301*time.Second)), reason.TokenExpired, ""},
		{"300 s ahead", "docs", MintServerToken("k1", k1, "42", testNow.Add(300*time.Second)), "", "42"},
		{"301 s ahead", "docs", MintServerToken("k1", k1, "42", testNow.Add(301*time.Second)), reason.TokenNotYetValid, ""},
		{"unknown key", "docs", mint("nokey", "s3cret", "42", testNow), reason.UnknownKey, ""},
		{"wrong secret", "docs", mint("k1", "guess", "42", testNow), reason.BadSignature, ""},
		{"signature over another user", "docs", strings.Replace(valid, "_42_", "_43_", 1), reason.BadSignature, ""},
		{"disabled key", "docs", mint("off", "off-secret", "42", testNow), reason.RevokedKey, ""},
		{"disabled key, forged", "docs", mint("off", "guess", "42", testNow), reason.BadSignature, ""},
		{"restricted to its username", "docs", mint("bot", "bot-secret", "=deploy-bot", testNow), "", "=deploy-bot"},
		{"restricted, another user", "docs", mint("bot", "bot-secret", "1", testNow), reason.UserRestricted, ""},
		{"restricted, another username", "docs", mint("bot", "bot-secret", "=admin", testNow), reason.UserRestricted, ""},
		{"restricted to an id", "docs", mint("seven", "seven-secret", "7", testNow), "", "7"},
		{"restricted to an id, another id", "docs", mint("seven", "seven-secret", "70", testNow), reason.UserRestricted, ""},
		{"token of another site (same key name)", "other", valid, reason.BadSignature, ""},
		{"site without the key", "empty", valid, reason.UnknownKey, ""},
		{"prefix only", "docs", "tkn_", reason.MalformedToken, ""},
		{"no signature", "docs", "tkn_k1_" + epoch + "_42", reason.MalformedToken, ""},
		{"empty key", "docs", "tkn__" + epoch + "_42_" + hex64("a"), reason.MalformedToken, ""},
		{"key with a symbol", "docs", "tkn_k-1_" + epoch + "_42_" + hex64("a"), reason.MalformedToken, ""},
		{"65-character key", "docs", "tkn_" + strings.Repeat("k", 65) + "_" + epoch + "_42_" + hex64("a"), reason.MalformedToken, ""},
		{"epoch not decimal", "docs", "tkn_k1_12x_42_" + hex64("a"), reason.MalformedToken, ""},
		{"empty user", "docs", "tkn_k1_" + epoch + "__" + hex64("a"), reason.MalformedToken, ""},
		{"bare =", "docs", "tkn_k1_" + epoch + "_=_" + hex64("a"), reason.MalformedToken, ""},
		{"user neither id nor =name", "docs", "tkn_k1_" + epoch + "_bob_" + hex64("a"), reason.MalformedToken, ""},
		{"bad escape in username", "docs", "tkn_k1_" + epoch + "_=a%zz_" + hex64("a"), reason.MalformedToken, ""},
		{"short signature", "docs", "tkn_k1_" + epoch + "_42_" + hex64("a")[2:], reason.MalformedToken, ""},
		{"over 255 characters", "docs", MintServerToken("k1", k1, "="+strings.Repeat("u", 200), testNow), reason.MalformedToken, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), testSite(tc.site), tc.tok)
			if got := reasonOf(t, err); got != tc.want {
				t.Fatalf("reason = %q, want %q", got, tc.want)
			}
			if err != nil {
				return
			}
			if id.Kind != KindServer || id.User != tc.wantUser {
				t.Fatalf("identity = %+v, want server user %s", id, tc.wantUser)
			}
		})
	}
}

func TestServerTokenRestrictedIsForbidden(t *testing.T) {
	v := &ServerTokenVerifier{Keys: testStore(t), Now: func() time.Time { return testNow }}
	tok := MintServerToken("bot", vault.NewSecret([]byte("bot-secret")), "1", testNow)
	_, err := v.Verify(context.Background(), testSite("docs"), tok)
	if e := err.(*reason.Error); e.HTTPStatus() != http.StatusForbidden {
		t.Fatalf("status = %d, want 403", e.HTTPStatus())
	}
}

func TestServerTokenSingleUse(t *testing.T) {
	now := testNow
	clock := func() time.Time { return now }
	v := &ServerTokenVerifier{Keys: testStore(t), Replay: NewReplayCache(clock), Now: clock}
	site := testSite("docs")
	site.ServerTokenSingleUse = true
	k1 := vault.NewSecret([]byte("s3cret"))
	tok := MintServerToken("k1", k1, "42", now)
	ctx := context.Background()

	if _, err := v.Verify(ctx, site, tok); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if got := reasonOf(t, second(v.Verify(ctx, site, tok))); got != reason.ReplayedToken {
		t.Fatalf("second use: reason %q, want replayed_token", got)
	}
	upper := tok[:len(tok)-64] + strings.ToUpper(tok[len(tok)-64:])
	if got := reasonOf(t, second(v.Verify(ctx, site, upper))); got != reason.ReplayedToken {
		t.Fatalf("same token with upper-case digest: reason %q, want replayed_token", got)
	}
	if _, err := v.Verify(ctx, site, MintServerToken("k1", k1, "43", now)); err != nil {
		t.Fatalf("another token: %v", err)
	}
	if _, err := v.Verify(ctx, testSite("docs"), tok); err != nil {
		t.Fatalf("a site without single use still accepts it: %v", err)
	}
	// A bad token is not remembered: it cannot burn a good one.
	if got := reasonOf(t, second(v.Verify(ctx, site, MintServerToken("k1", vault.NewSecret([]byte("x")), "44", now)))); got != reason.BadSignature {
		t.Fatalf("forged: %q", got)
	}
	if _, err := v.Verify(ctx, site, MintServerToken("k1", k1, "44", now)); err != nil {
		t.Fatalf("after a forged try, the real token: %v", err)
	}
	// Once its window has passed the token is expired, not replayed, and its entry can go.
	now = now.Add(site.ServerTokenWindow + time.Second)
	if got := reasonOf(t, second(v.Verify(ctx, site, tok))); got != reason.TokenExpired {
		t.Fatalf("after the window: %q, want token_expired", got)
	}
}

func TestServerTokenUnprefixed(t *testing.T) {
	v := &ServerTokenVerifier{Keys: testStore(t), Now: func() time.Time { return testNow }}
	k1 := vault.NewSecret([]byte("s3cret"))
	legacy := MintUnprefixedServerToken("k1", k1, "=a_b", testNow)
	id, err := v.VerifyUnprefixed(context.Background(), testSite("docs"), legacy)
	if err != nil || id.User != "=a_b" || id.Kind != KindServer {
		t.Fatalf("legacy form: %+v, %v", id, err)
	}
	// The prefixed form's signature (with separators) is not valid in the unprefixed form.
	modern := strings.TrimPrefix(MintServerToken("k1", k1, "42", testNow), ServerTokenPrefix)
	if got := reasonOf(t, second(v.VerifyUnprefixed(context.Background(), testSite("docs"), modern))); got != reason.BadSignature {
		t.Fatalf("modern signature in the legacy form: %q", got)
	}
	if got := reasonOf(t, second(v.Verify(context.Background(), testSite("docs"), "tkn_"+legacy))); got != reason.BadSignature {
		t.Fatalf("legacy signature in the prefixed form: %q", got)
	}
}

func TestReplayCacheSweeps(t *testing.T) {
	now := testNow
	c := NewReplayCache(func() time.Time { return now })
	// Sweeps are amortised: a shard sweeps when it has doubled (at least 256 entries), so the
	// cache holds at most about twice the live tokens.
	const n = 40000
	for i := 0; i < n; i++ {
		sig := strconv.FormatInt(int64(i), 16)
		sig = strings.Repeat("0", 64-len(sig)) + sig
		if !c.firstUse("docs", "k1", sig, now.Add(time.Second)) {
			t.Fatalf("token %d reported as replayed", i)
		}
	}
	now = now.Add(2 * time.Second)
	for i := 0; i < n; i++ {
		sig := strconv.FormatInt(int64(i+n), 16)
		c.firstUse("docs", "k1", strings.Repeat("0", 64-len(sig))+sig, now.Add(time.Second))
	}
	if got := c.Len(); got >= 2*n-n/4 {
		t.Fatalf("expired entries were never swept: %d remembered", got)
	}
}

func second[T any](_ T, err error) error { return err }

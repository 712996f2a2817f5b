package token

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/vault"
)

func TestAuthTokenVerify(t *testing.T) {
	store := testStore(t)
	v := &AuthTokenVerifier{Keys: store, Now: func() time.Time { return testNow }}
	cur, old := vault.NewSecret(keyNew), vault.NewSecret(keyOld)
	shortGrace := testSite("docs")
	shortGrace.AuthTokenRotationGrace = time.Hour
	ttl := DefaultAuthTokenTTL

	valid := MintAuthToken(cur, "42", testNow.Add(-time.Hour))
	upperSig := valid[:len(valid)-64] + strings.ToUpper(valid[len(valid)-64:])
	ticks := strconv.FormatInt(UnixToTicks(testNow), 10)

	tests := []struct {
		name     string
		site     *SiteSettings
		tok      string
		want     reason.Reason
		wantUser string
	}{
		{"current key", testSite("docs"), valid, "", "42"},
		{"upper-case signature", testSite("docs"), upperSig, "", "42"},
		{"19-digit user id", testSite("docs"), MintAuthToken(cur, "1234567890123456789", testNow), "", "1234567890123456789"},
		{"older generation inside the rotation grace", testSite("docs"), MintAuthToken(old, "42", testNow.Add(-48*time.Hour)), "", "42"},
		{"older generation after the rotation grace", shortGrace, MintAuthToken(old, "42", testNow.Add(-48*time.Hour)), reason.BadSignature, ""},
		{"unknown key", testSite("docs"), MintAuthToken(vault.NewSecret(keyUnknown), "42", testNow), reason.BadSignature, ""},
		{"token of another site", testSite("other"), valid, reason.BadSignature, ""},
		{"site without a key", testSite("empty"), valid, reason.UnknownKey, ""},
		{"exactly at its lifetime", testSite("docs"), MintAuthToken(cur, "42", testNow.Add(-ttl)), "", "42"},
		{"one second past its lifetime", testSite("docs"), MintAuthToken(cur, "42", testNow.Add(-ttl-time.Second)), reason.TokenExpired, ""},
		{"60 s in the future", testSite("docs"), MintAuthToken(cur, "42", testNow.Add(60*time.Second)), "", "42"},
		{"61 s in the future", testSite("docs"), MintAuthToken(cur, "42", testNow.Add(61*time.Second)), reason.TokenNotYetValid, ""},
		{"expired and forged", testSite("docs"), "42_" + ticks[:17] + "0_" + hex64("a"), reason.BadSignature, ""},
		{"empty", testSite("docs"), "", reason.MalformedToken, ""},
		{"no separators", testSite("docs"), "42", reason.MalformedToken, ""},
		{"20-digit user id", testSite("docs"), "12345678901234567890_" + ticks + "_" + hex64("a"), reason.MalformedToken, ""},
		{"user id not decimal", testSite("docs"), "4x_" + ticks + "_" + hex64("a"), reason.MalformedToken, ""},
		{"empty user id", testSite("docs"), "_" + ticks + "_" + hex64("a"), reason.MalformedToken, ""},
		{"17-digit ticks", testSite("docs"), "42_" + ticks[1:] + "_" + hex64("a"), reason.MalformedToken, ""},
		{"19-digit ticks", testSite("docs"), "42_" + ticks + "0_" + hex64("a"), reason.MalformedToken, ""},
		{"ticks before 1970", testSite("docs"), "42_100000000000000000_" + hex64("a"), reason.MalformedToken, ""},
		{"63-digit signature", testSite("docs"), "42_" + ticks + "_" + hex64("a")[1:], reason.MalformedToken, ""},
		{"non-hex signature", testSite("docs"), "42_" + ticks + "_" + hex64("g"), reason.MalformedToken, ""},
		{"trailing separator", testSite("docs"), valid + "_", reason.MalformedToken, ""},
		{"over 255 characters", testSite("docs"), valid + strings.Repeat("0", 256-len(valid)), reason.MalformedToken, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), tc.site, tc.tok)
			if got := reasonOf(t, err); got != tc.want {
				t.Fatalf("reason = %q, want %q", got, tc.want)
			}
			if err != nil {
				if strings.Contains(err.Error(), tc.tok) && tc.tok != "" {
					t.Fatalf("error %q echoes the token", err)
				}
				return
			}
			if id.Kind != KindAuthToken || id.User != tc.wantUser {
				t.Fatalf("identity = %+v, want authtoken user %s", id, tc.wantUser)
			}
		})
	}
}

func TestAuthTokenTicks(t *testing.T) {
	// The format's worked example: Unix seconds t is t*10^7 + 621355968000000000 ticks.
	if got := UnixToTicks(time.Unix(0, 0)); got != 621355968000000000 {
		t.Fatalf("ticks at the Unix epoch = %d", got)
	}
	tok := MintAuthToken(vault.NewSecret(keyNew), "1", time.Unix(1700000000, 0))
	p, ok := parseAuthToken(tok)
	if !ok || p.issued.Unix() != 1700000000 || p.user != "1" {
		t.Fatalf("round trip = %+v, %v", p, ok)
	}
	if want := "1_" + strconv.FormatInt(1700000000*10000000+621355968000000000, 10) + "_"; !strings.HasPrefix(tok, want) {
		t.Fatalf("token %s does not start with %s", tok, want)
	}
}

// TestRotationGraceCountsFromTheRealSuccessor: a generation's grace counts from when it was
// replaced, even when the generation that replaced it was deleted since and the next one
// readable is younger.
func TestRotationGraceCountsFromTheRealSuccessor(t *testing.T) {
	cur, mid, old := vault.NewSecret(keyNew), vault.NewSecret(keyOld), vault.NewSecret(keyOther)
	keys := &vault.AuthTokenKeys{Generations: []vault.AuthTokenKey{
		{Secret: cur, Created: testNow.Add(-time.Hour)},
		{Secret: mid, Created: testNow.Add(-48 * time.Hour), Replaced: testNow.Add(-time.Hour)},
		// replaced ten days ago by a generation deleted since
		{Secret: old, Created: testNow.Add(-30 * 24 * time.Hour), Replaced: testNow.Add(-10 * 24 * time.Hour)},
	}}
	grace := 7 * 24 * time.Hour
	msg := "42_" + strconv.FormatInt(UnixToTicks(testNow), 10)
	for _, tc := range []struct {
		name string
		key  *vault.Secret
		want bool
	}{{"current", cur, true}, {"replaced an hour ago", mid, true}, {"replaced ten days ago", old, false}} {
		if got := verifyWithGenerations(keys, grace, testNow, tc.key.HexMAC(msg), msg); got != tc.want {
			t.Errorf("%s: verified = %v, want %v", tc.name, got, tc.want)
		}
	}
}

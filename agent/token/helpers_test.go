package token

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file/filetest"
)

// The test clock and keys. Generation "new" of site docs replaced "old" a day before now.
var (
	testNow    = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	keyNew     = []byte("docs-current-auth-token-key-32by")
	keyOld     = []byte("docs-previous-auth-token-key-32b")
	keyOther   = []byte("other-site-auth-token-key-32byte")
	keyUnknown = []byte("a-key-no-site-has-ever-held-32by")
)

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// testKeys is the keys file of the tests: site docs (two generations, server keys), site other
// (its own keys, the same server key name with another secret), and site empty (no keys).
func testKeys() string {
	return `
sites:
  docs:
    authtoken:
      - {key: "` + b64(keyNew) + `", created: "2026-11-20T12:00:00Z"}
      - {key: "` + b64(keyOld) + `", created: "2026-01-01T00:00:00Z"}
    server-tokens:
      k1: {secret: "s3cret"}
      bot: {secret: "bot-secret", restricted_user: "=deploy-bot"}
      seven: {secret: "seven-secret", restricted_user: "7"}
      off: {secret: "off-secret", disabled: true}
  other:
    authtoken:
      - {key: "` + b64(keyOther) + `", created: "2026-11-01T00:00:00Z"}
    server-tokens:
      k1: {secret: "another-secret"}
  empty: {}
`
}

func testStore(t testing.TB) *vault.Store {
	t.Helper()
	return filetest.Store(t, testKeys(), vault.StoreOptions{Now: func() time.Time { return testNow }})
}

func testSite(id string) *SiteSettings {
	return &SiteSettings{ID: id, AuthTokenTTL: DefaultAuthTokenTTL, AuthTokenRotationGrace: DefaultAuthTokenTTL,
		ServerTokenWindow: DefaultServerTokenWindow}
}

// reasonOf returns the reason of a verifier error ("" for nil), failing on an untyped error.
func reasonOf(t *testing.T, err error) reason.Reason {
	t.Helper()
	if err == nil {
		return ""
	}
	var e *reason.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not a *reason.Error", err)
	}
	return e.Reason
}

func hex64(c string) string { return strings.Repeat(c, 64) }

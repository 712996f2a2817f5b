package fleet

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
)

// TestSealedTokenFilter: a site's token entries are found through the sealed Bloom filter for
// every revoked credential (no false negative, at every size), a credential that was not
// revoked rarely gets past it, and a list changed after sealing is read exactly.
func TestSealedTokenFilter(t *testing.T) {
	exp := time.Now().Add(time.Hour)
	id := &token.Identity{Kind: token.KindOAuth, User: "jane", IssuedAt: time.Now()}
	for _, n := range []int{1, 3, 100, 5000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			sl := newSiteList()
			for i := range n {
				r := RevokeCredential("docs", fmt.Sprintf("eyJhbGciOiJSUzI1NiJ9.e30.signature-%d", i), exp)
				sl.add("token:"+r.Subject, record{Expires: exp.UnixMilli(), Filter: filterString(r.Filter)})
			}
			sl.seal()
			if sl.bloom == nil || len(sl.bloom)*64 < bloomBitsPerEntry*n {
				t.Fatalf("sealed with %d bits for %d entries", len(sl.bloom)*64, n)
			}
			l := &RevocationList{}
			l.snap.Store(&snapshot{base: map[string]*siteList{"docs": sl}})
			for i := range n {
				cred := fmt.Sprintf("eyJhbGciOiJSUzI1NiJ9.e30.signature-%d", i)
				if !l.Revoked("docs", id, [2]string{cred}) {
					t.Fatalf("revoked credential %d not refused", i)
				}
			}
			passed, tries := 0, 20000
			for i := range tries {
				cred := fmt.Sprintf("eyJhbGciOiJSUzI1NiJ9.e30.another-%d", i)
				if l.Revoked("docs", id, [2]string{cred}) {
					t.Fatalf("credential %q not revoked but refused", cred)
				}
				if sl.hasFilter(fingerprint(cred)) {
					passed++
				}
			}
			// Two bits of at least 16 per entry: about 1.4 % expected; 5 % is a broken filter.
			if rate := float64(passed) / float64(tries); rate > 0.05 {
				t.Errorf("%.1f %% of credentials not revoked pass the filter", 100*rate)
			}
		})
	}

	t.Run("changed after sealing", func(t *testing.T) {
		sl := newSiteList()
		first := RevokeCredential("docs", "first-token", exp)
		sl.add("token:"+first.Subject, record{Expires: exp.UnixMilli(), Filter: filterString(first.Filter)})
		sl.seal()
		second := RevokeCredential("docs", "second-token", exp)
		sl.add("token:"+second.Subject, record{Expires: exp.UnixMilli(), Filter: filterString(second.Filter)})
		if !sl.hasFilter(second.Filter) || !sl.hasFilter(first.Filter) {
			t.Fatal("an entry added after sealing is not found")
		}
	})
}

// TestFingerprint: the fingerprint reads a signed credential's tail (its signature), but an
// Impersonation Auth Token whole, as it ends with the user's name: two of the same user differ.
func TestFingerprint(t *testing.T) {
	key := vault.NewSecret([]byte("legacy-api-key-0123456789"))
	user := "a-user-name-longer-than-the-thirty-two-byte-tail"
	a := token.MintImpersonationToken(key, user, time.Unix(1_700_000_000, 0))
	b := token.MintImpersonationToken(key, user, time.Unix(1_700_000_001, 0))
	if len(a) != len(b) || a[len(a)-fingerprintTail:] != b[len(b)-fingerprintTail:] {
		t.Fatal("the test needs two tokens of one length that share their last 32 bytes")
	}
	if fingerprint(a) == fingerprint(b) {
		t.Error("two Impersonation Auth Tokens of one user share a fingerprint")
	}
	jwt := "eyJhbGciOiJSUzI1NiJ9.e30." + strings.Repeat("s", 64)
	if fingerprint(jwt) != fingerprint("eyJhbGciOiJSUzI1NiJ9.e31."+strings.Repeat("s", 64)) {
		t.Error("a JWT's fingerprint reads more than its tail")
	}
}

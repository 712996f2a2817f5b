package token

import (
	"net/http"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/reason"
)

func TestOAuthTokenCache(t *testing.T) {
	e := newOAEnv(t)
	tok := mint(t, oaKeySet().rsa, "k-rsa", "RS256", e.claims(nil))
	first, err := e.verify(e.docs, tok)
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.verify(e.docs, tok)
	if err != nil {
		t.Fatal(err)
	}
	if first.User != second.User || !slices.Equal(first.Scopes, second.Scopes) || !first.Expires.Equal(second.Expires) {
		t.Fatalf("cached identity %+v differs from %+v", second, first)
	}
	if n := e.counter("tokenagent_oauth_verifications_total", "result", "ok"); n != 1 {
		t.Fatalf("%v full verifications, want 1 (the second is a cache hit)", n)
	}
	if n := e.counter("tokenagent_oauth_token_cache_total", "result", "hit"); n != 1 {
		t.Fatalf("%v cache hits, want 1", n)
	}
	// The same token at another site is not a hit there.
	if _, err := e.verify(e.other, tok); reasonOf(t, err) != reason.UnknownIssuer {
		t.Fatalf("docs token at other: %v", err)
	}
	// A near-identical token (one more character) is no hit.
	if _, err := e.verify(e.docs, tok+"A"); err == nil {
		t.Fatal("a changed token verified")
	}
}

func TestOAuthTokenCacheSkipped(t *testing.T) {
	e := newOAEnv(t)
	e.v.Cache = nil // every token verified in full
	tok := mint(t, oaKeySet().ec, "k-ec", "ES256", e.claims(nil))
	for range 3 {
		if _, err := e.verify(e.docs, tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.counter("tokenagent_oauth_verifications_total", "result", "ok"); n != 3 {
		t.Fatalf("%v full verifications, want 3", n)
	}
}

func TestOAuthCachedTokenExpires(t *testing.T) {
	e := newOAEnv(t)
	tok := mint(t, oaKeySet().ec, "k-ec", "ES256", e.claims(map[string]any{"exp": e.clock.Now().Add(10 * time.Second).Unix()}))
	if _, err := e.verify(e.docs, tok); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(69 * time.Second) // exp + 59 s: inside the leeway
	if _, err := e.verify(e.docs, tok); err != nil {
		t.Fatalf("inside the leeway: %v", err)
	}
	e.clock.Advance(2 * time.Second)
	_, err := e.verify(e.docs, tok)
	if r, h := reasonAndHeaders(t, err); r != reason.TokenExpired || !strings.Contains(h["WWW-Authenticate"], "token expired") {
		t.Fatalf("after exp + leeway: %v %v", err, h)
	}
}

// A remote set that changed invalidates tokens cached with the old one.
func TestOAuthCacheFollowsRemoteSet(t *testing.T) {
	k := oaKeySet()
	e := newOAEnv(t)
	is := newOAIssuer(t, jwksJSON(t, jwkJSON(t, k.partner, "r1", "RS256")))
	e.withRemote(is.srv.URL + "/jwks.json")
	r1 := mint(t, k.partner, "r1", "RS256", e.cxoneClaims())
	if _, err := e.verify(e.docs, r1); err != nil {
		t.Fatal(err)
	}
	is.serve(http.StatusOK, jwksJSON(t, jwkJSON(t, k.ed, "r2", "")))
	e.clock.Advance(31 * time.Second)
	// r2 forces a refetch; the new set no longer holds r1.
	if _, err := e.verify(e.docs, mint(t, k.ed, "r2", "EdDSA", e.cxoneClaims())); err != nil {
		t.Fatal(err)
	}
	if _, err := e.verify(e.docs, r1); reasonOf(t, err) != reason.UnknownKey {
		t.Fatalf("a token cached with a withdrawn key: %v", err)
	}
}

// A cached entry does not keep the issuer record it verified with alive: records change every
// refresh interval, and long-lived entries must not pile them up.
func TestOAuthCacheHoldsRecordsWeakly(t *testing.T) {
	e := newOAEnv(t)
	tok := mint(t, oaKeySet().ec, "k-ec", "ES256", e.claims(nil))
	if _, err := e.verify(e.docs, tok); err != nil {
		t.Fatal(err)
	}
	entry, ok := e.v.Cache.get(e.v.Cache.key("docs", tok), "docs", tok)
	if !ok || entry.rec.Value() == nil {
		t.Fatal("no cache entry")
	}
	// The store reads the (unchanged) record again: a new record value replaces the old one.
	e.clock.Advance(e.store.Refresh() + time.Second)
	if _, err := e.verify(e.docs, mint(t, oaKeySet().ed, "k-ed", "EdDSA", e.claims(nil))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { runtime.GC(); return entry.rec.Value() == nil })
	if _, err := e.verify(e.docs, tok); err != nil {
		t.Fatalf("a token whose cached record was collected: %v", err)
	}
}

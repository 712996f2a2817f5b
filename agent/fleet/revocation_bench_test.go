package fleet

import (
	"encoding/hex"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/token"
)

// benchList is a list whose snapshot holds n entries of each kind given for site docs, as a full
// read leaves it (the base), and one other site with a single entry.
func benchList(users, clients, tokens int) *RevocationList {
	sl := newSiteList()
	exp := time.Now().Add(time.Hour).UnixMilli()
	before := time.Now().UnixMilli()
	for i := range users {
		sl.add(fmt.Sprintf("user:%d", i), record{Before: before, Expires: exp})
	}
	for i := range clients {
		sl.add(fmt.Sprintf("client:app%d", i), record{Before: before, Expires: exp})
	}
	for i := range tokens {
		r := RevokeCredential("docs", fmt.Sprintf("token %d", i), time.UnixMilli(exp))
		sl.add("token:"+r.Subject, record{Expires: exp, Filter: filterString(r.Filter)})
	}
	sl.seal()
	other := newSiteList()
	other.add("user:1", record{Before: before, Expires: exp})
	l := &RevocationList{}
	l.snap.Store(&snapshot{base: map[string]*siteList{"docs": sl, "other": other}})
	return l
}

// BenchmarkRevoked is the hot path's cost (SPEC §9: ≤ 50 ns added per check) with 100,000
// entries in force: a site without entries, a user that is not revoked (the common case), a
// revoked one, an OAuth token with its client checked too, and, on a site that has token
// entries, the SHA-256 of the credential a token entry needs (an Auth Token, a JWT).
func BenchmarkRevoked(b *testing.B) {
	issued := time.Now().Add(-time.Minute)
	auth := "42_638355968000000000_" + hex.EncodeToString(make([]byte, 32))
	jwt := "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiYXQrand0In0." + string(make([]byte, 600)) + ".sig"
	for _, tc := range []struct {
		name                 string
		users, clients, toks int
		site                 string
		id                   token.Identity
		creds                [2]string
		want                 bool
	}{
		{"no-entries-at-the-site", 100_000, 0, 0, "third", token.Identity{User: "5", IssuedAt: issued}, [2]string{auth}, false},
		{"user-not-revoked", 100_000, 0, 0, "docs", token.Identity{Kind: token.KindAuthToken, User: "alice", IssuedAt: issued}, [2]string{auth}, false},
		{"user-revoked", 100_000, 0, 0, "docs", token.Identity{Kind: token.KindAuthToken, User: "99999", IssuedAt: issued}, [2]string{auth}, true},
		{"oauth-user-and-client", 50_000, 50_000, 0, "docs", token.Identity{Kind: token.KindOAuth, User: "jane", ClientID: "portal", IssuedAt: issued}, [2]string{jwt}, false},
		{"token-entries/auth-token", 50_000, 0, 50_000, "docs", token.Identity{Kind: token.KindAuthToken, User: "alice", IssuedAt: issued}, [2]string{auth}, false},
		{"token-entries/jwt", 50_000, 0, 50_000, "docs", token.Identity{Kind: token.KindOAuth, User: "jane", IssuedAt: issued}, [2]string{jwt}, false},
	} {
		l := benchList(tc.users, tc.clients, tc.toks)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if l.Revoked(tc.site, &tc.id, tc.creds) != tc.want {
					b.Fatal("wrong answer")
				}
			}
		})
	}
}

// TestRevocationMemory measures the heap an entry of each kind takes in the snapshot (100,000
// of one kind; reported for agent/cmd/daemon/README.md, asserted only to be bounded).
func TestRevocationMemory(t *testing.T) {
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	const n = 100_000
	for _, kind := range []string{"user", "client", "token"} {
		before := heap()
		var l *RevocationList
		switch kind {
		case "user":
			l = benchList(n, 0, 0)
		case "client":
			l = benchList(0, n, 0)
		default:
			l = benchList(0, 0, n)
		}
		per := float64(heap()-before) / n
		runtime.KeepAlive(l)
		t.Logf("%s entries: %.0f bytes each in memory (100,000)", kind, per)
		if per > 1024 {
			t.Errorf("%s entries take %.0f bytes each", kind, per)
		}
	}
}

package fleet_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/fleet"
	"github.com/tokenagent/tokenagent/agent/fleet/redistest"
	"github.com/tokenagent/tokenagent/agent/token"
)

// newList opens a revocation list on addr for the test, for sites docs and other, not started.
func newList(t *testing.T, addr string, mutate ...func(*fleet.RevocationOptions)) *fleet.RevocationList {
	t.Helper()
	opts := fleet.RevocationOptions{Redis: fleet.RedisOptions{Address: addr}, MaxStale: 2 * time.Second,
		CallTimeout: 5 * time.Second, Logger: quiet()}
	for _, m := range mutate {
		m(&opts)
	}
	l, err := fleet.NewRevocationList(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetSites(context.Background(), []string{"docs", "other"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// following is newList, started, and in sync once it returns.
func following(t *testing.T, addr string, mutate ...func(*fleet.RevocationOptions)) *fleet.RevocationList {
	t.Helper()
	l := newList(t, addr, mutate...)
	l.Start(context.Background())
	daemontest.Eventually(t, "the list in sync", func() bool { return !l.Stale(time.Now()) })
	return l
}

func userEntry(user string, before time.Time) fleet.Revocation {
	return fleet.Revocation{Site: "docs", Kind: fleet.RevokeUser, Subject: user, Before: before,
		Expires: before.Add(time.Hour)}
}

func revoke(t *testing.T, l *fleet.RevocationList, r fleet.Revocation) fleet.Revocation {
	t.Helper()
	out, err := l.Revoke(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRevokeMerges: a write is idempotent; the same entry written again keeps the later
// before and expiry and the first creation; a token entry never shows its hash.
func TestRevokeMerges(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	l := newList(t, srv.Addr)
	t0 := time.Now().Truncate(time.Second)
	first := revoke(t, l, fleet.Revocation{Site: "docs", Kind: fleet.RevokeUser, Subject: "42", Before: t0,
		Expires: t0.Add(time.Hour), Created: t0})
	again := revoke(t, l, fleet.Revocation{Site: "docs", Kind: fleet.RevokeUser, Subject: "42", Before: t0.Add(-time.Minute),
		Expires: t0.Add(30 * time.Minute), Created: t0.Add(time.Second)})
	if !again.Before.Equal(t0) || !again.Expires.Equal(t0.Add(time.Hour)) || !again.Created.Equal(t0) || first != again {
		t.Fatalf("an earlier write changed the entry: %v, then %v", first, again)
	}
	later := revoke(t, l, userEntry("42", t0.Add(time.Minute)))
	if !later.Before.Equal(t0.Add(time.Minute)) || !later.Created.Equal(t0) {
		t.Fatalf("a later before: %v", later)
	}
	tok := "tkn_k1_1700000000_42_" + strings.Repeat("ab", 32)
	te := revoke(t, l, fleet.Revocation{Site: "docs", Kind: fleet.RevokeToken, Subject: fleet.TokenSubject(tok), Expires: t0.Add(time.Hour)})
	if s := te.String(); strings.Contains(s, fleet.TokenSubject(tok)) || !strings.Contains(s, fleet.TokenSubject(tok)[:8]) || strings.Contains(s, tok) {
		t.Fatalf("a token entry prints %q", s)
	}
	got, err := l.List(context.Background(), "docs")
	if err != nil || len(got) != 2 || got[0].Kind != fleet.RevokeToken || got[1].Subject != "42" {
		t.Fatalf("List = %v, %v", got, err)
	}
	if other, err := l.List(context.Background(), "other"); err != nil || len(other) != 0 {
		t.Fatalf("another site's list: %v, %v", other, err)
	}
}

// TestRevokeRefuses: entries that cannot be written are refused naming the field.
func TestRevokeRefuses(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	l := newList(t, srv.Addr)
	now := time.Now()
	for _, tc := range []struct {
		r    fleet.Revocation
		want string
	}{
		{fleet.Revocation{Kind: fleet.RevokeUser, Subject: "42", Before: now, Expires: now.Add(time.Hour)}, "site"},
		{fleet.Revocation{Site: "docs", Kind: "group", Subject: "x", Before: now, Expires: now.Add(time.Hour)}, "kind"},
		{fleet.Revocation{Site: "docs", Kind: fleet.RevokeUser, Subject: "", Before: now, Expires: now.Add(time.Hour)}, "user"},
		{fleet.Revocation{Site: "docs", Kind: fleet.RevokeUser, Subject: "a\nb", Before: now, Expires: now.Add(time.Hour)}, "user"},
		{fleet.Revocation{Site: "docs", Kind: fleet.RevokeClient, Subject: "app", Expires: now.Add(time.Hour)}, "before"},
		{fleet.Revocation{Site: "docs", Kind: fleet.RevokeToken, Subject: "abc", Expires: now.Add(time.Hour)}, "token"},
		{fleet.Revocation{Site: "docs", Kind: fleet.RevokeUser, Subject: "42", Before: now}, "expires"},
	} {
		if _, err := l.Revoke(context.Background(), tc.r); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error naming %s", tc.r, err, tc.want)
		}
	}
}

// TestRevokeConcurrently: two writers (two agents, or an agent and the CLI) writing at once lose
// nothing: every entry is there, and a user written by both keeps the latest before.
func TestRevokeConcurrently(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a, b := newList(t, srv.Addr), newList(t, srv.Addr)
	base := time.Now().Truncate(time.Second)
	var wg sync.WaitGroup
	for i := range 100 {
		for w, l := range []*fleet.RevocationList{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				before := base.Add(time.Duration(i*2+w) * time.Second)
				if _, err := l.Revoke(context.Background(), userEntry(fmt.Sprintf("u%d-%d", w, i), before)); err != nil {
					t.Error(err)
				}
				if _, err := l.Revoke(context.Background(), userEntry("shared", before)); err != nil {
					t.Error(err)
				}
			}()
		}
	}
	wg.Wait()
	got, err := a.List(context.Background(), "docs")
	if err != nil || len(got) != 201 {
		t.Fatalf("%d entries, %v; want 200 and the shared one", len(got), err)
	}
	for _, e := range got {
		if e.Subject == "shared" && !e.Before.Equal(base.Add(199*time.Second)) {
			t.Fatalf("the shared entry's before is %v, want the latest written, %v", e.Before, base.Add(199*time.Second))
		}
	}
}

// TestRevokedRules: what a followed list refuses (SPEC §9), for entries written by another list.
func TestRevokedRules(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	writer := newList(t, srv.Addr)
	l := following(t, srv.Addr)
	cut := time.Now().Truncate(time.Second)
	authTok := "42_638355968000000000_" + strings.Repeat("0", 64)
	revoke(t, writer, userEntry("42", cut))
	revoke(t, writer, userEntry("=jane%20doe", cut))
	revoke(t, writer, fleet.Revocation{Site: "docs", Kind: fleet.RevokeClient, Subject: "portal", Before: cut, Expires: cut.Add(time.Hour)})
	revoke(t, writer, fleet.Revocation{Site: "docs", Kind: fleet.RevokeToken, Subject: fleet.TokenSubject("leaked-token"), Expires: cut.Add(time.Hour)})
	revoke(t, writer, fleet.RevokeCredential("other", "filtered-token", cut.Add(time.Hour)))
	// A long credential: its filter reads only its tail, which another credential can share.
	sig := strings.Repeat("s", 48)
	revoke(t, writer, fleet.RevokeCredential("other", "header-one."+sig, cut.Add(time.Hour)))
	daemontest.Eventually(t, "the entries applied", func() bool {
		return l.Revoked("docs", &token.Identity{Kind: token.KindOAuth, ClientID: "portal"}, [2]string{}) &&
			l.Revoked("docs", &token.Identity{}, [2]string{"leaked-token"}) &&
			l.Revoked("other", &token.Identity{}, [2]string{"filtered-token"}) &&
			l.Revoked("other", &token.Identity{}, [2]string{"header-one." + sig})
	})
	before, after := cut.Add(-time.Second), cut.Add(time.Second)
	tests := []struct {
		name  string
		site  string
		id    token.Identity
		creds [2]string
		want  bool
	}{
		{"user, issued before", "docs", token.Identity{Kind: token.KindAuthToken, User: "42", IssuedAt: before}, [2]string{authTok}, true},
		{"user, issued after", "docs", token.Identity{Kind: token.KindAuthToken, User: "42", IssuedAt: after}, [2]string{authTok}, false},
		{"user, issued at the cut", "docs", token.Identity{Kind: token.KindServer, User: "42", IssuedAt: cut}, [2]string{}, false},
		{"user, no issue time (JWT without iat, API key)", "docs", token.Identity{Kind: token.KindOAuth, User: "42"}, [2]string{}, true},
		{"username form", "docs", token.Identity{Kind: token.KindServer, User: "=jane%20doe", IssuedAt: before}, [2]string{}, true},
		{"another user", "docs", token.Identity{Kind: token.KindAuthToken, User: "43", IssuedAt: before}, [2]string{authTok}, false},
		{"same user, another site", "other", token.Identity{Kind: token.KindAuthToken, User: "42", IssuedAt: before}, [2]string{authTok}, false},
		{"client, issued before", "docs", token.Identity{Kind: token.KindOAuth, User: "jane", ClientID: "portal", IssuedAt: before}, [2]string{}, true},
		{"client, issued after", "docs", token.Identity{Kind: token.KindOAuth, User: "jane", ClientID: "portal", IssuedAt: after}, [2]string{}, false},
		{"client id on a non-OAuth credential", "docs", token.Identity{Kind: token.KindServer, User: "jane", ClientID: "portal", IssuedAt: before}, [2]string{}, false},
		{"token by hash", "docs", token.Identity{Kind: token.KindBrowser}, [2]string{"leaked-token"}, true},
		{"token as the second credential", "docs", token.Identity{Kind: token.KindBrowser, User: "7", IssuedAt: after}, [2]string{"browserkey", "leaked-token"}, true},
		{"another token", "docs", token.Identity{Kind: token.KindBrowser}, [2]string{"leaked-token2"}, false},
		{"token by hash, written with its filter", "other", token.Identity{Kind: token.KindServer, User: "x", IssuedAt: after}, [2]string{"filtered-token"}, true},
		{"another token where every entry has a filter", "other", token.Identity{Kind: token.KindServer, User: "x", IssuedAt: after}, [2]string{"filtered-token2"}, false},
		{"a long token, revoked with its filter", "other", token.Identity{Kind: token.KindOAuth, User: "x", IssuedAt: after}, [2]string{"header-one." + sig}, true},
		{"another long token with the same tail and length (the filter matches, the SHA-256 does not)", "other", token.Identity{Kind: token.KindOAuth, User: "x", IssuedAt: after}, [2]string{"header-two." + sig}, false},
		{"the same tail, another length", "other", token.Identity{Kind: token.KindOAuth, User: "x", IssuedAt: after}, [2]string{"header-three." + sig}, false},
		{"anonymous", "docs", token.Identity{Kind: token.KindAnonymous}, [2]string{}, false},
	}
	for _, tc := range tests {
		if got := l.Revoked(tc.site, &tc.id, tc.creds); got != tc.want {
			t.Errorf("%s: Revoked = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestRevokedBurst: many entries published one after the other are all applied (each site's
// small delta is merged into its base as it grows).
func TestRevokedBurst(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	writer := newList(t, srv.Addr)
	reg := prometheus.NewRegistry()
	l := following(t, srv.Addr, func(o *fleet.RevocationOptions) { o.Registerer = reg })
	cut := time.Now()
	for i := range 700 {
		revoke(t, writer, userEntry(fmt.Sprint(i), cut))
	}
	daemontest.Eventually(t, "700 entries applied", func() bool {
		return metric(t, reg, "tokenagent_revocations", map[string]string{"site": "docs", "kind": "user"}) == 700
	})
	for i := range 700 {
		if !l.Revoked("docs", &token.Identity{User: fmt.Sprint(i), IssuedAt: cut.Add(-time.Second)}, [2]string{}) {
			t.Fatalf("user %d not refused", i)
		}
	}
}

// TestRevocationOutage: with Redis down the list keeps refusing what it holds, turns stale after
// max_stale (a /readyz warning), and once Redis is back — here empty, as after a restart without
// persistence — it writes the entries Redis lost back and applies those written meanwhile
// within a second of the reconnect.
func TestRevocationOutage(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	writer := newList(t, srv.Addr)
	l := following(t, srv.Addr)
	cut := time.Now()
	revoke(t, writer, userEntry("42", cut))
	old := &token.Identity{User: "42", IssuedAt: cut.Add(-time.Second)}
	daemontest.Eventually(t, "the entry applied", func() bool { return l.Revoked("docs", old, [2]string{}) })
	if w := l.Warnings(); len(w) != 0 {
		t.Fatalf("warnings while in sync: %v", w)
	}

	srv.Kill()
	daemontest.Eventually(t, "the list stale after max_stale", func() bool { return l.Stale(time.Now()) && len(l.Warnings()) == 1 })
	if !l.Revoked("docs", old, [2]string{}) {
		t.Fatal("an entry forgotten while Redis is down")
	}
	if !strings.Contains(l.Warnings()[0], "max_stale") {
		t.Fatalf("warning %q", l.Warnings()[0])
	}

	srv.Restart(t) // empty: the entry is gone from Redis
	var written atomic.Int64
	daemontest.Eventually(t, "a write after the restart", func() bool {
		_, err := writer.Revoke(context.Background(), userEntry("43", cut))
		if err == nil {
			written.Store(time.Now().UnixNano())
		}
		return err == nil
	})
	daemontest.Eventually(t, "the entry written during the outage applied", func() bool {
		return l.Revoked("docs", &token.Identity{User: "43", IssuedAt: cut.Add(-time.Second)}, [2]string{})
	})
	t.Logf("in force %v after the write that followed the restart", time.Since(time.Unix(0, written.Load())).Round(time.Millisecond))
	if !l.Revoked("docs", old, [2]string{}) {
		t.Fatal("the entry Redis lost is forgotten")
	}
	daemontest.Eventually(t, "the lost entry written back to Redis", func() bool {
		got, err := writer.List(context.Background(), "docs")
		return err == nil && len(got) == 2
	})
	daemontest.Eventually(t, "in sync again", func() bool { return !l.Stale(time.Now()) && len(l.Warnings()) == 0 })
}

// TestRevocationExpiry: an expired entry refuses nothing once the list is read again, and is
// pruned from Redis.
func TestRevocationExpiry(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	writer := newList(t, srv.Addr)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	l := following(t, srv.Addr, func(o *fleet.RevocationOptions) { o.Now = clock; o.ResyncEvery = 50 * time.Millisecond })
	cut := time.Now()
	revoke(t, writer, userEntry("42", cut)) // expires an hour after cut
	id := &token.Identity{User: "42", IssuedAt: cut.Add(-time.Second)}
	daemontest.Eventually(t, "the entry applied", func() bool { return l.Revoked("docs", id, [2]string{}) })
	now.Store(cut.Add(2 * time.Hour).UnixNano())
	daemontest.Eventually(t, "the expired entry dropped", func() bool { return !l.Revoked("docs", id, [2]string{}) })
	daemontest.Eventually(t, "the expired entry pruned from Redis", func() bool {
		n, err := srv.Client(t).HLen(context.Background(), "tokenagent:revocations:docs").Result()
		return err == nil && n == 0
	})
}

// TestRevocationSites: entries of a site the agent does not serve are not applied; a site added
// (a config reload) has its entries in force when SetSites returns; with Redis down SetSites
// says so, and the entries are applied once Redis answers.
func TestRevocationSites(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	writer := newList(t, srv.Addr)
	l := following(t, srv.Addr)
	cut := time.Now()
	r := userEntry("42", cut)
	r.Site = "third"
	revoke(t, writer, r)
	id := &token.Identity{User: "42", IssuedAt: cut.Add(-time.Second)}
	revoke(t, writer, userEntry("sync-marker", cut))
	daemontest.Eventually(t, "the marker applied", func() bool {
		return l.Revoked("docs", &token.Identity{User: "sync-marker", IssuedAt: cut.Add(-time.Second)}, [2]string{})
	})
	if l.Revoked("third", id, [2]string{}) {
		t.Fatal("an entry of a site not served applied")
	}
	if err := l.SetSites(context.Background(), []string{"docs", "other", "third"}); err != nil {
		t.Fatal(err)
	}
	if !l.Revoked("third", id, [2]string{}) {
		t.Fatal("a site added by SetSites serves without its entries")
	}
	if !l.Revoked("docs", &token.Identity{User: "sync-marker", IssuedAt: cut.Add(-time.Second)}, [2]string{}) {
		t.Fatal("a site already served lost its entries")
	}
	// A site removed and Redis down: adding one again says its entries could not be read, and
	// they are applied once Redis answers.
	r.Site, r.Subject = "fourth", "44"
	revoke(t, writer, r)
	srv.Kill()
	err := l.SetSites(context.Background(), []string{"docs", "fourth"})
	if err == nil || !strings.Contains(err.Error(), "fourth") {
		t.Fatalf("SetSites with Redis down: %v, want an error naming the site", err)
	}
	srv.Restart(t)
	revoke(t, writer, r) // the restarted Redis is empty: the entry is written again
	daemontest.Eventually(t, "the site's entries read once Redis answers", func() bool {
		return l.Revoked("fourth", &token.Identity{User: "44", IssuedAt: cut.Add(-time.Second)}, [2]string{})
	})
}

// TestRevocationACL: the list works with a Redis user allowed only the documented commands and
// the "tokenagent:" keys and channels.
func TestRevocationACL(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{User: "tokenagent", Password: "pw-0123456789", ACL: redistest.RevocationACL})
	pw := filepath.Join(t.TempDir(), "redis-password")
	daemontest.WriteFile(t, pw, "pw-0123456789\n")
	acl := func(o *fleet.RevocationOptions) { o.Redis.Username, o.Redis.PasswordFile = "tokenagent", pw }
	writer := newList(t, srv.Addr, acl)
	l := following(t, srv.Addr, acl)
	cut := time.Now()
	revoke(t, writer, userEntry("42", cut))
	revoke(t, writer, fleet.RevokeCredential("docs", "leaked", cut.Add(time.Hour)))
	daemontest.Eventually(t, "the entries applied", func() bool {
		return l.Revoked("docs", &token.Identity{User: "42", IssuedAt: cut.Add(-time.Second)}, [2]string{}) &&
			l.Revoked("docs", &token.Identity{}, [2]string{"leaked"})
	})
	if got, err := writer.List(context.Background(), "docs"); err != nil || len(got) != 2 {
		t.Fatalf("List = %v, %v", got, err)
	}
}

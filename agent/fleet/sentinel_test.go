package fleet_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/fleet"
	"github.com/tokenagent/tokenagent/agent/fleet/redistest"
	"github.com/tokenagent/tokenagent/agent/token"
)

// TestSentinelStores: the replay store and the revocation list through Redis Sentinel (a master,
// its replica, three sentinels with a password of their own), then the master killed: the
// sentinels promote the replica, both stores follow it, a single-use token used before the
// failover is still a replay, a revocation written before it is still in force (also for a list
// that reads Redis afresh), and one written after it reaches the following list.
func TestSentinelStores(t *testing.T) {
	st := redistest.StartSentinel(t, "sentinel-secret")
	pw := filepath.Join(t.TempDir(), "sentinel-password")
	if err := os.WriteFile(pw, []byte("sentinel-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ro := fleet.RedisOptions{Address: st.Addrs, SentinelMaster: redistest.SentinelMaster, SentinelPasswordFile: pw}
	viaSentinel := func(o *fleet.RevocationOptions) { o.Redis = ro }
	ctx := context.Background()

	r := newStore(t, fleet.ReplayOptions{Redis: ro})
	exp := time.Now().Add(time.Minute)
	if first, err := r.FirstUse(ctx, "docs", "k1", sig, exp); err != nil || !first {
		t.Fatalf("first use: %v, %v", first, err)
	}
	if first, err := r.FirstUse(ctx, "docs", "k1", sig, exp); err != nil || first {
		t.Fatalf("second use: %v, %v", first, err)
	}
	writer := newList(t, "", viaSentinel)
	l := following(t, "", viaSentinel)
	cut := time.Now()
	revoke(t, writer, userEntry("42", cut))
	before := &token.Identity{User: "42", IssuedAt: cut.Add(-time.Second)}
	daemontest.Eventually(t, "the entry applied", func() bool { return l.Revoked("docs", before, [2]string{}) })

	old := st.MasterAddr(t)
	if old != st.Master.Addr {
		t.Fatalf("the sentinels name %s as the master, not %s", old, st.Master.Addr)
	}
	st.Master.Kill()
	st.WaitFailover(t, old)

	daemontest.Eventually(t, "the replay store answers through the new master", func() bool {
		first, err := r.FirstUse(ctx, "docs", "k1", sig, exp)
		if err == nil && first {
			t.Fatal("a single-use token used before the failover was accepted again after it")
		}
		return err == nil
	})
	if !l.Revoked("docs", before, [2]string{}) {
		t.Error("the entry written before the failover is no longer in force")
	}
	daemontest.Eventually(t, "a revocation written through the new master", func() bool {
		_, err := writer.Revoke(ctx, userEntry("43", time.Now()))
		return err == nil
	})
	after := &token.Identity{User: "43", IssuedAt: cut.Add(-time.Second)}
	daemontest.Eventually(t, "the entry written after the failover applied", func() bool { return l.Revoked("docs", after, [2]string{}) })
	fresh := following(t, "", viaSentinel)
	if !fresh.Revoked("docs", before, [2]string{}) || !fresh.Revoked("docs", after, [2]string{}) {
		t.Error("a list reading the new master misses an entry")
	}
}

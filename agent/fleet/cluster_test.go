package fleet_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/fleet"
	"github.com/tokenagent/tokenagent/agent/fleet/redistest"
	"github.com/tokenagent/tokenagent/agent/token"
)

// TestClusterStores: the replay store and the revocation list on a real Redis Cluster (three
// masters, three replicas): keys of many sites spread over the masters; a first use is one, a
// second a replay; revocations written through one client reach a list following through
// another (pub/sub is broadcast across the cluster).
func TestClusterStores(t *testing.T) {
	cl := redistest.StartCluster(t)
	r := newStore(t, fleet.ReplayOptions{Redis: fleet.RedisOptions{Address: cl.Addrs}, Budget: 5 * time.Second})
	exp := time.Now().Add(time.Minute)
	for i := range 50 {
		site := fmt.Sprintf("site%d", i)
		if first, err := r.FirstUse(context.Background(), site, "k1", sig, exp); err != nil || !first {
			t.Fatalf("%s: first use %v, %v", site, first, err)
		}
		if first, err := r.FirstUse(context.Background(), site, "k1", sig, exp); err != nil || first {
			t.Fatalf("%s: replay %v, %v", site, first, err)
		}
	}
	masters := map[string]bool{}
	for i := range 50 {
		masters[cl.MasterOf(t, r.Key(fmt.Sprintf("site%d", i), "k1", sig)).Addr] = true
	}
	if len(masters) < 2 {
		t.Errorf("the keys of 50 sites live on %d master(s)", len(masters))
	}

	writer := newList(t, cl.Addrs)
	l := following(t, cl.Addrs)
	cut := time.Now()
	for _, site := range []string{"docs", "other"} {
		e := userEntry("42", cut)
		e.Site = site
		revoke(t, writer, e)
	}
	id := &token.Identity{User: "42", IssuedAt: cut.Add(-time.Second)}
	daemontest.Eventually(t, "both sites' entries applied", func() bool {
		return l.Revoked("docs", id, [2]string{}) && l.Revoked("other", id, [2]string{})
	})
}

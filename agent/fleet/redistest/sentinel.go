package redistest

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the name the sentinels of StartSentinel know their master by.
const SentinelMaster = "tokenagent"

// Sentinels is a real Redis Sentinel setup on loopback: a master, a replica, and three
// sentinels (quorum two) that take a master for dead after a second, so a killed master's
// replica is promoted within a few.
type Sentinels struct {
	// Master and Replica are the data servers as started (after a failover, Replica is the
	// master; MasterAddr says which).
	Master, Replica *Server
	// Nodes are the three sentinels.
	Nodes []*Server
	// Addrs is the sentinels' addresses, comma-separated: the address tokenagent takes.
	Addrs string
	// Password is the sentinels' own password (their requirepass), "" for none.
	Password string
}

// StartSentinel starts the servers and the sentinels, with password (when not empty) as the
// sentinels' requirepass, and waits until every sentinel knows the master and its replica;
// everything stops when the test ends.
func StartSentinel(t testing.TB, password string) *Sentinels {
	t.Helper()
	st := &Sentinels{Password: password}
	st.Master = Start(t, Options{})
	st.Replica = Start(t, Options{replicaOf: st.Master.Addr})
	host, port, _ := net.SplitHostPort(st.Master.Addr)
	conf := fmt.Sprintf("sentinel monitor %s %s %s 2\n", SentinelMaster, host, port) +
		fmt.Sprintf("sentinel down-after-milliseconds %s 1000\n", SentinelMaster) +
		fmt.Sprintf("sentinel failover-timeout %s 10000\n", SentinelMaster) +
		fmt.Sprintf("sentinel parallel-syncs %s 1\n", SentinelMaster)
	if password != "" {
		conf += "requirepass " + password + "\n"
	}
	var addrs []string
	for range 3 {
		s := Start(t, Options{sentinel: conf})
		st.Nodes = append(st.Nodes, s)
		addrs = append(addrs, s.Addr)
	}
	st.Addrs = strings.Join(addrs, ",")
	st.wait(t, "the sentinels know the master and its replica", false, func(ctx context.Context, c *redis.SentinelClient) error {
		m, err := c.Master(ctx, SentinelMaster).Result()
		if err != nil {
			return err
		}
		if m["num-slaves"] != "1" || m["num-other-sentinels"] != "2" {
			return fmt.Errorf("replicas %s, other sentinels %s", m["num-slaves"], m["num-other-sentinels"])
		}
		return nil
	})
	return st
}

// MasterAddr is the master's address as the first sentinel that answers names it.
func (st *Sentinels) MasterAddr(t testing.TB) string {
	t.Helper()
	var addr string
	st.wait(t, "a sentinel names the master", false, func(ctx context.Context, c *redis.SentinelClient) error {
		a, err := c.GetMasterAddrByName(ctx, SentinelMaster).Result()
		if err != nil {
			return err
		}
		addr = net.JoinHostPort(a[0], a[1])
		return nil
	})
	return addr
}

// WaitFailover waits until every sentinel names a master other than old, and that master
// answers as one.
func (st *Sentinels) WaitFailover(t testing.TB, old string) {
	t.Helper()
	st.wait(t, "the failover from "+old, true, func(ctx context.Context, c *redis.SentinelClient) error {
		a, err := c.GetMasterAddrByName(ctx, SentinelMaster).Result()
		if err != nil {
			return err
		}
		if addr := net.JoinHostPort(a[0], a[1]); addr == old {
			return fmt.Errorf("still %s", addr)
		}
		return nil
	})
}

// wait calls check with a client of each sentinel (of every one when all, else of the first
// that passes) every 50 ms, until it passes or 60 s have gone.
func (st *Sentinels) wait(t testing.TB, what string, all bool, check func(context.Context, *redis.SentinelClient) error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := st.checkEach(all, check)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 60 s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (st *Sentinels) checkEach(all bool, check func(context.Context, *redis.SentinelClient) error) error {
	var last error
	for _, s := range st.Nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr, Password: st.Password, DisableIdentity: true,
			MaxRetries: -1})
		err := check(ctx, c)
		c.Close()
		cancel()
		if err != nil && all {
			return fmt.Errorf("sentinel %s: %w", s.Addr, err)
		}
		if err == nil && !all {
			return nil
		}
		last = err
	}
	return last
}

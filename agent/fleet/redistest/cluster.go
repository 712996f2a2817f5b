package redistest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a real Redis Cluster on loopback: three masters, each with one replica, joined
// with `redis-cli --cluster create`. Its nodes notice a dead master within a second, so a
// replica takes over a killed master's slots within a few.
type Cluster struct {
	// Nodes are the six servers, in the order given to redis-cli (it makes the first three
	// masters).
	Nodes []*Server
	// Addrs is the nodes' addresses, comma-separated: the seed list tokenagent takes.
	Addrs string
}

// StartCluster starts and joins a cluster, and waits until every slot is served; its nodes stop
// when the test ends.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatal("redis-cli is not installed: apt-get install -y redis-server (.ci/test installs it)")
	}
	c := &Cluster{}
	var addrs []string
	for _, port := range clusterPorts(t, 6) {
		s := Start(t, Options{cluster: true, port: port})
		c.Nodes = append(c.Nodes, s)
		addrs = append(addrs, s.Addr)
	}
	c.Addrs = strings.Join(addrs, ",")
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitServing(t)
	return c
}

// clusterPorts finds n ports whose cluster bus ports (port+10000) are free too.
func clusterPorts(t testing.TB, n int) []int {
	t.Helper()
	var out []int
	for tries := 0; len(out) < n; tries++ {
		if tries > 1000 {
			t.Fatal("no free port pairs for a cluster")
		}
		p := 20000 + rand.IntN(20000)
		free := true
		for _, q := range []int{p, p + 10000} {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(q)))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		for _, q := range out {
			if q == p {
				free = false
			}
		}
		if free {
			out = append(out, p)
		}
	}
	return out
}

// Client is a cluster client of the nodes.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(c.Addrs, ","), DisableIdentity: true})
	t.Cleanup(func() { cc.Close() })
	return cc
}

// WaitServing waits until the nodes that run agree the cluster is ok and every slot has a
// master.
func (c *Cluster) WaitServing(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := c.serving()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster is not serving after 60 s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Cluster) serving() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range c.Nodes {
		if !s.Running() {
			continue
		}
		rc := redis.NewClient(&redis.Options{Addr: s.Addr, DisableIdentity: true, MaxRetries: -1})
		info, err := rc.ClusterInfo(ctx).Result()
		rc.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", s.Addr, err)
		}
		if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") {
			return fmt.Errorf("%s: not ok yet", s.Addr)
		}
		// A master's replicas have finished their first sync (they acknowledge writes).
		rc = redis.NewClient(&redis.Options{Addr: s.Addr, DisableIdentity: true, MaxRetries: -1})
		repl, err := rc.Info(ctx, "replication").Result()
		rc.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", s.Addr, err)
		}
		if strings.Contains(repl, "role:master") && strings.Contains(repl, "state=") &&
			strings.Count(repl, "state=online") != strings.Count(repl, "state=") {
			return fmt.Errorf("%s: a replica is still syncing", s.Addr)
		}
		if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			return fmt.Errorf("%s: the replica's link is down", s.Addr)
		}
	}
	return nil
}

// MasterOf returns the node that is the master for key's slot now.
func (c *Cluster) MasterOf(t testing.TB, key string) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc := c.Client(t)
	slot, err := cc.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	shards, err := cc.ClusterShards(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range shards {
		for _, r := range sh.Slots {
			if r.Start > slot || slot > r.End {
				continue
			}
			for _, n := range sh.Nodes {
				if n.Role != "master" || n.Health != "online" {
					continue
				}
				for _, s := range c.Nodes {
					if s.Addr == fmt.Sprintf("%s:%d", n.IP, n.Port) {
						return s
					}
				}
			}
		}
	}
	t.Fatalf("no master for slot %d of %q", slot, key)
	return nil
}

// Running reports whether the server's process runs.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil
}

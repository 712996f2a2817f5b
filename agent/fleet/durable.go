package fleet

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis replicates asynchronously: a write its master acknowledged can be lost if the master
// dies before a replica has it, and the replica that takes over never saw it. For the fleet's
// stores that would be a single-use token accepted twice, or a revocation forgotten. So a write
// goes on a connection of its own to the key's master and, when that master has replicas, is
// followed on the same connection by WAIT 1: it succeeds only once a replica holds it (within
// the call's deadline; otherwise it fails, and the caller fails closed). A master without
// replicas (a single Redis) is not waited for.

// replicaCounts remembers how many replicas each master has, for replicaTTL.
type replicaCounts struct {
	mu sync.Mutex
	m  map[string]replicaCount
}

type replicaCount struct {
	n    int
	seen time.Time
}

const replicaTTL = 5 * time.Second

// durable runs write (its commands queued on a pipeline of a dedicated connection to the
// master of key) and, when the master has replicas, WAIT 1 after it, until ctx's deadline.
// write's commands report their own results; durable reports the connection's error, or that
// no replica acknowledged.
func durable(ctx context.Context, c redis.UniversalClient, counts *replicaCounts, key string, write func(p redis.Pipeliner)) error {
	master, err := masterFor(ctx, c, key)
	if err != nil {
		return err
	}
	addr := master.Options().Addr
	n, err := counts.get(ctx, master, addr)
	if err != nil {
		return err
	}
	conn := master.Conn()
	defer conn.Close()
	var wait *redis.IntCmd
	_, err = conn.Pipelined(ctx, func(p redis.Pipeliner) error {
		write(p)
		if n > 0 {
			// Within the call's deadline and the connection's read timeout, which bound the
			// reply.
			timeout := master.Options().ReadTimeout * 9 / 10
			if d, ok := ctx.Deadline(); ok {
				timeout = min(timeout, time.Until(d))
			}
			timeout = max(timeout, time.Millisecond)
			wait = redis.NewIntCmd(ctx, "wait", 1, timeout.Milliseconds())
			_ = p.Process(ctx, wait)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if wait != nil && wait.Val() < 1 {
		counts.forget(addr) // a replica may have gone: ask again next time
		return fmt.Errorf("no replica of %s acknowledged the write", addr)
	}
	return nil
}

// masterFor is the client of key's master: the client itself for one server.
func masterFor(ctx context.Context, c redis.UniversalClient, key string) (*redis.Client, error) {
	switch c := c.(type) {
	case *redis.Client:
		return c, nil
	case *redis.ClusterClient:
		return c.MasterForKey(ctx, key)
	}
	return nil, errors.New("fleet: an unknown kind of Redis client")
}

func (r *replicaCounts) get(ctx context.Context, master *redis.Client, addr string) (int, error) {
	r.mu.Lock()
	rc, ok := r.m[addr]
	r.mu.Unlock()
	if ok && time.Since(rc.seen) < replicaTTL {
		return rc.n, nil
	}
	info, err := master.Info(ctx, "replication").Result()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "connected_slaves:"); ok {
			n, _ = strconv.Atoi(v)
		}
	}
	r.mu.Lock()
	if r.m == nil {
		r.m = map[string]replicaCount{}
	}
	r.m[addr] = replicaCount{n: n, seen: time.Now()}
	r.mu.Unlock()
	return n, nil
}

func (r *replicaCounts) forget(addr string) {
	r.mu.Lock()
	delete(r.m, addr)
	r.mu.Unlock()
}

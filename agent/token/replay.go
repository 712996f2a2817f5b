package token

import (
	"context"
	"hash/maphash"
	"sync"
	"time"

	"github.com/tokenagent/tokenagent/vault"
)

// ReplayStore remembers single-use Server API Tokens until their window ends (SPEC §3.2, §8).
// ReplayCache is the node-local one; package agent/fleet keeps the memory in Redis, shared by
// every agent on it.
type ReplayStore interface {
	// FirstUse records the token (site, key, hex signature) until expires and reports whether
	// it was not seen before. An error means the store could not answer: the caller refuses
	// the token (fail closed).
	FirstUse(ctx context.Context, site, key, sigHex string, expires time.Time) (bool, error)
}

// ReplayCache remembers single-use Server API Tokens until their window ends, so a token is
// accepted once per agent. It is node-local: two agents behind one load balancer each accept
// a token once (replay.store: redis shares the memory).
//
// # Notes
//
//   - Safe for concurrent use; sharded to keep lock contention low.
//   - Exact, never lossy: unlike a cache with an admission policy, an entry is kept until it
//     expires, so a replay is always refused. Entries are small (about 80 bytes).
type ReplayCache struct {
	seed   maphash.Seed
	shards [64]replayShard
	now    func() time.Time
}

type replayShard struct {
	mu        sync.Mutex
	seen      map[replayKey]int64 // -> expiry, unix nanos
	nextSweep int                 // sweep expired entries when the map reaches this size
}

type replayKey struct {
	site, key string
	sig       [32]byte
}

// NewReplayCache returns an empty replay cache. now may be nil for time.Now.
func NewReplayCache(now func() time.Time) *ReplayCache {
	if now == nil {
		now = time.Now
	}
	c := &ReplayCache{seed: maphash.MakeSeed(), now: now}
	for i := range c.shards {
		c.shards[i].seen = map[replayKey]int64{}
	}
	return c
}

var _ ReplayStore = (*ReplayCache)(nil)

// FirstUse implements ReplayStore; it never fails.
func (c *ReplayCache) FirstUse(_ context.Context, site, key, sigHex string, expires time.Time) (bool, error) {
	return c.firstUse(site, key, sigHex, expires), nil
}

func (c *ReplayCache) firstUse(site, key, sigHex string, expires time.Time) bool {
	var k replayKey
	if !vault.DecodeHex(k.sig[:], sigHex) {
		return false
	}
	k.site, k.key = site, key
	sh := &c.shards[maphash.Bytes(c.seed, k.sig[:])%uint64(len(c.shards))]
	now := c.now().UnixNano()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if exp, ok := sh.seen[k]; ok && exp > now {
		return false
	}
	if len(sh.seen) >= sh.nextSweep {
		// Amortised O(1): sweep only when the shard has doubled since the last sweep.
		for kk, exp := range sh.seen {
			if exp <= now {
				delete(sh.seen, kk)
			}
		}
		sh.nextSweep = max(256, 2*len(sh.seen))
	}
	// Own copies of the strings: the token's substrings would keep the whole request alive.
	k.site, k.key = cloneString(site), cloneString(key)
	sh.seen[k] = expires.UnixNano()
	return true
}

// Len is the number of remembered tokens.
func (c *ReplayCache) Len() int {
	n := 0
	for i := range c.shards {
		c.shards[i].mu.Lock()
		n += len(c.shards[i].seen)
		c.shards[i].mu.Unlock()
	}
	return n
}

func cloneString(s string) string { return string(append([]byte(nil), s...)) }

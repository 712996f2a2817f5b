package token

import (
	"hash/maphash"
	"time"
	"weak"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/jwks"
)

// DefaultOAuthCacheMaxCost is the verified-token cache's default capacity in bytes: about
// 13,000 typical tokens, and a heap that stays well inside a 64 MiB sidecar.
const DefaultOAuthCacheMaxCost = 16 << 20

// VerifiedTokens caches verified OAuth bearer tokens, so a token seen before costs a map read
// instead of a signature check. It lives as long as the process: every OAuthVerifier built for
// a config (SPEC §3.4, one per config reload) shares it, and a reload keeps what was verified.
//
//	cache, err := token.NewVerifiedTokens(token.DefaultOAuthCacheMaxCost, metrics)
//	defer cache.Close()
//	v := &token.OAuthVerifier{Keys: store, JWKS: keySets, Cache: cache}
//
// # Notes
//
//   - Safe for concurrent use. Close releases ristretto's goroutines; a nil *VerifiedTokens
//     caches nothing.
//   - An entry is keyed by a seeded hash of the site and the token's signature end, confirmed
//     against the whole token, and lives until the earlier of the token's expiry and the key
//     store's refresh interval. A hit still checks that the issuer record (and, for a
//     jwks_uri, the fetched key set) is the one the token was verified with, so a revoked
//     issuer or key takes effect within the refresh interval. Denials are never cached.
type VerifiedTokens struct {
	c         *ristretto.Cache[uint64, *verifiedToken]
	seed      maphash.Seed
	hit, miss prometheus.Counter
}

// NewVerifiedTokens returns a cache of at most maxCost bytes (DefaultOAuthCacheMaxCost when 0
// or less), counting its hits and misses in m.
func NewVerifiedTokens(maxCost int64, m *OAuthMetrics) (*VerifiedTokens, error) {
	if maxCost <= 0 {
		maxCost = DefaultOAuthCacheMaxCost
	}
	c, err := ristretto.NewCache(&ristretto.Config[uint64, *verifiedToken]{
		NumCounters: max(maxCost/100, 1000), // ~10 counters per entry of ~1 KB
		MaxCost:     maxCost,
		BufferItems: 64,
	})
	if err != nil {
		return nil, err
	}
	return &VerifiedTokens{c: c, seed: maphash.MakeSeed(),
		hit: m.TokenCache.WithLabelValues("hit"), miss: m.TokenCache.WithLabelValues("miss")}, nil
}

// Close releases the cache. A cache must not be used after Close.
func (t *VerifiedTokens) Close() {
	if t != nil {
		t.c.Close()
	}
}

// Wait blocks until every entry set so far can be read (ristretto applies sets in the
// background); for tests.
func (t *VerifiedTokens) Wait() {
	if t != nil {
		t.c.Wait()
	}
}

// verifiedToken is one entry of the cache.
type verifiedToken struct {
	site  string
	token string
	id    Identity
	until time.Time // exp + leeway, capped by verification time + key refresh interval
	// What the token verified with. Held weakly: an entry outliving its issuer record or key
	// set (they change every refresh) must not keep them in memory; a collected one simply
	// makes the entry a miss.
	own    bool
	rec    weak.Pointer[vault.Issuer]
	remote *jwks.Remote
	set    weak.Pointer[jwks.Set] // a remote issuer's set
}

// hashedTail is how many trailing bytes of a token its cache key hashes.
const hashedTail = 64

// key is the cache key of tok at site: a seeded maphash of the site, the token's length and
// its last hashedTail bytes (the signature, which binds the rest). A hit is confirmed by
// comparing the whole token, so a collision (which an attacker cannot aim, the seed being
// random) is only a miss.
func (t *VerifiedTokens) key(site, tok string) uint64 {
	tail := tok
	if len(tail) > hashedTail {
		tail = tail[len(tail)-hashedTail:]
	}
	var h maphash.Hash
	h.SetSeed(t.seed)
	h.WriteString(site)
	h.WriteByte(byte(len(tok)))
	h.WriteByte(byte(len(tok) >> 8))
	h.WriteString(tail)
	return h.Sum64()
}

// get returns the entry of tok at site, if any.
func (t *VerifiedTokens) get(h uint64, site, tok string) (*verifiedToken, bool) {
	e, ok := t.c.Get(h)
	return e, ok && e.token == tok && e.site == site
}

// set caches e under h. No ristretto TTL: its expiry check would cost a clock read on every
// hit. Entries carry their own deadline and leave by LFU eviction or del.
func (t *VerifiedTokens) set(h uint64, e *verifiedToken) { t.c.Set(h, e, tokenCost(e)) }

func (t *VerifiedTokens) del(h uint64) { t.c.Del(h) }

// tokenCost is what a cached token holds in memory, so the capacity bounds real bytes: the
// token and the identity's strings, the entry and ristretto's bookkeeping for it (measured
// with a heap profile at about 1.2 KB for a typical 800-byte token).
func tokenCost(e *verifiedToken) int64 {
	n := 2*len(e.token) + len(e.site) + len(e.id.User) + len(e.id.ClientID) + 400
	for _, s := range e.id.Scopes {
		n += 16 + len(s)
	}
	return int64(n)
}

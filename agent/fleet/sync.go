package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"
)

// pingEvery is how often an idle subscription is pinged: a pong confirms that nothing was
// missed since the last one.
const pingEvery = time.Second

// run keeps the snapshot current: subscribe, read everything, apply what is published, read
// everything again after any reconnection and every ResyncEvery.
func (l *RevocationList) run(ctx context.Context) {
	defer close(l.done)
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		err := l.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		l.fail(err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second) // a Redis that comes back is followed within a second
	}
}

// follow runs one subscription until it fails.
func (l *RevocationList) follow(ctx context.Context) error {
	ps := l.c.Subscribe(ctx, l.channel)
	defer ps.Close()
	l.psMu.Lock()
	l.ps = ps
	l.psMu.Unlock()
	if ctx.Err() != nil { // Close ran before l.ps was set
		return ctx.Err()
	}
	// The first full read waits for the subscription's confirmation (a *redis.Subscription
	// message), so nothing published after the read can be missed.
	lastResync, needResync := time.Now(), false
	for {
		if needResync || time.Since(lastResync) >= l.opts.ResyncEvery {
			if err := l.readAll(ctx); err != nil {
				return err
			}
			lastResync, needResync = time.Now(), false
		}
		msg, err := ps.ReceiveTimeout(ctx, pingEvery)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var nerr interface{ Timeout() bool }
			if errors.As(err, &nerr) && nerr.Timeout() {
				if err := ps.Ping(ctx); err != nil {
					return err
				}
				continue
			}
			return err
		}
		select {
		case <-l.resync:
			needResync = true
		default:
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			// (Re)subscribed: whatever was published while the subscription was down is read
			// in full.
			needResync = true
		case *redis.Pong:
			l.confirm()
		case *redis.Message:
			l.apply(m.Payload)
			l.confirm()
		}
	}
}

// readAll reads every configured site's entries and swaps in a snapshot of them united with
// the entries already in memory (an entry is never forgotten because Redis lost it: a failover
// that dropped an unreplicated write, a Redis that restarted empty), without the expired ones.
// Entries Redis is missing are written back, and expired fields are pruned from Redis.
func (l *RevocationList) readAll(ctx context.Context) error {
	sites := l.siteIDs()
	ctx, cancel := context.WithTimeout(ctx, 4*l.opts.CallTimeout)
	defer cancel()
	hashes, err := l.readHashes(ctx, sites)
	if err != nil {
		return err
	}
	now := l.opts.Now().UnixMilli()
	type heal struct {
		site, field string
		rec         record
	}
	var heals []heal
	expired := map[string][]string{}
	l.snapMu.Lock()
	old := l.snap.Load()
	snap := &snapshot{base: make(map[string]*siteList, len(sites))}
	for i, s := range sites {
		sl, stored, gone := decodeSite(hashes[i], now)
		expired[s] = gone
		for _, mem := range []*siteList{old.base[s], old.delta[s]} {
			if mem == nil {
				continue
			}
			mem.each(func(field string, rec record) {
				if rec.Expires <= now {
					return
				}
				sl.add(field, rec)
				if !stored[field] {
					heals = append(heals, heal{s, field, rec})
				}
			})
		}
		if sl.len() > 0 {
			sl.seal()
			snap.base[s] = sl
		}
	}
	// A site SetSites added while this read ran keeps what SetSites read for it.
	current := l.siteIDs()
	for _, s := range current {
		if !slicesContains(sites, s) {
			if m := old.merged(s); m != nil {
				snap.base[s] = m
			}
		}
	}
	l.snap.Store(snap)
	l.snapMu.Unlock()
	l.entries.Reset() // sites no longer configured drop out
	l.publishCounts(snap, current)
	l.confirm()
	for s, fields := range expired {
		if len(fields) > 0 {
			_ = l.c.HDel(ctx, l.key(s), fields...).Err() // any agent may prune; the next read retries
		}
	}
	if len(heals) > 0 {
		l.log.Warn("revocation entries missing from Redis are written back", "entries", len(heals))
		_, _ = l.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, h := range heals {
				created := h.rec.Created
				if created == 0 {
					created = now
				}
				revokeScript.Eval(ctx, p, []string{l.key(h.site)}, h.field, h.rec.Before, h.rec.Expires, created,
					l.channel, h.site, h.rec.Filter)
			}
			return nil
		})
	}
	return nil
}

// readSites reads the entries of sites the list did not have (SetSites) and adds them to the
// snapshot, with what was published for them since they were named.
func (l *RevocationList) readSites(ctx context.Context, sites []string) error {
	ctx, cancel := context.WithTimeout(ctx, l.opts.CallTimeout) // one round trip; a reload waits on it
	defer cancel()
	hashes, err := l.readHashes(ctx, sites)
	if err != nil {
		return err
	}
	now := l.opts.Now().UnixMilli()
	l.snapMu.Lock()
	old := l.snap.Load()
	next := &snapshot{base: make(map[string]*siteList, len(old.base)+len(sites)),
		delta: make(map[string]*siteList, len(old.delta))}
	for s, b := range old.base {
		next.base[s] = b
	}
	for s, d := range old.delta {
		next.delta[s] = d
	}
	for i, s := range sites {
		sl, _, _ := decodeSite(hashes[i], now)
		if m := old.merged(s); m != nil {
			sl.merge(m)
		}
		delete(next.delta, s)
		delete(next.base, s)
		if sl.len() > 0 {
			sl.seal()
			next.base[s] = sl
		}
	}
	l.snap.Store(next)
	l.snapMu.Unlock()
	l.publishCounts(next, sites)
	return nil
}

// readHashes reads the hashes of sites in one round trip.
func (l *RevocationList) readHashes(ctx context.Context, sites []string) ([]map[string]string, error) {
	cmds := make([]*redis.MapStringStringCmd, len(sites))
	_, err := l.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, s := range sites {
			cmds[i] = p.HGetAll(ctx, l.key(s))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]map[string]string, len(sites))
	for i, c := range cmds {
		out[i] = c.Val()
	}
	return out, nil
}

// decodeSite is a site's hash as read at now: its entries in force, the fields that hold them,
// and the fields that have expired (to prune). A field that does not decode is skipped.
func decodeSite(hash map[string]string, now int64) (sl *siteList, stored map[string]bool, expired []string) {
	sl, stored = newSiteList(), map[string]bool{}
	for field, v := range hash {
		var rec record
		if json.Unmarshal([]byte(v), &rec) != nil {
			continue
		}
		if rec.Expires <= now {
			expired = append(expired, field)
			continue
		}
		stored[field] = true
		sl.add(field, rec)
	}
	return sl, stored, expired
}

// apply adds a published entry to the snapshot: to the small delta of its site, merged into
// the base when the delta grows (so a burst of revocations costs a copy of the delta each,
// not of the whole list).
func (l *RevocationList) apply(payload string) {
	var m message
	if json.Unmarshal([]byte(payload), &m) != nil || m.Site == "" {
		return
	}
	if !slicesContains(l.siteIDs(), m.Site) {
		return
	}
	if _, err := m.record.revocation(m.Site, m.Field); err != nil {
		return
	}
	l.snapMu.Lock()
	defer l.snapMu.Unlock()
	old := l.snap.Load()
	next := &snapshot{base: old.base, delta: make(map[string]*siteList, len(old.delta)+1)}
	for s, d := range old.delta {
		next.delta[s] = d
	}
	d := old.delta[m.Site].clone()
	d.add(m.Field, m.record)
	if d.len() >= mergeAt {
		next.base = make(map[string]*siteList, len(old.base)+1)
		for s, b := range old.base {
			next.base[s] = b
		}
		b := old.base[m.Site].clone()
		b.merge(d)
		b.seal()
		next.base[m.Site] = b
		delete(next.delta, m.Site)
	} else {
		d.seal()
		next.delta[m.Site] = d
	}
	l.snap.Store(next)
	l.publishCounts(next, []string{m.Site})
}

// mergeAt is the size at which a site's delta is merged into its base.
const mergeAt = 256

func slicesContains(s []string, v string) bool {
	i := sort.SearchStrings(s, v)
	return i < len(s) && s[i] == v
}

func (l *RevocationList) publishCounts(s *snapshot, sites []string) {
	for _, site := range sites {
		u, t, c := s.counts(site)
		l.entries.WithLabelValues(site, RevokeUser).Set(float64(u))
		l.entries.WithLabelValues(site, RevokeToken).Set(float64(t))
		l.entries.WithLabelValues(site, RevokeClient).Set(float64(c))
	}
}

func (l *RevocationList) confirm() {
	l.confirmed.Store(time.Now().UnixNano())
	l.failMu.Lock()
	if l.failing != nil {
		l.log.Info("revocation list in sync again")
		l.failing = nil
	}
	l.failMu.Unlock()
}

func (l *RevocationList) fail(err error) {
	l.failMu.Lock()
	defer l.failMu.Unlock()
	if l.failing == nil {
		l.log.Warn("revocation list cannot sync; the entries already read stay in force", "error", err.Error())
	}
	l.failing = err
}

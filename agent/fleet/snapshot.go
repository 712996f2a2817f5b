package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"unsafe"

	"github.com/tokenagent/tokenagent/agent/token"
)

// Revoked reports whether site's list refuses the verified identity id or one of the
// credentials as presented (SPEC §9): a user entry for id.User with a before later than
// id.IssuedAt (or any before when it is zero), a client entry likewise for an OAuth token's
// client, a token entry for the SHA-256 of a credential. A site without entries costs two
// small map lookups; a user or client check one more each; at a site with token entries a
// credential costs its fingerprint and two bits of a Bloom filter, and a SHA-256 only when
// they match.
func (l *RevocationList) Revoked(site string, id *token.Identity, credentials [2]string) bool {
	s := l.snap.Load()
	b, d := s.base[site], s.delta[site]
	if b == nil && d == nil {
		return false
	}
	issued := int64(0)
	if !id.IssuedAt.IsZero() {
		issued = id.IssuedAt.UnixMilli()
	}
	if id.User != "" && (b.refusesUser(id.User, issued) || d.refusesUser(id.User, issued)) {
		return true
	}
	if id.Kind == token.KindOAuth && id.ClientID != "" &&
		(b.refusesClient(id.ClientID, issued) || d.refusesClient(id.ClientID, issued)) {
		return true
	}
	if b.hasTokens() || d.hasTokens() {
		filtered := b.allFiltered() && d.allFiltered()
		for _, cred := range credentials {
			if cred == "" {
				continue
			}
			if filtered {
				f := fingerprint(cred)
				if !b.hasFilter(f) && !d.hasFilter(f) {
					continue // no token entry can be this credential
				}
			}
			h := sha256.Sum256(unsafe.Slice(unsafe.StringData(cred), len(cred)))
			if b.hasToken(h) || d.hasToken(h) {
				return true
			}
		}
	}
	return false
}

// snapshot is the list in memory: immutable, swapped whole. Each site's entries are a base
// (read in full) and a small delta (published since).
type snapshot struct {
	base, delta map[string]*siteList
}

// merged is site's entries, base and delta as one sealed list (nil when it has none).
func (s *snapshot) merged(site string) *siteList {
	b, d := s.base[site], s.delta[site]
	if b == nil && d == nil {
		return nil
	}
	m := b.clone()
	if d != nil {
		m.merge(d)
	}
	m.seal()
	return m
}

func (s *snapshot) counts(site string) (users, tokens, clients int) {
	for _, l := range []*siteList{s.base[site], s.delta[site]} {
		if l != nil {
			users, tokens, clients = users+len(l.users), tokens+len(l.tokens), clients+len(l.clients)
		}
	}
	return
}

// siteList is one site's entries: each user's and client's before, and the hashes of revoked
// tokens, each with its expiry (Unix ms). A nil *siteList has none.
type siteList struct {
	users, clients map[string]span
	tokens         map[[sha256.Size]byte]tokenEntry
	// unfiltered counts the token entries without a filter.
	unfiltered int
	// bloom is a Bloom filter of the token entries' filters (two bits each, at least 16 bits
	// per entry), built by seal once the list is complete: a check probes two bits of a small
	// array. nil: not sealed, and every credential passes (the SHA-256 decides).
	bloom []uint64
}

// tokenEntry is a token entry's expiry and filter.
type tokenEntry struct {
	expires int64
	filter  uint64
}

// span is a user or client entry: credentials issued before before are refused, until expires.
type span struct{ before, expires int64 }

func newSiteList() *siteList {
	return &siteList{users: map[string]span{}, clients: map[string]span{}, tokens: map[[sha256.Size]byte]tokenEntry{}}
}

func (l *siteList) len() int { return len(l.users) + len(l.clients) + len(l.tokens) }

func (l *siteList) clone() *siteList {
	n := newSiteList()
	if l != nil {
		n.merge(l)
	}
	return n
}

func (l *siteList) merge(o *siteList) {
	for u, e := range o.users {
		l.users[u] = e.union(l.users[u])
	}
	for c, e := range o.clients {
		l.clients[c] = e.union(l.clients[c])
	}
	for t, e := range o.tokens {
		l.addToken(t, e)
	}
}

// addToken adds or merges a token entry, keeping the count of entries without a filter.
func (l *siteList) addToken(h [sha256.Size]byte, e tokenEntry) {
	old, had := l.tokens[h]
	if had {
		e.expires = max(e.expires, old.expires)
		if e.filter == 0 {
			e.filter = old.filter
		}
		if old.filter == 0 {
			l.unfiltered--
		}
	}
	l.tokens[h] = e
	l.bloom = nil // a changed list lets every credential through to the SHA-256 until sealed
	if e.filter == 0 {
		l.unfiltered++
	}
}

func (e span) union(o span) span { return span{max(e.before, o.before), max(e.expires, o.expires)} }

// add adds the entry of a field ("kind:subject").
func (l *siteList) add(field string, rec record) {
	kind, subject, _ := strings.Cut(field, ":")
	switch kind {
	case RevokeUser:
		l.users[subject] = span{rec.Before, rec.Expires}.union(l.users[subject])
	case RevokeClient:
		l.clients[subject] = span{rec.Before, rec.Expires}.union(l.clients[subject])
	case RevokeToken:
		var h [sha256.Size]byte
		if n, err := hex.Decode(h[:], []byte(subject)); err == nil && n == sha256.Size {
			l.addToken(h, tokenEntry{expires: rec.Expires, filter: rec.filter()})
		}
	}
}

// each calls f with every entry as a field and a record.
func (l *siteList) each(f func(field string, rec record)) {
	for u, e := range l.users {
		f(RevokeUser+":"+u, record{Before: e.before, Expires: e.expires})
	}
	for c, e := range l.clients {
		f(RevokeClient+":"+c, record{Before: e.before, Expires: e.expires})
	}
	for t, e := range l.tokens {
		f(RevokeToken+":"+hex.EncodeToString(t[:]), record{Expires: e.expires, Filter: filterString(e.filter)})
	}
}

func (l *siteList) refusesUser(user string, issued int64) bool {
	if l == nil {
		return false
	}
	e, ok := l.users[user]
	return ok && (issued == 0 || issued < e.before)
}

func (l *siteList) refusesClient(client string, issued int64) bool {
	if l == nil {
		return false
	}
	e, ok := l.clients[client]
	return ok && (issued == 0 || issued < e.before)
}

func (l *siteList) hasTokens() bool { return l != nil && len(l.tokens) > 0 }

func (l *siteList) allFiltered() bool { return l == nil || l.unfiltered == 0 }

// bloomBitsPerEntry is the Bloom filter's size per token entry: with two bits per entry, a
// credential that was not revoked passes it about 1.4 % of the time (and then costs a SHA-256).
const bloomBitsPerEntry = 16

// seal builds the Bloom filter of the token entries' filters. A list is sealed once complete,
// before it is published in a snapshot; a change after that drops the filter (addToken).
func (l *siteList) seal() {
	l.bloom = nil
	if len(l.tokens) == 0 {
		return
	}
	n := 64
	for n < bloomBitsPerEntry*len(l.tokens) {
		n <<= 1
	}
	l.bloom = make([]uint64, n/64)
	for _, e := range l.tokens {
		if e.filter == 0 {
			continue // an entry without a filter: every check hashes (allFiltered)
		}
		b1, b2 := bloomBits(e.filter, n)
		l.bloom[b1/64] |= 1 << (b1 % 64)
		l.bloom[b2/64] |= 1 << (b2 % 64)
	}
}

// bloomBits are a filter's two bits in a Bloom filter of n bits (a power of two): from its low
// and its high 32 bits, both already uniform (xxhash64).
func bloomBits(f uint64, n int) (uint64, uint64) {
	mask := uint64(n - 1)
	return f & mask, (f >> 32) & mask
}

func (l *siteList) hasFilter(f uint64) bool {
	if l == nil {
		return false
	}
	if l.bloom == nil {
		return len(l.tokens) > 0 // not sealed: the SHA-256 decides
	}
	b1, b2 := bloomBits(f, len(l.bloom)*64)
	return l.bloom[b1/64]&(1<<(b1%64)) != 0 && l.bloom[b2/64]&(1<<(b2%64)) != 0
}

func (l *siteList) hasToken(h [sha256.Size]byte) bool {
	if l == nil {
		return false
	}
	_, ok := l.tokens[h]
	return ok
}

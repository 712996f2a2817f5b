package main

import (
	"bufio"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
)

// The request kinds of the mix. Each valid kind is allowed by a target that trusts the setup's
// keys; the invalid share is spread evenly over the invalid variants below, each denied with
// its own reason.
const (
	KindAuthToken = "authtoken" // Auth Token in the authtoken cookie (or X-Authtoken)
	KindServer    = "server"    // Server API Token (tkn_…) in X-Deki-Token
	KindBrowser   = "browser"   // Browser API Token with an allowed Origin, half with an Auth Token
	KindRS256     = "rs256"     // OAuth JWT signed RS256 (Authorization: Bearer)
	KindES256     = "es256"     // OAuth JWT signed ES256
	KindHS256     = "hs256"     // OAuth JWT signed HS256 with the issuer's symmetric key
	KindAnonymous = "anonymous" // no credential
)

// ValidKinds lists the valid kinds in report order.
var ValidKinds = []string{KindAuthToken, KindServer, KindBrowser, KindRS256, KindES256, KindHS256, KindAnonymous}

// DefaultMix is a plausible production mix: mostly browser sessions (Auth Tokens), then
// integrations (server tokens, OAuth), anonymous readers.
const DefaultMix = "authtoken=35,server=20,browser=10,rs256=10,es256=10,anonymous=15"

// Expect is the decision a request should get: allowed as Kind (x-auth-kind), or denied with
// Reason (x-auth-reason).
type Expect struct {
	Allow  bool   `json:"allow"`
	Kind   string `json:"kind,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// String is "allow KIND" or "deny REASON".
func (e Expect) String() string {
	if e.Allow {
		return "allow " + e.Kind
	}
	return "deny " + e.Reason
}

// Header is one request header (lower-case name).
type Header struct{ Name, Value string }

// Item is one prepared request: its credential headers, path (with query) and expected answer.
type Item struct {
	Host    string // "" for the site's host
	Path    string
	Headers []Header
	Expect  Expect
}

// Class is one entry of the mix: a name, a weight and its prepared requests, used in turn.
type Class struct {
	Name   string
	Weight float64
	// items are swapped whole when regenerated (server tokens age out of their window).
	items atomic.Pointer[[]Item]
	next  atomic.Uint64
	regen func(now time.Time) []Item
}

// Len is the number of distinct requests of the class.
func (c *Class) Len() int { return len(*c.items.Load()) }

// take returns the class's next request; with once, nil after each was used once.
func (c *Class) take(once bool) *Item {
	items := *c.items.Load()
	i := c.next.Add(1) - 1
	if once {
		if i >= uint64(len(items)) {
			return nil
		}
		return &items[i]
	}
	return &items[i%uint64(len(items))]
}

// invalidVariant is one way of being refused, with the reason a correct agent gives.
type invalidVariant struct {
	name   string
	reason string
	make   func(g *generator, i int) Item
}

// invalidVariants are the invalid requests of the mix (SPEC §2–§4).
var invalidVariants = []invalidVariant{
	{"authtoken-bad-signature", "bad_signature", func(g *generator, i int) Item {
		return g.cookieItem(token.MintAuthToken(g.wrongKey, strconv.Itoa(i+1), g.now.Add(-time.Minute)), i)
	}},
	{"authtoken-expired", "token_expired", func(g *generator, i int) Item {
		return g.cookieItem(token.MintAuthToken(g.authKey, strconv.Itoa(i+1), g.now.Add(-8*24*time.Hour)), i)
	}},
	{"server-bad-signature", "bad_signature", func(g *generator, i int) Item {
		k := g.keys.ServerKeys[i%len(g.keys.ServerKeys)]
		return g.dekiItem(token.MintServerToken(k.Name, g.wrongKey, strconv.Itoa(i+1), g.now), "", i)
	}},
	{"server-expired", "token_expired", func(g *generator, i int) Item {
		return g.dekiItem(token.MintServerToken(g.keys.ServerKeys[0].Name, g.serverSecret(0), strconv.Itoa(i+1), g.now.Add(-time.Hour)), "", i)
	}},
	{"server-unknown-key", "unknown_key", func(g *generator, i int) Item {
		return g.dekiItem(token.MintServerToken(fmt.Sprintf("nokey%d", i), g.wrongKey, "42", g.now), "", i)
	}},
	{"browser-bad-origin", "origin_not_allowed", func(g *generator, i int) Item {
		return g.dekiItem(g.keys.BrowserKeys[i%len(g.keys.BrowserKeys)].Name, "https://evil.example.com", i)
	}},
	{"jwt-bad-signature", "bad_signature", func(g *generator, i int) Item {
		return g.bearerItem(g.mustJWT(jose.JSONWebKey{Key: g.otherEC, KeyID: g.keys.EC.KeyID, Algorithm: "ES256"}, g.claims(i, g.now)), i)
	}},
	{"jwt-expired", "token_expired", func(g *generator, i int) Item {
		return g.bearerItem(g.mustJWT(g.keys.EC, g.claims(i, g.now.Add(-2*time.Hour-jwtLifetime))), i)
	}},
	{"jwt-unknown-kid", "unknown_key", func(g *generator, i int) Item {
		return g.bearerItem(g.mustJWT(jose.JSONWebKey{Key: g.keys.EC.Key, KeyID: "bench-unknown-kid", Algorithm: "ES256"}, g.claims(i, g.now)), i)
	}},
	{"malformed", "malformed_token", func(g *generator, i int) Item {
		return g.dekiItem("tkn_"+strconv.Itoa(i), "", i)
	}},
	{"multiple-credentials", "multiple_credentials", func(g *generator, i int) Item {
		it := g.dekiItem(token.MintServerToken(g.keys.ServerKeys[0].Name, g.serverSecret(0), "42", g.now), "", i)
		it.Headers = append(it.Headers, Header{"authorization", "Bearer " + g.anyJWT})
		return it
	}},
	{"anonymous-needs-auth", "authentication_required", func(g *generator, i int) Item {
		return Item{Path: "/@api/deki/site/settings?x=" + strconv.Itoa(i)}
	}},
	{"unknown-site", "unknown_site", func(g *generator, i int) Item {
		it := g.cookieItem(token.MintAuthToken(g.authKey, strconv.Itoa(i+1), g.now), i)
		it.Host = fmt.Sprintf("site%d.unknown.example.net", i%100)
		return it
	}},
}

// InvalidVariantNames lists the invalid variants with the reason each expects.
func InvalidVariantNames() []string {
	out := make([]string, len(invalidVariants))
	for i, v := range invalidVariants {
		out[i] = v.name + " (" + v.reason + ")"
	}
	return out
}

// MixOptions say how many distinct requests of each kind to prepare and how to weigh them.
type MixOptions struct {
	// Weights of the valid kinds (relative).
	Weights map[string]float64
	// Invalid is the share of requests (0..1) that carry an invalid credential.
	Invalid float64
	// Tokens is the number of distinct requests per valid kind; PerKind overrides it.
	Tokens  int
	PerKind map[string]int
	// InvalidTokens is the number of distinct requests per invalid variant (default
	// min(Tokens, 1000)).
	InvalidTokens int
	// CacheDir, when set, keeps minted JWTs across runs (RS256 signing is slow).
	CacheDir string
	// Progress receives one line per second while tokens are minted (nil: quiet).
	Progress io.Writer
	Now      time.Time
}

// ParseMix parses "authtoken=35,server=20,…" into weights of the valid kinds.
func ParseMix(s string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("mix %q: want kind=weight", part)
		}
		k = strings.TrimSpace(k)
		if !validKind(k) {
			return nil, fmt.Errorf("mix: unknown kind %q (want %s)", k, strings.Join(ValidKinds, ", "))
		}
		w, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || w < 0 {
			return nil, fmt.Errorf("mix %q: the weight must be a number ≥ 0", part)
		}
		out[k] = w
	}
	return out, nil
}

func validKind(k string) bool {
	for _, v := range ValidKinds {
		if v == k {
			return true
		}
	}
	return false
}

// Mix is the prepared mix: its classes and the cumulative weights used to pick among them.
type Mix struct {
	Classes []*Class
	cum     []float64
}

// Pick returns the class for a uniform random number r in [0,1).
func (m *Mix) Pick(r float64) *Class {
	lo, hi := 0, len(m.cum)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if r < m.cum[mid] {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return m.Classes[lo]
}

// Regenerate re-mints the classes whose tokens age (Server API Tokens: ±300 s window).
func (m *Mix) Regenerate(now time.Time) {
	for _, c := range m.Classes {
		if c.regen != nil {
			items := c.regen(now)
			c.items.Store(&items)
		}
	}
}

// Find returns the class called name, or nil.
func (m *Mix) Find(name string) *Class {
	for _, c := range m.Classes {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// BuildMix prepares every class with a positive weight: Tokens distinct requests per valid
// kind (JWTs minted in parallel, and cached in CacheDir), InvalidTokens per invalid variant.
func BuildMix(keys *Keys, o MixOptions) (*Mix, error) {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.Tokens <= 0 {
		return nil, errors.New("mix: --tokens must be at least 1")
	}
	if o.Invalid < 0 || o.Invalid > 1 {
		return nil, errors.New("mix: --invalid must be between 0 and 1")
	}
	if o.InvalidTokens <= 0 {
		o.InvalidTokens = min(o.Tokens, 1000)
	}
	g, err := newGenerator(keys, o)
	if err != nil {
		return nil, err
	}
	var total float64
	for _, k := range ValidKinds {
		total += o.Weights[k]
	}
	if total == 0 && o.Invalid < 1 {
		return nil, errors.New("mix: every valid kind has weight 0 (give --invalid 1 for invalid requests only)")
	}
	m := &Mix{}
	for _, k := range ValidKinds {
		w := o.Weights[k]
		if w == 0 {
			continue
		}
		n := o.Tokens
		if v, ok := o.PerKind[k]; ok && v > 0 {
			n = v
		}
		c := &Class{Name: k, Weight: w / total * (1 - o.Invalid)}
		items, err := g.valid(k, n, o.Now)
		if err != nil {
			return nil, err
		}
		c.items.Store(&items)
		if k == KindServer {
			c.regen = func(now time.Time) []Item { its, _ := g.valid(KindServer, n, now); return its }
		}
		m.Classes = append(m.Classes, c)
	}
	if o.Invalid > 0 {
		for _, v := range invalidVariants {
			items := make([]Item, o.InvalidTokens)
			for i := range items {
				items[i] = v.make(g, i)
				items[i].Expect = Expect{Reason: v.reason}
			}
			c := &Class{Name: "invalid/" + v.name, Weight: o.Invalid / float64(len(invalidVariants))}
			c.items.Store(&items)
			m.Classes = append(m.Classes, c)
		}
	}
	if g.err != nil {
		return nil, g.err
	}
	var cum float64
	for _, c := range m.Classes {
		cum += c.Weight
		m.cum = append(m.cum, cum)
	}
	for i := range m.cum {
		m.cum[i] /= cum
	}
	m.cum[len(m.cum)-1] = 1
	return m, nil
}

// jwtLifetime is the lifetime of the JWTs the generator mints (they are cached across runs).
const jwtLifetime = 7 * 24 * time.Hour

type generator struct {
	keys     *Keys
	o        MixOptions
	now      time.Time
	authKey  *vault.Secret
	wrongKey *vault.Secret
	secrets  []*vault.Secret
	otherEC  *ecdsa.PrivateKey
	anyJWT   string
	err      error
}

func newGenerator(keys *Keys, o MixOptions) (*generator, error) {
	g := &generator{keys: keys, o: o, now: o.Now, authKey: vault.NewSecret(keys.AuthTokenKey),
		wrongKey: vault.NewSecret(randBytes(32))}
	for _, s := range keys.ServerKeys {
		g.secrets = append(g.secrets, vault.NewSecret([]byte(s.Secret)))
	}
	var err error
	if g.otherEC, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	if g.anyJWT, err = token.MintJWT(keys.EC, g.claims(0, o.Now)); err != nil {
		return nil, fmt.Errorf("mint: %w", err)
	}
	return g, nil
}

func (g *generator) serverSecret(i int) *vault.Secret { return g.secrets[i%len(g.secrets)] }

// pagePath is a realistic read path; every tenth request of an authenticated kind reads the
// site settings instead (a route that needs a credential).
func pagePath(i int, authenticated bool) string {
	if authenticated && i%10 == 9 {
		return "/@api/deki/site/settings"
	}
	switch i % 3 {
	case 0:
		return fmt.Sprintf("/@api/deki/pages/%d/contents?mode=view&format=html", 1000+i%20011)
	case 1:
		return fmt.Sprintf("/@api/deki/pages/%d/info", 1000+i%20011)
	}
	return fmt.Sprintf("/@api/deki/pages/=Guides%%252FPage%d/files", i%5003)
}

func (g *generator) cookieItem(tok string, i int) Item {
	if i%4 == 3 {
		return Item{Path: pagePath(i, true), Headers: []Header{{"x-authtoken", tok}}}
	}
	return Item{Path: pagePath(i, true), Headers: []Header{{"cookie", "theme=dark; authtoken=" + tok + "; lang=en-US"}}}
}

func (g *generator) dekiItem(tok, origin string, i int) Item {
	h := []Header{{"x-deki-token", tok}}
	if origin != "" {
		h = append(h, Header{"origin", origin})
	}
	return Item{Path: pagePath(i, true), Headers: h}
}

func (g *generator) bearerItem(jwt string, i int) Item {
	return Item{Path: pagePath(i, true), Headers: []Header{{"authorization", "Bearer " + jwt}}}
}

// claims are realistic access token claims (RFC 9068) for user i, issued at iat.
func (g *generator) claims(i int, iat time.Time) map[string]any {
	jti := make([]byte, 12)
	_, _ = rand.Read(jti)
	return map[string]any{"iss": g.keys.Issuer, "aud": []string{g.keys.Audience, "https://api.example.com"},
		"sub": fmt.Sprintf("user-%d", i+1), "client_id": "bench-app", "scope": "openid profile pages:read pages:write",
		"iat": iat.Add(-time.Minute).Unix(), "nbf": iat.Add(-time.Minute).Unix(), "exp": iat.Add(jwtLifetime).Unix(),
		"jti": hex.EncodeToString(jti)}
}

func (g *generator) mustJWT(k jose.JSONWebKey, claims map[string]any) string {
	s, err := token.MintJWT(k, claims)
	if err != nil && g.err == nil {
		g.err = fmt.Errorf("mint JWT: %w", err)
	}
	return s
}

// valid prepares n distinct requests of a valid kind.
func (g *generator) valid(kind string, n int, now time.Time) ([]Item, error) {
	items := make([]Item, n)
	exp := Expect{Allow: true, Kind: kind}
	switch kind {
	case KindAuthToken:
		for i := range items {
			items[i] = g.cookieItem(token.MintAuthToken(g.authKey, strconv.Itoa(i+1), now.Add(-time.Duration(i%3600)*time.Second)), i)
		}
	case KindServer:
		for i := range items {
			user := strconv.Itoa(i + 1)
			if i%2 == 1 {
				user = fmt.Sprintf("=user_%d%%40example.com", i+1)
			}
			k := g.keys.ServerKeys[i%len(g.keys.ServerKeys)]
			items[i] = g.dekiItem(token.MintServerToken(k.Name, g.serverSecret(i), user, now.Add(-time.Duration(i%30)*time.Second)), "", i)
		}
	case KindBrowser:
		for i := range items {
			bk := g.keys.BrowserKeys[i%len(g.keys.BrowserKeys)]
			origin := ""
			if i%3 != 0 {
				origin = bk.Origins[i%len(bk.Origins)]
			}
			it := g.dekiItem(bk.Name, origin, i)
			it.Path = pagePath(i, false)
			if i%2 == 1 { // a signed-in user's page: the browser key with the session's Auth Token
				it.Headers = append(it.Headers, Header{"cookie", "authtoken=" + token.MintAuthToken(g.authKey, strconv.Itoa(i+1), now)})
			}
			items[i] = it
		}
	case KindRS256, KindES256, KindHS256:
		exp.Kind = "oauth"
		key := g.keys.RSA
		switch kind {
		case KindES256:
			key = g.keys.EC
		case KindHS256:
			if g.keys.HS256.Key == nil {
				return nil, errors.New("hs256: the keys have no HS256 secret (written by an older setup; run load setup --force)")
			}
			key = g.keys.HS256
		}
		toks, err := g.jwts(key, n, now)
		if err != nil {
			return nil, err
		}
		for i := range items {
			items[i] = g.bearerItem(toks[i], i)
		}
	case KindAnonymous:
		for i := range items {
			items[i] = Item{Path: pagePath(i, false)}
		}
	default:
		return nil, fmt.Errorf("unknown kind %q", kind)
	}
	for i := range items {
		items[i].Expect = exp
	}
	return items, nil
}

// jwtCachePrefix names the files that keep minted JWTs in the keys directory.
const jwtCachePrefix = "jwt-cache-"

type jwtCacheHeader struct {
	KID string `json:"kid"`
	// Thumbprint of the signing key: a cache from other keys is ignored.
	Thumbprint string `json:"thumbprint"`
	// Exp is the earliest expiry of the cached tokens.
	Exp int64 `json:"exp"`
}

// jwts returns n distinct JWTs signed with key: from the cache file when it holds enough that
// stay valid for a day, minted (in parallel, on every core) otherwise.
func (g *generator) jwts(key jose.JSONWebKey, n int, now time.Time) (_ []string, err error) {
	var tp []byte
	if secret, ok := key.Key.([]byte); ok { // no RFC 7638 thumbprint for a symmetric key
		sum := sha256.Sum256(secret)
		tp = sum[:]
	} else if tp, err = key.Thumbprint(crypto.SHA256); err != nil {
		return nil, err
	}
	hdr := jwtCacheHeader{KID: key.KeyID, Thumbprint: hex.EncodeToString(tp[:8])}
	var cached []string
	path := ""
	if g.o.CacheDir != "" {
		path = filepath.Join(g.o.CacheDir, jwtCachePrefix+key.Algorithm+".txt")
		cached = readJWTCache(path, hdr, now.Add(24*time.Hour))
	}
	if len(cached) >= n {
		return cached[:n], nil
	}
	missing := n - len(cached)
	fresh := make([]string, missing)
	var done atomic.Int64
	stop := make(chan struct{})
	if g.o.Progress != nil && missing > 2000 {
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					fmt.Fprintf(g.o.Progress, "minting %s JWTs: %d/%d\n", key.Algorithm, done.Load(), missing)
				}
			}
		}()
	}
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < missing; i += workers {
				s, err := token.MintJWT(key, g.claims(len(cached)+i, now))
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				fresh[i] = s
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stop)
	if err, _ := firstErr.Load().(error); err != nil {
		return nil, fmt.Errorf("mint %s JWT: %w", key.Algorithm, err)
	}
	all := append(cached, fresh...)
	if path != "" {
		hdr.Exp = now.Add(jwtLifetime).Unix()
		if len(cached) > 0 {
			hdr.Exp = min(hdr.Exp, cachedExp(path))
		}
		if err := writeJWTCache(path, hdr, all); err != nil && g.o.Progress != nil {
			fmt.Fprintf(g.o.Progress, "JWT cache %s not written: %v\n", path, err)
		}
	}
	return all, nil
}

func readJWTCache(path string, want jwtCacheHeader, validUntil time.Time) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	if !sc.Scan() {
		return nil
	}
	var h jwtCacheHeader
	if json.Unmarshal(sc.Bytes(), &h) != nil || h.KID != want.KID || h.Thumbprint != want.Thumbprint || h.Exp < validUntil.Unix() {
		return nil
	}
	var out []string
	for sc.Scan() {
		if t := strings.TrimSpace(sc.Text()); t != "" {
			out = append(out, t)
		}
	}
	return out
}

func cachedExp(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var h jwtCacheHeader
	if sc.Scan() {
		_ = json.Unmarshal(sc.Bytes(), &h)
	}
	return h.Exp
}

func writeJWTCache(path string, h jwtCacheHeader, toks []string) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	hb, _ := json.Marshal(h)
	w.Write(hb)
	w.WriteByte('\n')
	for _, t := range toks {
		w.WriteString(t)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Summary describes the prepared mix, one line per class, for the report.
func (m *Mix) Summary() []ClassInfo {
	out := make([]ClassInfo, 0, len(m.Classes))
	for _, c := range m.Classes {
		items := *c.items.Load()
		out = append(out, ClassInfo{Name: c.Name, Share: c.Weight, Distinct: len(items), Expect: items[0].Expect.String()})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Share > out[j].Share })
	return out
}

// ClassInfo is one class of the mix as reported.
type ClassInfo struct {
	Name     string  `json:"name"`
	Share    float64 `json:"share"`
	Distinct int     `json:"distinct"`
	Expect   string  `json:"expect"`
}

package token

import (
	"errors"
	"strconv"
	"strings"

	"github.com/tokenagent/tokenagent/agent/internal/hostname"
)

// Origins: parsing the `Origin` request header and matching it against the origin patterns of
// a Browser API Token's record and a site's own hostnames (SPEC §3.3).
//
// A pattern is one of
//
//	host                   that host, any scheme and port          docs.example.com
//	*.suffix               any subdomain of suffix (never suffix   *.example.com
//	                       itself), any scheme and port
//	scheme://host[:port]   exactly that origin (http or https;     https://app.example.org
//	                       the default port when none is given)    http://localhost:8080
//
// Hosts are compared in their canonical ASCII form: lower case, without a trailing dot. A
// pattern may be written in Unicode (`Bücher.Example.`): it is turned into its A-label
// (`xn--bcher-kva.example`) once, when compiled. A request's `Origin` is compared as the ASCII
// bytes the browser sent and never IDNA-mapped (SPEC §1): an Origin holding a byte ≥ 0x80 does
// not parse and matches nothing. A host whose last label is numeric (an IPv4 address) or an
// IPv6 literal (`[::1]`) is only ever matched exactly, never by a `*.suffix`.

// MaxOriginLen is the longest Origin header value looked at; a longer one is refused.
const MaxOriginLen = 1024

// Origin is a parsed, canonical `Origin` header value (RFC 6454 §7): a scheme, a host and a
// port.
type Origin struct {
	// Scheme is "http" or "https".
	Scheme string
	// Host is the host in canonical ASCII form (lower case, punycode, no trailing dot; an IPv6
	// address in brackets).
	Host string
	// Port is the explicit port, or the scheme's default (443 for https, 80 for http).
	Port uint16
}

// String is the origin's canonical serialisation, with the port left out when it is the
// scheme's default (the form browsers send).
func (o Origin) String() string {
	if o.Port == originDefaultPort(o.Scheme) {
		return o.Scheme + "://" + o.Host
	}
	return o.Scheme + "://" + o.Host + ":" + strconv.Itoa(int(o.Port))
}

// errOrigin is why an origin or pattern is refused; only ever shown to operators.
var (
	errOriginNull      = errors.New("the null (opaque) origin is never allowed")
	errOriginScheme    = errors.New("the scheme is not http or https")
	errOriginSyntax    = errors.New("an origin is scheme://host[:port] with no path, query, fragment or user info")
	errOriginTooLong   = errors.New("the origin is too long")
	errPatternWildcard = errors.New("a wildcard is only allowed as a leading '*.' of a pattern without scheme")
	errPatternPort     = errors.New("a port needs a scheme: write scheme://host:port")
	errPatternIPSuffix = errors.New("a '*.' wildcard cannot stand over an IP address")
	errPatternEmpty    = errors.New("the pattern is empty")
)

// ParseOrigin parses an `Origin` header value. It refuses `null`, a scheme other than http or
// https, anything after the authority (a path, even "/", a query or a fragment), user info,
// an empty host, a host that is not a hostname or IP address, a host holding a byte ≥ 0x80
// (never IDNA-mapped, SPEC §1), and a port that is not 1 to 65535. It allocates only to
// lower-case a host.
func ParseOrigin(s string) (Origin, error) {
	return parseOrigin(s, hostname.ParseAuthority)
}

// parseOrigin reads `scheme://authority` with parse reading the authority: the request form
// (ParseAuthority) for a header, the operator's (ParseConfigAuthority) for a pattern.
func parseOrigin(s string, parse func(string) (string, uint16, error)) (Origin, error) {
	if len(s) > MaxOriginLen {
		return Origin{}, errOriginTooLong
	}
	if s == "null" {
		return Origin{}, errOriginNull
	}
	i := strings.Index(s, "://")
	if i < 0 {
		return Origin{}, errOriginSyntax
	}
	var scheme string
	switch {
	case originSchemeIs(s[:i], "https"):
		scheme = "https"
	case originSchemeIs(s[:i], "http"):
		scheme = "http"
	default:
		return Origin{}, errOriginScheme
	}
	h, port, err := parse(s[i+3:])
	if err != nil {
		return Origin{}, err
	}
	if port == 0 {
		port = originDefaultPort(scheme)
	}
	return Origin{Scheme: scheme, Host: h, Port: port}, nil
}

func originDefaultPort(scheme string) uint16 {
	if scheme == "https" {
		return 443
	}
	return 80
}

// OriginMatcher is a compiled set of origin patterns (see the package's origin rules): a map
// of exact origins, a map of hosts that match with any scheme and port, and a map of
// `*.suffix` suffixes, so that a match costs at most one map lookup per label of the origin's
// host, however many patterns there are.
//
// # Notes
//
//   - Build it with Add (or CompileOrigins), then only read it: Match is safe for concurrent
//     use once no more patterns are added.
//   - The zero value is an empty matcher that matches nothing.
type OriginMatcher struct {
	exact    map[Origin]struct{}
	hosts    map[string]struct{}
	suffixes map[string]struct{}
}

// CompileOrigins compiles patterns into a matcher. A pattern that is not valid is left out,
// and its error (which names the pattern) is returned in errs; the matcher still holds every
// valid pattern.
func CompileOrigins(patterns []string) (m *OriginMatcher, errs []error) {
	m = &OriginMatcher{}
	for _, p := range patterns {
		if err := m.Add(p); err != nil {
			errs = append(errs, err)
		}
	}
	return m, errs
}

// PatternError reports an origin pattern that cannot be compiled.
type PatternError struct {
	Pattern string
	Err     error
}

// Error implements error.
func (e *PatternError) Error() string {
	return "origin pattern " + strconv.Quote(e.Pattern) + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *PatternError) Unwrap() error { return e.Err }

// Add compiles one pattern into m. Surrounding spaces are ignored, and so is one trailing "/"
// after a `scheme://host[:port]` pattern (as operators often paste origins with one).
func (m *OriginMatcher) Add(pattern string) error {
	p := strings.TrimSpace(pattern)
	fail := func(err error) error { return &PatternError{Pattern: pattern, Err: err} }
	if p == "" {
		return fail(errPatternEmpty)
	}
	if strings.Contains(p, "://") {
		if strings.IndexByte(p, '*') >= 0 {
			return fail(errPatternWildcard)
		}
		o, err := parseOrigin(strings.TrimSuffix(p, "/"), hostname.ParseConfigAuthority)
		if err != nil {
			return fail(err)
		}
		if m.exact == nil {
			m.exact = map[Origin]struct{}{}
		}
		m.exact[o] = struct{}{}
		return nil
	}
	return m.addHost(p, fail)
}

// AddHostPattern compiles a site hostname (exact, or `*.suffix`), which matches any scheme and
// port. A `scheme://` form is refused.
func (m *OriginMatcher) AddHostPattern(pattern string) error {
	p := strings.TrimSpace(pattern)
	fail := func(err error) error { return &PatternError{Pattern: pattern, Err: err} }
	if p == "" {
		return fail(errPatternEmpty)
	}
	if strings.Contains(p, "://") {
		return fail(errOriginSyntax)
	}
	return m.addHost(p, fail)
}

func (m *OriginMatcher) addHost(p string, fail func(error) error) error {
	if strings.EqualFold(p, "null") {
		return fail(errOriginNull) // an opaque origin is never trusted; a host called "null" neither
	}
	suffix, wild := strings.CutPrefix(p, "*.")
	if strings.IndexByte(suffix, '*') >= 0 {
		return fail(errPatternWildcard)
	}
	if suffix != "" && suffix[0] != '[' && strings.IndexByte(suffix, ':') >= 0 {
		return fail(errPatternPort)
	}
	for i := 0; i < len(suffix); i++ {
		if c := suffix[i]; c <= ' ' || c == '/' || c == '?' || c == '#' || c == '@' || c == '%' || c == '\\' {
			return fail(errOriginSyntax)
		}
	}
	h, err := hostname.Canonical(suffix)
	if err != nil {
		return fail(err)
	}
	if wild {
		if hostname.IsIP(h) {
			return fail(errPatternIPSuffix)
		}
		if m.suffixes == nil {
			m.suffixes = map[string]struct{}{}
		}
		m.suffixes[h] = struct{}{}
		return nil
	}
	if m.hosts == nil {
		m.hosts = map[string]struct{}{}
	}
	m.hosts[h] = struct{}{}
	return nil
}

// Match reports whether o matches one of m's patterns. It allocates nothing.
func (m *OriginMatcher) Match(o Origin) bool {
	if m == nil || o.Host == "" {
		return false
	}
	if _, ok := m.hosts[o.Host]; ok {
		return true
	}
	if _, ok := m.exact[o]; ok {
		return true
	}
	if len(m.suffixes) == 0 || hostname.IsIP(o.Host) {
		return false
	}
	// Every proper suffix that starts after a dot: "a.b.example.com" looks up
	// "b.example.com", "example.com" and "com", never the host itself.
	h := o.Host
	for i := 0; i < len(h); i++ {
		if h[i] == '.' {
			if _, ok := m.suffixes[h[i+1:]]; ok {
				return true
			}
		}
	}
	return false
}

// MatchString parses origin and matches it; a value that does not parse never matches.
func (m *OriginMatcher) MatchString(origin string) bool {
	o, err := ParseOrigin(origin)
	return err == nil && m.Match(o)
}

// Len is the number of distinct compiled patterns.
func (m *OriginMatcher) Len() int {
	if m == nil {
		return 0
	}
	return len(m.exact) + len(m.hosts) + len(m.suffixes)
}

func originSchemeIs(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// Package hostname is the one place tokenagent reads a host: the canonical form of a hostname
// or IP literal, and the authority of a request (`host[:port]`). The site lookup, the origin
// matcher of Browser API Tokens and the config's hostnames all use it, so a host is spelled
// the same way everywhere it is compared.
//
//	h, port, err := hostname.ParseAuthority("Docs.Example.com.:8443") // "docs.example.com", 8443
//
// # Canonical form
//
// A hostname is lower-cased, loses one trailing dot, and is dot-separated labels of 1 to 63
// letters, digits, '-' or '_' (browsers allow '_'), at most 253 characters. An IPv6 literal
// keeps its brackets and is written in its RFC 5952 form (`[::1]`); a zone is refused. An IPv4
// address is a hostname whose labels are digits.
//
// # Requests and configuration are read differently
//
// What a client sends (a request's authority, an `Origin`) is compared as ASCII bytes and is
// never IDNA-mapped: Envoy's routes and the upstream compare the bytes they got, so an
// authority such as `docs.example.com。` (U+3002), which IDNA maps to `docs.example.com`, must
// not name the site `docs` when the proxy routes it elsewhere (SPEC §1). ParseAuthority
// refuses any byte ≥ 0x80 with ErrNotASCII.
//
// What an operator writes (config hostnames, origin patterns in key records) may be Unicode:
// Canonical and ParseConfigAuthority turn Unicode labels into their A-label (`xn--`) form
// (IDNA, UTS #46 lookup rules), once, at load.
package hostname

import (
	"errors"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Errors of ParseAuthority and Canonical. They describe the value's shape; none repeats it.
var (
	// ErrSyntax: the value holds something an authority cannot (user info, a path, a query, a
	// fragment, a space or control character, a percent-escape or backslash).
	ErrSyntax = errors.New("an authority is host[:port] with no user info, path, query, fragment or space")
	// ErrPort: the port is not a number from 1 to 65535 written without leading zeros.
	ErrPort = errors.New("the port is not a number from 1 to 65535 without leading zeros")
	// ErrHost: the host is empty or not a valid hostname or IP literal.
	ErrHost = errors.New("the host is not a valid hostname or IP address")
	// ErrNotASCII: a request's authority or origin holds a byte ≥ 0x80. Requests are compared
	// as ASCII bytes, never IDNA-mapped (see the package documentation).
	ErrNotASCII = errors.New("the host holds a non-ASCII byte; a request's host is compared as ASCII and never IDNA-mapped")
)

// ParseAuthority splits a request authority (`:authority`, `Host`, or the authority of an
// `Origin`) into its canonical host and its port (0 when none is given). It refuses user info
// (`a.example.com:1@b.example.com`), anything after the authority, spaces, control
// characters, percent-escapes and backslashes, an empty port, a port outside 1–65535, and any
// byte ≥ 0x80 (ErrNotASCII: a request's host is never IDNA-mapped). It allocates only when
// the host needs lower-casing or a canonical IPv6 spelling.
func ParseAuthority(a string) (host string, port uint16, err error) {
	return parseAuthority(a, false)
}

// ParseConfigAuthority is ParseAuthority for an authority an operator wrote (an origin
// pattern `scheme://host[:port]` in a key record): Unicode labels are allowed and turned into
// their A-label form.
func ParseConfigAuthority(a string) (host string, port uint16, err error) {
	return parseAuthority(a, true)
}

func parseAuthority(a string, unicode bool) (host string, port uint16, err error) {
	if a == "" {
		return "", 0, ErrHost
	}
	for i := 0; i < len(a); i++ {
		switch c := a[i]; {
		case c <= ' ' || c == 0x7f:
			return "", 0, ErrSyntax
		case c == '/' || c == '?' || c == '#' || c == '@' || c == '\\' || c == '%':
			return "", 0, ErrSyntax
		case c >= utf8.RuneSelf && !unicode:
			return "", 0, ErrNotASCII
		}
	}
	h, rest := a, ""
	if a[0] == '[' {
		j := strings.IndexByte(a, ']')
		if j < 0 {
			return "", 0, ErrHost
		}
		h, rest = a[:j+1], a[j+1:]
	} else if j := strings.IndexByte(a, ':'); j >= 0 {
		h, rest = a[:j], a[j:]
	}
	if rest != "" {
		if rest[0] != ':' {
			return "", 0, ErrSyntax
		}
		p, ok := ParsePort(rest[1:])
		if !ok {
			return "", 0, ErrPort
		}
		port = p
	}
	host, err = Canonical(h)
	if err != nil {
		return "", 0, err
	}
	return host, port, nil
}

// ParsePort parses a port from 1 to 65535 written in decimal without sign or leading zeros.
func ParsePort(s string) (uint16, bool) {
	if len(s) == 0 || len(s) > 5 || s[0] == '0' {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	if n > 65535 {
		return 0, false
	}
	return uint16(n), true
}

// Canonical returns h, a hostname or a bracketed IPv6 literal without a port as an operator
// wrote it, in canonical form (see the package documentation): Unicode labels become A-labels.
// It returns h itself, without allocating, when h is already canonical. Never use it on what a
// client sent: ParseAuthority reads that.
func Canonical(h string) (string, error) {
	if h == "" {
		return "", ErrHost
	}
	if h[0] == '[' {
		if len(h) < 3 || h[len(h)-1] != ']' {
			return "", ErrHost
		}
		a, err := netip.ParseAddr(h[1 : len(h)-1])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", ErrHost
		}
		if s := a.String(); s != h[1:len(h)-1] {
			return "[" + s + "]", nil
		}
		return h, nil
	}
	ascii, upper := true, false
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case c >= utf8.RuneSelf:
			ascii = false
		case 'A' <= c && c <= 'Z':
			upper = true
		}
	}
	if !ascii {
		if !utf8.ValidString(h) {
			return "", ErrHost
		}
		a, err := idna.Lookup.ToASCII(h)
		if err != nil {
			return "", ErrHost
		}
		h = a
	} else if upper {
		h = strings.ToLower(h)
	}
	if h != "" && h[len(h)-1] == '.' { // IDNA may map a host to nothing (U+00AD, U+200B)
		h = h[:len(h)-1]
	}
	if !validName(h) {
		return "", ErrHost
	}
	return h, nil
}

// validName reports whether h is a lower-case ASCII hostname: dot-separated labels of 1 to 63
// letters, digits, '-' or '_', at most 253 characters in all.
func validName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
			continue
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
		if label++; label > 63 {
			return false
		}
	}
	return label > 0
}

// IsIP reports whether a canonical host is an IP address: an IPv6 literal, or a host whose
// last label is all digits (the WHATWG URL standard reads such a host as IPv4). IP hosts are
// only ever matched exactly, never by a `*.suffix` pattern.
func IsIP(h string) bool {
	if h == "" {
		return false
	}
	if h[0] == '[' {
		return true
	}
	last := h[strings.LastIndexByte(h, '.')+1:]
	if last == "" {
		return false
	}
	for i := 0; i < len(last); i++ {
		if last[i] < '0' || last[i] > '9' {
			return false
		}
	}
	return true
}

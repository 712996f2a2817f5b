// Command readonly-anonymous is a site policy: anonymous users may only read (GET and HEAD),
// and never under the site API, /@api/deki/site/. Everyone else is left to the route rules.
//
// "Anonymous" is what guest.Input.Anonymous says: no credential, or a Browser API Token without
// an Auth Token. A refused request gets 401, since signing in is the way forward.
//
// Build:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o readonly-anonymous.wasm .
package main

import (
	"encoding/binary"
	"math/bits"
	"net/url"
	"path"
	"strings"

	"github.com/tokenagent/tokenagent/plugins/guest"
)

func main() {}

func init() { guest.Handle(policy) }

func policy(in *guest.Input) guest.Output {
	if !in.Anonymous() {
		return guest.Allow()
	}
	if in.Method != "GET" && in.Method != "HEAD" {
		return guest.Deny(401, "anonymous users may only read (GET, HEAD): sign in to make changes")
	}
	if underSiteAPI(in.Path) {
		return guest.Deny(401, "anonymous users may not use the site API (/@api/deki/site/)")
	}
	return guest.Allow()
}

// underSiteAPI reports whether p is /@api/deki/site or below it, as the upstream would route
// it: percent-escapes decoded once (an encoded slash too: over-matching is the safe side of a
// refusal), "\\" read as "/", dot segments removed, slashes merged, ASCII case ignored. The agent
// already passes the path normalised as for route rules; this makes the refusal hold even so.
// A path with a malformed escape counts as under the site API.
//
// Written for the host: every loop iteration in a module costs a deadline check (tens of
// nanoseconds), so the path is scanned eight bytes at a time and only its first 16 decoded
// bytes are built; the full canonical form is made only for a path holding a dot, a backslash,
// a double slash or an escape of one of them or of a slash.
func underSiteAPI(p string) bool {
	switch hidden, bad, escaped := mayHideSegments(p); {
	case bad:
		return true
	case !hidden && !escaped:
		return hasSiteAPIPrefix(p)
	case hidden:
		d, err := url.PathUnescape(p)
		if err != nil {
			return true
		}
		return hasSiteAPIPrefix(path.Clean("/" + strings.ReplaceAll(d, "\\", "/")))
	}
	// An escape in the first 16 bytes, but no dot segments, repeated slashes or hidden separators:
	// the first 16 decoded bytes decide.
	var head [16]byte
	n := 0
	for i := 0; i < len(p) && n < len(head); i++ {
		c := p[i]
		if c == '%' { // well-formed: mayHideSegments checked every escape
			c = unhex(p[i+1])<<4 | unhex(p[i+2])
			i += 2
		}
		head[n] = c
		n++
	}
	return hasSiteAPIPrefix(string(head[:n]))
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10
	}
	return 255
}

const (
	ones  = 0x0101010101010101
	lows  = 0x7f7f7f7f7f7f7f7f
	highs = 0x8080808080808080
)

// equalBytes returns 0x80 in each byte of v that equals c, and 0 in the others.
func equalBytes(v uint64, c byte) uint64 {
	t := v ^ (ones * uint64(c))
	return ^((t&lows + lows) | t | lows)
}

// mayHideSegments reports whether p holds a '.', a '\\', "//", or an escape that decodes to
// one of those or to '/' (hidden), whether it holds a malformed escape (bad), and whether an
// escape starts in its first 16 bytes (escaped). It reads eight bytes at a time; the windows
// overlap by one byte, so no pair of neighbours is missed.
func mayHideSegments(p string) (hidden, bad, escaped bool) {
	for i := 0; i < len(p); i += 7 {
		var w [8]byte
		copy(w[:], p[i:])
		v := binary.LittleEndian.Uint64(w[:])
		slash := equalBytes(v, '/')
		if equalBytes(v, '.')|equalBytes(v, '\\')|(slash&(slash>>8)) != 0 {
			return true, false, false
		}
		pct := equalBytes(v, '%')
		if pct == 0 { // the common case: no inner loop (each loop entry costs a check too)
			continue
		}
		for m := pct; m != 0; m &= m - 1 { // each '%' in the window
			j := i + bits.TrailingZeros64(m)/8
			if j+2 >= len(p) || unhex(p[j+1]) > 15 || unhex(p[j+2]) > 15 {
				return false, true, false
			}
			switch unhex(p[j+1])<<4 | unhex(p[j+2]) {
			case '/', '.', '\\':
				return true, false, false
			}
			escaped = escaped || j < 16
		}
	}
	return false, false, escaped
}

// The site API prefix "/@api/deki/site" as two little-endian words, and the bits that make
// its letters match either case (0x20 in each letter's byte).
var (
	prefix0, fold0 = word("/@api/de")
	prefix1, fold1 = word("ki/site")
)

func word(s string) (v, fold uint64) {
	for i := 0; i < len(s); i++ {
		v |= uint64(s[i]) << (8 * i)
		if s[i] >= 'a' && s[i] <= 'z' {
			fold |= 0x20 << (8 * i)
		}
	}
	return v, fold
}

// hasSiteAPIPrefix reports whether p is "/@api/deki/site" or starts with "/@api/deki/site/",
// ignoring ASCII case, without a loop.
func hasSiteAPIPrefix(p string) bool {
	if len(p) < 15 || len(p) > 15 && p[15] != '/' {
		return false
	}
	var w [16]byte
	copy(w[:], p[:15])
	a := binary.LittleEndian.Uint64(w[:8])
	b := binary.LittleEndian.Uint64(w[8:])
	return a|fold0 == prefix0|fold0 && b|fold1 == prefix1|fold1
}

// Package output holds the rules of what a policy module gives back, shared by both kinds of
// module (tokenagent's ABI v1 and OPA's): the limits, the header rules, and how the host makes
// a module's text printable.
package output

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits of a module's output that are not configurable (plugins/ABI.md, "Limits"); package
// plugins exports them under the same names.
const (
	// MaxInputBytes is the largest input a module is sent.
	MaxInputBytes = 1 << 20
	// MaxReasonBytes is the longest reason an output may carry.
	MaxReasonBytes = 256
	// MaxHeaders is the most headers each of an output's two header lists may hold.
	MaxHeaders = 64
	// MaxHeaderNameBytes and MaxHeaderValueBytes bound one output header.
	MaxHeaderNameBytes  = 256
	MaxHeaderValueBytes = 8192
	// MaxLogBytes is the longest line a module may log; longer ones are cut.
	MaxLogBytes = 1024
)

// CheckHeader enforces the output header rules (ABI.md "Output") on one header: the name's
// (CheckHeaderName), and a value of at most MaxHeaderValueBytes of UTF-8 without control
// characters but tab.
func CheckHeader(what string, name, value []byte) error {
	if err := CheckHeaderName(name); err != nil {
		return fmt.Errorf("output %s %q: %v", what, Truncate(name), err)
	}
	if len(value) > MaxHeaderValueBytes {
		return fmt.Errorf("output %s %q: value is %d bytes, over %d", what, name, len(value), MaxHeaderValueBytes)
	}
	for _, c := range value {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return fmt.Errorf("output %s %q: value holds control character %#x", what, name, c)
		}
	}
	if !utf8.Valid(value) { // gRPC cannot carry it: the answer would be an Internal error
		return fmt.Errorf("output %s %q: value is not UTF-8", what, name)
	}
	return nil
}

// Truncate cuts b to 64 bytes for an error message.
func Truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}

// reservedHeaders may not be set by a module: they frame or route the message, or belong to the
// agent's own answer.
var reservedHeaders = map[string]bool{
	"host": true, "content-length": true, "transfer-encoding": true, "connection": true,
	"keep-alive": true, "proxy-connection": true, "te": true, "trailer": true, "upgrade": true,
	"content-type": true, "set-cookie": true, "www-authenticate": true,
}

// CheckHeaderName enforces ABI.md's header name rules: 1 to MaxHeaderNameBytes lower-case
// RFC 9110 token characters, not reserved, not x-auth-*.
func CheckHeaderName(name []byte) error {
	if len(name) == 0 || len(name) > MaxHeaderNameBytes {
		return fmt.Errorf("name is %d bytes, want 1..%d", len(name), MaxHeaderNameBytes)
	}
	for _, c := range name {
		if !isTokenChar(c) {
			return fmt.Errorf("name holds %q, not a lower-case token character", c)
		}
	}
	// x_auth_user is X-Auth-User to a CGI, WSGI, Rack or PHP upstream: every spelling is the
	// agent's (SPEC §2a).
	if len(name) >= 7 && strings.EqualFold(strings.ReplaceAll(string(name[:7]), "_", "-"), "x-auth-") {
		return fmt.Errorf("names starting with x-auth- (in any spelling) are reserved for the agent")
	}
	if reservedHeaders[string(name)] {
		return fmt.Errorf("name is reserved (framing, routing or the agent's own answer)")
	}
	return nil
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// Sanitize turns b into printable text: invalid UTF-8 and control characters become U+FFFD.
func Sanitize(b []byte) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return '\uFFFD'
		}
		return r
	}, strings.ToValidUTF8(string(b), "\uFFFD"))
}

// Reason makes a denial body into a reason: printable, cut to MaxReasonBytes at a
// character boundary.
func Reason(body string) string {
	r := Sanitize([]byte(body))
	if len(r) <= MaxReasonBytes {
		return r
	}
	i := MaxReasonBytes
	for i > 0 && !utf8.RuneStart(r[i]) {
		i--
	}
	return r[:i]
}

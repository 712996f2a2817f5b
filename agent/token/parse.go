package token

import "unicode/utf8"

// Small allocation-free parsers shared by the MindTouch-style token kinds.

// allDigits reports whether s is 1 or more ASCII digits.
func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseUint parses up to 19 decimal digits; ok is false for anything else.
func parseUint(s string) (n int64, ok bool) {
	if len(s) == 0 || len(s) > 19 {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	if v > 1<<63-1 {
		return 0, false
	}
	return int64(v), true
}

// isAlnum reports whether s is 1 or more ASCII letters and digits.
func isAlnum(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// isHex64 reports whether s is exactly 64 hex digits (a SHA-256 digest), either case.
func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// validUser reports whether u is a user as tokens name it: a decimal id of 1 to 19 digits, or
// "=" followed by a non-empty URL-encoded username (well-formed %XX escapes, no control
// characters or spaces, and valid UTF-8 where not escaped: the user becomes a header value and
// a protobuf string, which gRPC refuses to send when it is not UTF-8).
func validUser(u string) bool {
	if u == "" {
		return false
	}
	if u[0] != '=' {
		return ValidUserID(u)
	}
	name := u[1:]
	if name == "" {
		return false
	}
	ascii := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '%':
			if i+2 >= len(name) || !isHexDigit(name[i+1]) || !isHexDigit(name[i+2]) {
				return false
			}
			i += 2
		case c <= ' ' || c == 0x7f:
			return false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return ascii || utf8.ValidString(name)
}

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// ValidUserID reports whether id is a decimal user id as MindTouch tokens name one: 1 to 19
// digits. It is the one rule for every decimal id: an Auth Token's user, a server token's
// numeric user, `impersonateuserid`, and the ids the user directory hands out.
func ValidUserID(id string) bool { return len(id) <= 19 && allDigits(id) }

package vault

import (
	"errors"
	"net/url"
	"strings"
)

// Redacted is what RedactURL writes in place of a value it hides.
const Redacted = "redacted"

// RedactURL returns a configured URL (a `jwks_uri`, the Vault address) fit to print in a log
// line, a `/readyz` warning, a span or an error: its user info and the value of every query
// parameter and of the fragment are replaced by "redacted", so a password
// (`https://user:password@idp`) or a bearer token in the query (`?access_token=…`, RFC 6750
// §2.3) never leaves the process. The scheme, host, port, path and the names of the query
// parameters stay, so an operator can still tell which URL is meant.
//
//	vault.RedactURL("https://u:pw@idp.example.com/jwks?access_token=abc")
//	// "https://redacted@idp.example.com/jwks?access_token=redacted"
//
// It is the one place tokenagent masks a URL; every printer of a configured URL calls it. A
// value that does not parse as a URL is redacted by its shape the same way.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" {
		return redactUnparsed(raw)
	}
	var b strings.Builder
	b.Grow(len(raw))
	if u.Scheme != "" {
		b.WriteString(u.Scheme)
		b.WriteByte(':')
	}
	if u.Scheme != "" || u.Host != "" || u.User != nil {
		b.WriteString("//")
	}
	if u.User != nil {
		b.WriteString(Redacted)
		b.WriteByte('@')
	}
	b.WriteString(u.Host)
	b.WriteString(u.EscapedPath())
	if u.RawQuery != "" || u.ForceQuery {
		b.WriteByte('?')
		for i, pair := range strings.Split(u.RawQuery, "&") {
			if i > 0 {
				b.WriteByte('&')
			}
			name, _, hasValue := strings.Cut(pair, "=")
			b.WriteString(name)
			if hasValue {
				b.WriteString("=" + Redacted)
			}
		}
	}
	if u.Fragment != "" || u.RawFragment != "" {
		b.WriteString("#" + Redacted)
	}
	return b.String()
}

// redactUnparsed redacts a value that does not parse as a URL the same way, by its shape: the
// user info of what looks like an authority (before the first '/', '?' or '#', up to its last
// '@') and everything after the first '?' or '#' are hidden.
func redactUnparsed(raw string) string {
	prefix, rest := "", raw
	if i := strings.Index(raw, "://"); i >= 0 {
		prefix, rest = raw[:i+3], raw[i+3:]
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		authority = Redacted + "@" + authority[i+1:]
	}
	if i := strings.IndexAny(tail, "?#"); i >= 0 {
		tail = tail[:i+1] + Redacted
	}
	return prefix + authority + tail
}

// RedactURLError rewrites the URL inside a *url.Error in err's chain (what net/http's client
// returns) with RedactURL: Go's own text masks a password but prints the query as it is. It
// returns err, changed in place.
func RedactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = RedactURL(ue.URL)
	}
	return err
}

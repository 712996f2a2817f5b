package agent

import (
	"net/url"
	"strings"
)

// What a site policy sees of a request (SPEC §5, plugins/ABI.md "Input record"): never a
// credential, and never a client-sent x-auth-* header. The agent builds the policy's view
// here; package plugins passes it to the module as given.

// isAuthHeader reports whether a header name is in the agent's x-auth-* namespace in any
// spelling an upstream may read as one (SPEC §2a): lower-cased, with every "_" read as "-"
// (CGI, WSGI, Rack and PHP read `X_Auth_User` as `X-Auth-User`).
func isAuthHeader(name string) bool {
	const prefix = "x-auth-"
	if len(name) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		if foldHeaderByte(name[i]) != prefix[i] {
			return false
		}
	}
	return true
}

// foldHeaderByte is a header name's byte as upstreams compare it: lower-case, "_" read as "-".
func foldHeaderByte(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	case c == '_':
		return '-'
	}
	return c
}

// policyHeaderRule says what happens to one request header on its way to a policy.
type policyHeaderRule uint8

const (
	policyKeep        policyHeaderRule = iota
	policyDrop                         // carries a credential, or is an x-auth-* header
	policyCleanURL                     // carries a URL: its credential parameters are removed
	policyCleanCookie                  // the cookie header: its authtoken cookies are removed
)

// policyRule classifies a header name, compared lower-case with "_" read as "-".
func policyRule(name string) policyHeaderRule {
	if isAuthHeader(name) {
		return policyDrop
	}
	var buf [32]byte
	if len(name) > len(buf) {
		return policyKeep
	}
	n := buf[:len(name)]
	for i := 0; i < len(name); i++ {
		n[i] = foldHeaderByte(name[i])
	}
	switch string(n) {
	case headerAuthorization, "proxy-authorization", headerDekiToken, headerAuthtoken:
		return policyDrop
	case headerCookie:
		return policyCleanCookie
	case ":path", "x-original-uri", "x-forwarded-uri", "x-envoy-original-path", "x-original-url",
		"x-rewrite-url", "referer":
		return policyCleanURL
	}
	return policyKeep
}

// policyHeaders returns the request headers a policy may see: no header that carries a
// credential (authorization, proxy-authorization, x-deki-token, x-authtoken, in any spelling),
// no x-auth-* header, the cookie header without its authtoken cookies (dropped when none
// remain), and every header that carries a URL (:path, x-original-uri, x-forwarded-uri,
// x-envoy-original-path, x-original-url, x-rewrite-url, referer) without the authtoken,
// apikey and impersonateuserid parameters of its query.
func policyHeaders(h map[string]string) [][2]string {
	out := make([][2]string, 0, len(h))
	for k, v := range h {
		switch policyRule(k) {
		case policyDrop:
			continue
		case policyCleanURL:
			v = cleanURL(v)
		case policyCleanCookie:
			if v = cleanCookie(v); v == "" {
				continue
			}
		}
		out = append(out, [2]string{k, v})
	}
	return out
}

// cleanCookie returns a Cookie header without its authtoken cookies. It returns v itself when
// there are none.
func cleanCookie(v string) string {
	if !strings.Contains(v, cookieAuthtoken) {
		return v
	}
	var b strings.Builder
	for rest, more := v, true; more; {
		var part string
		part, rest, more = strings.Cut(rest, ";")
		name, _, _ := strings.Cut(strings.TrimLeft(part, " \t"), "=")
		if strings.TrimRight(name, " \t") == cookieAuthtoken || strings.TrimSpace(part) == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		b.WriteString(strings.TrimLeft(part, " \t"))
	}
	return b.String()
}

// cleanURL returns a URL or request target without the credential parameters of its query
// (see cleanQuery). It returns u itself when there are none.
func cleanURL(u string) string {
	i := strings.IndexByte(u, '?')
	if i < 0 {
		return u
	}
	q, frag := u[i+1:], ""
	if j := strings.IndexByte(q, '#'); j >= 0 {
		q, frag = q[:j], q[j:]
	}
	c := cleanQuery(q)
	if c == q {
		return u
	}
	if c == "" {
		return u[:i] + frag
	}
	return u[:i+1] + c + frag
}

// cleanQuery returns the raw query q without its authtoken, apikey and impersonateuserid
// parameters (names compared without case, after percent-decoding). It returns q itself,
// without allocating, when there are none.
func cleanQuery(q string) string {
	found := false
	for rest, more := q, true; more && !found; {
		var pair string
		pair, rest, more = strings.Cut(rest, "&")
		found = credentialParam(pair)
	}
	if !found {
		return q
	}
	var b strings.Builder
	b.Grow(len(q))
	for rest, more := q, true; more; {
		var pair string
		pair, rest, more = strings.Cut(rest, "&")
		if pair != "" && !credentialParam(pair) {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(pair)
		}
	}
	return b.String()
}

// credentialParam reports whether a query pair names a credential parameter.
func credentialParam(pair string) bool {
	name, _, _ := strings.Cut(pair, "=")
	if strings.ContainsAny(name, "%+") {
		if u, err := url.QueryUnescape(name); err == nil {
			name = u
		}
	}
	return strings.EqualFold(name, queryAuthtoken) || strings.EqualFold(name, queryAPIKey) ||
		strings.EqualFold(name, queryImpersonate)
}

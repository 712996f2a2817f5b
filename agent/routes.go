package agent

import (
	"strings"

	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
)

// Route is a compiled route rule (SPEC §5).
type Route struct {
	Methods []string // empty: every method
	Path    string   // normalised; without the trailing * when Prefix
	Prefix  bool
	Require string
	Scopes  []string
	// scopeChallenge is the WWW-Authenticate value of an insufficient_scope denial.
	scopeChallenge string
}

func compileRoute(c config.Route) Route {
	r := Route{Require: c.Require, Scopes: c.Scopes}
	// Methods are compared upper-case (SPEC §2a), and a rule that lists GET also covers HEAD.
	for _, m := range c.Methods {
		r.Methods = appendMethod(r.Methods, strings.ToUpper(m))
		if strings.EqualFold(m, "GET") {
			r.Methods = appendMethod(r.Methods, "HEAD")
		}
	}
	p := c.Path
	if strings.HasSuffix(p, "*") {
		r.Prefix = true
		p = p[:len(p)-1]
	}
	r.Path = NormalizePath(p)
	if r.Prefix && strings.HasSuffix(p, "/") && !strings.HasSuffix(r.Path, "/") {
		r.Path += "/"
	}
	if len(c.Scopes) > 0 {
		r.scopeChallenge = `Bearer error="insufficient_scope", scope="` + strings.Join(c.Scopes, " ") + `"`
	}
	return r
}

func appendMethod(ms []string, m string) []string {
	for _, have := range ms {
		if have == m {
			return ms
		}
	}
	return append(ms, m)
}

// matches reports whether the rule applies to method (upper-case) and the normalised path.
// An exact pattern also matches the path with one trailing "/" (SPEC §5).
func (r *Route) matches(method, path string) bool {
	if len(r.Methods) > 0 {
		found := false
		for _, m := range r.Methods {
			if m == method {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	if r.Prefix {
		return strings.HasPrefix(path, r.Path)
	}
	return path == r.Path || (len(path) == len(r.Path)+1 && path[len(path)-1] == '/' && strings.HasPrefix(path, r.Path))
}

// matchRoute returns the first rule of routes that applies, or nil (require: any).
func matchRoute(routes []Route, method, path string) *Route {
	for i := range routes {
		if routes[i].matches(method, path) {
			return &routes[i]
		}
	}
	return nil
}

// NormalizePath normalises a request path (without its query) as SPEC §5 says, for route rules
// and policies:
//
//  1. percent-encoded octets are decoded (RFC 3986 §6.2.2.2, and beyond it every octet but "/"
//     and "%", since upstream servers decode them too and a rule must not be bypassed by
//     encoding); the remaining escapes are upper-cased, so an encoded slash (%2F) stays one;
//  2. matrix parameters (";name=value" at the end of a segment, which servlet containers
//     strip) are removed from every segment, before dot segments are read, so "/a/..;/b" is
//     "/b" as Tomcat reads it;
//  3. repeated slashes are merged and dot segments removed (RFC 3986 §5.2.4); ".." never
//     climbs above the root.
//
// A path that needs no change is returned as is, without allocating. Callers refuse paths
// holding control characters or backslashes before (SPEC §2a).
func NormalizePath(p string) string {
	if p == "" {
		return "/"
	}
	if !needsNormalizing(p) {
		return p
	}
	b := make([]byte, 0, len(p)+1)
	if p[0] != '/' {
		b = append(b, '/')
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '%' && i+2 < len(p) && isHex(p[i+1]) && isHex(p[i+2]) {
			d := unhexByte(p[i+1])<<4 | unhexByte(p[i+2])
			if d == '/' || d == '%' {
				b = append(b, '%', upperHex(p[i+1]), upperHex(p[i+2]))
			} else {
				b = append(b, d)
			}
			i += 2
			continue
		}
		b = append(b, c)
	}
	return removeDotSegments(string(b))
}

func needsNormalizing(p string) bool {
	if p[0] != '/' {
		return true
	}
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '%', ';':
			return true
		case '/':
			if i+1 < len(p) && (p[i+1] == '/' || p[i+1] == '.') {
				return true
			}
		}
	}
	return false
}

// removeDotSegments strips each segment's matrix parameters, merges repeated slashes and
// resolves "." and ".." segments of an absolute path; ".." never climbs above the root.
func removeDotSegments(p string) string {
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	trailing := false
	for i, s := range segs {
		if j := strings.IndexByte(s, ';'); j >= 0 {
			s = s[:j]
		}
		last := i == len(segs)-1
		switch s {
		case "", ".":
			trailing = last
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			trailing = last
		default:
			out = append(out, s)
			trailing = false
		}
	}
	r := "/" + strings.Join(out, "/")
	if trailing && len(out) > 0 {
		r += "/"
	}
	return r
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhexByte(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func upperHex(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

// checkRoutes applies the first rule that matches the request's method and path, if any, to a
// verified identity: its requirement and its scopes (SPEC §5).
func checkRoutes(routes []Route, tg *target, id *token.Identity) *reason.Error {
	r := matchRoute(routes, tg.method, tg.path)
	if r == nil {
		return nil
	}
	switch r.Require {
	case config.RequireAuthenticated:
		if !id.Authenticated() {
			return reason.New(reason.AuthenticationRequired)
		}
	case config.RequireUser:
		switch {
		case id.HasUser():
		case id.Application || id.Kind == token.KindAPIKey:
			return reason.New(reason.UserTokenRequired)
		default:
			return reason.New(reason.AuthenticationRequired)
		}
	}
	if len(r.Scopes) > 0 && id.Kind == token.KindOAuth {
		for _, need := range r.Scopes {
			if !hasScope(id.Scopes, need) {
				return &reason.Error{Reason: reason.InsufficientScope,
					Detail:  "the token lacks a scope this route needs: " + strings.Join(r.Scopes, " "),
					Headers: map[string]string{"WWW-Authenticate": r.scopeChallenge}}
			}
		}
	}
	return nil
}

func hasScope(have []string, need string) bool {
	for _, s := range have {
		if s == need {
			return true
		}
	}
	return false
}

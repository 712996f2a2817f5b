package agent

import (
	"net/url"
	"strings"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
)

// Where credentials are found (SPEC §2).
const (
	headerDekiToken     = "x-deki-token"
	headerAuthorization = "authorization"
	headerAuthtoken     = "x-authtoken"
	headerCookie        = "cookie"
	cookieAuthtoken     = "authtoken"
	queryAuthtoken      = "authtoken"
	queryAPIKey         = "apikey"
	queryImpersonate    = "impersonateuserid"
)

// Request headers of the browser flow (lower case, as Request.Headers holds them).
const (
	headerOrigin         = "origin"
	headerRequestMethod  = "access-control-request-method"
	headerRequestHeaders = "access-control-request-headers"
)

// credential is one credential found on a request.
type credential struct {
	value   string
	present bool
}

// credentials are every credential found on a request, before any is verified.
type credentials struct {
	deki        credential // X-Deki-Token: server (tkn_), unprefixed server (holds _) or browser
	bearer      credential // Authorization: Bearer
	auth        credential // Auth Token or Impersonation Auth Token (cookie, header or query)
	apikey      credential // ?apikey=
	impersonate credential // ?impersonateuserid= (goes with apikey)
}

// dekiKind classifies an X-Deki-Token value.
func dekiKind(v string) token.Kind {
	if strings.HasPrefix(v, token.ServerTokenPrefix) || strings.IndexByte(v, '_') >= 0 {
		return token.KindServer
	}
	return token.KindBrowser
}

// kind is the credential kind the request presents (for metrics and logs), anonymous when none.
func (c *credentials) kind() token.Kind {
	switch {
	case c.deki.present:
		return dekiKind(c.deki.value)
	case c.bearer.present:
		return token.KindOAuth
	case c.auth.present:
		if strings.HasPrefix(c.auth.value, token.ImpersonationPrefix) {
			return token.KindImpersonation
		}
		return token.KindAuthToken
	case c.apikey.present:
		return token.KindAPIKey
	}
	return token.KindAnonymous
}

// findCredentials collects the request's credentials and applies the rules of SPEC §2 that
// need no key: at most one credential (a Browser API Token may come with an Auth Token), one
// value of each (two different `authtoken` cookies, query parameters or headers, two
// `apikey` parameters, two X-Deki-Token or Bearer values are two credentials; the same value
// repeated counts once), and no empty or oversized one.
//
// A header sent twice reaches the agent joined with "," (Envoy's rule for its headers map and
// the HTTP front's), so X-Deki-Token, X-Authtoken and Authorization are read as comma lists:
// no token of these kinds holds a comma.
func findCredentials(h map[string]string, rawQuery string) (credentials, *reason.Error) {
	var c credentials
	conflict := false
	add := func(cr *credential, v string) {
		switch {
		case !cr.present:
			*cr = credential{v, true}
		case v != cr.value:
			conflict = true
		}
	}
	if v, ok := h[headerDekiToken]; ok {
		for part := range strings.SplitSeq(v, ",") {
			add(&c.deki, strings.Trim(part, " \t"))
		}
	}
	if v, ok := h[headerAuthorization]; ok {
		// Only the Bearer scheme is ours; other schemes (and a Digest header's own
		// comma-separated parameters) are left to the upstream.
		for part := range strings.SplitSeq(v, ",") {
			part = strings.Trim(part, " \t")
			if scheme, rest, _ := strings.Cut(part, " "); strings.EqualFold(scheme, "bearer") {
				add(&c.bearer, strings.TrimSpace(rest))
			}
		}
	}
	// The Auth Token may come from a cookie, a header or the query; the same token in several
	// places is one credential, different tokens are several.
	if v, ok := h[headerAuthtoken]; ok {
		for part := range strings.SplitSeq(v, ",") {
			add(&c.auth, strings.Trim(part, " \t"))
		}
	}
	if ck, ok := h[headerCookie]; ok {
		eachCookie(ck, cookieAuthtoken, func(v string) { add(&c.auth, v) })
	}
	if rawQuery != "" {
		eachQueryValue(rawQuery, queryAuthtoken, func(v string) { add(&c.auth, v) })
		eachQueryValue(rawQuery, queryAPIKey, func(v string) { add(&c.apikey, v) })
		eachQueryValue(rawQuery, queryImpersonate, func(v string) { add(&c.impersonate, v) })
	}
	if conflict {
		return c, reason.New(reason.MultipleCredentials)
	}

	n := 0
	for _, p := range []bool{c.deki.present, c.bearer.present, c.auth.present, c.apikey.present} {
		if p {
			n++
		}
	}
	browserWithAuth := n == 2 && c.deki.present && c.auth.present && dekiKind(c.deki.value) == token.KindBrowser
	if n > 1 && !browserWithAuth {
		return c, reason.New(reason.MultipleCredentials)
	}

	for _, cr := range []*credential{&c.deki, &c.auth, &c.apikey} {
		if cr.present && (cr.value == "" || len(cr.value) > token.MaxTokenLen) {
			return c, reason.New(reason.MalformedToken)
		}
	}
	if c.bearer.present && (c.bearer.value == "" || len(c.bearer.value) > token.MaxJWTLen) {
		return c, reason.New(reason.MalformedToken)
	}
	return c, nil
}

// eachCookie calls fn with the value of every cookie called name in a Cookie header (double
// quotes around a value removed).
func eachCookie(header, name string, fn func(string)) {
	for header != "" {
		var part string
		part, header, _ = strings.Cut(header, ";")
		part = strings.TrimLeft(part, " \t")
		if k, v, ok := strings.Cut(part, "="); ok && k == name {
			v = strings.TrimRight(v, " \t")
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			fn(v)
		}
	}
}

// eachQueryValue calls fn with the decoded value of every parameter called name in a raw
// query (the name compared after percent-decoding). A value that does not decode is passed
// as a marker that no credential parser accepts.
func eachQueryValue(q, name string, fn func(string)) {
	for q != "" {
		var part string
		part, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(part, "=")
		if k != name {
			if strings.IndexByte(k, '%') < 0 {
				continue
			}
			if dk, err := url.QueryUnescape(k); err != nil || dk != name {
				continue
			}
		}
		if strings.ContainsAny(v, "%+") {
			dv, err := url.QueryUnescape(v)
			if err != nil {
				dv = "\x00invalid" // present but not decodable: malformed downstream
			}
			v = dv
		}
		fn(v)
	}
}

// splitPath splits a request path into path and raw query.
func splitPath(p string) (path, query string) {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i], p[i+1:]
	}
	return p, ""
}

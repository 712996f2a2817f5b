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
	impersonationPrefix = "imp_"
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
		if strings.HasPrefix(c.auth.value, impersonationPrefix) {
			return token.KindImpersonation
		}
		return token.KindAuthToken
	case c.apikey.present:
		return token.KindAPIKey
	}
	return token.KindAnonymous
}

// findCredentials collects the request's credentials and applies the rules of SPEC §2 that
// need no key: at most one credential (a Browser API Token may come with an Auth Token), and
// no empty or oversized one.
func findCredentials(h map[string]string, rawQuery string) (credentials, *reason.Error) {
	var c credentials
	if v, ok := h[headerDekiToken]; ok {
		c.deki = credential{v, true}
	}
	if v, ok := h[headerAuthorization]; ok {
		if scheme, rest, _ := strings.Cut(v, " "); strings.EqualFold(scheme, "bearer") {
			c.bearer = credential{strings.TrimSpace(rest), true}
		}
	}

	// The Auth Token may come from a cookie, a header or the query; the same token in several
	// places is one credential, different tokens are several.
	var authDiffers bool
	addAuth := func(v string) {
		if !c.auth.present {
			c.auth = credential{v, true}
		} else if v != c.auth.value {
			authDiffers = true
		}
	}
	if v, ok := h[headerAuthtoken]; ok {
		addAuth(v)
	}
	if ck, ok := h[headerCookie]; ok {
		if v, ok := cookieValue(ck, cookieAuthtoken); ok {
			addAuth(v)
		}
	}
	if rawQuery != "" {
		if v, ok := queryValue(rawQuery, queryAuthtoken); ok {
			addAuth(v)
		}
		if v, ok := queryValue(rawQuery, queryAPIKey); ok {
			c.apikey = credential{v, true}
		}
		if v, ok := queryValue(rawQuery, queryImpersonate); ok {
			c.impersonate = credential{v, true}
		}
	}

	n := 0
	for _, p := range []bool{c.deki.present, c.bearer.present, c.auth.present, c.apikey.present} {
		if p {
			n++
		}
	}
	browserWithAuth := n == 2 && c.deki.present && c.auth.present && dekiKind(c.deki.value) == token.KindBrowser
	if authDiffers || (n > 1 && !browserWithAuth) {
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

// cookieValue returns the value of the first cookie called name in a Cookie header.
func cookieValue(header, name string) (string, bool) {
	for header != "" {
		var part string
		part, header, _ = strings.Cut(header, ";")
		part = strings.TrimLeft(part, " \t")
		if k, v, ok := strings.Cut(part, "="); ok && k == name {
			v = strings.TrimRight(v, " \t")
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v, true
		}
	}
	return "", false
}

// queryValue returns the decoded value of the first parameter called name in a raw query.
func queryValue(q, name string) (string, bool) {
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
				return "\x00invalid", true // present but not decodable: malformed downstream
			}
			v = dv
		}
		return v, true
	}
	return "", false
}

// splitPath splits a request path into path and raw query.
func splitPath(p string) (path, query string) {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i], p[i+1:]
	}
	return p, ""
}

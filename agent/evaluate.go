package agent

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/plugins"
	"github.com/tokenagent/tokenagent/vault/spans"
)

// The site's policy (SPEC §5): what it sees of a request, and running it last.

func (a *Agent) policyDeadline(s *Site) time.Duration {
	if s.PolicyDeadline > 0 {
		return time.Duration(s.PolicyDeadline)
	}
	return a.cfg.Policies.Deadline.D() // 0: the engine's default (5 ms)
}

// policyKeys names the modules this agent uses.
func (a *Agent) policyKeys() map[plugins.ModuleKey]bool {
	keep := map[plugins.ModuleKey]bool{}
	for _, e := range a.policies {
		keep[e.Key()] = true
	}
	return keep
}

// policyResult is what an allowing policy adds to the answer.
type policyResult struct {
	upstream, response []token.Header
}

// evaluatePolicy runs the site's policy last: an allow with headers to add, or a denial
// (policy_denied with the module's status, or policy_error on any failure: fail closed). The
// module sees the request without its credentials (policyHeaders, cleanQuery).
func (a *Agent) evaluatePolicy(ctx context.Context, c *call, id *token.Identity) (policyResult, *reason.Error) {
	s, req, tg := c.site, c.req, &c.tg
	e := a.policies[s.ID]
	var m *plugins.Module
	if e != nil {
		m = e.Module()
	}
	if m == nil {
		return policyResult{}, &reason.Error{Reason: reason.PolicyError,
			Detail: "the site's policy module is not loaded", Cause: fmt.Errorf("policy %s not loaded", s.Policy)}
	}
	in := plugins.Input{Site: s.ID, Kind: string(id.Kind), User: id.User, ClientID: id.ClientID,
		Scopes: id.Scopes, Method: tg.method, Scheme: req.Scheme, Path: tg.path, Query: cleanQuery(tg.query),
		Host: c.host, Origin: req.Headers["origin"], Headers: policyHeaders(req.Headers),
		Time: a.rt.now()}
	start := time.Now()
	out, err := m.Evaluate(ctx, &in)
	if sp := spans.Recording(ctx); sp != nil {
		sp.SetAttributes(spans.PolicyTime.Int64(int64(time.Since(start))))
	}
	if err != nil {
		return policyResult{}, &reason.Error{Reason: reason.PolicyError, Cause: err}
	}
	if !out.Allow {
		d := &reason.Error{Reason: reason.PolicyDenied, Status: out.Status, Detail: out.Reason,
			Headers: out.ResponseHeaders}
		if d.Status == 0 {
			d.Status = 403
		}
		return policyResult{}, d
	}
	return policyResult{upstream: sortedHeaders(out.Headers), response: sortedHeaders(out.ResponseHeaders)}, nil
}

func sortedHeaders(m map[string]string) []token.Header {
	if len(m) == 0 {
		return nil
	}
	out := make([]token.Header, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, token.Header{Name: strings.ToLower(k), Value: m[k]})
	}
	return out
}

// policyProblems lists policy modules that have not loaded: the agent is not ready.
func (a *Agent) policyProblems() []string {
	var out []string
	for site, e := range a.policies {
		if e.Module() == nil {
			msg := "policy of site " + site + " (" + e.Key().Path + ") is not loaded"
			if err := e.Err(); err != nil {
				msg += ": " + err.Error()
			}
			out = append(out, msg)
		}
	}
	sort.Strings(out)
	return out
}

// policyWarnings lists policy reloads that failed while the old module keeps serving.
func (a *Agent) policyWarnings() []string {
	var out []string
	for site, e := range a.policies {
		if m := e.Module(); m != nil {
			if st := m.Status(); st.ReloadError != "" {
				out = append(out, "policy of site "+site+": reload failed, the previous module keeps serving: "+st.ReloadError)
			}
		}
	}
	sort.Strings(out)
	return out
}

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

package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strings"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
)

// Upstream header names (SPEC §4).
const (
	HeaderSite     = "x-auth-site"
	HeaderKind     = "x-auth-kind"
	HeaderUser     = "x-auth-user"
	HeaderClientID = "x-auth-client-id"
	HeaderScopes   = "x-auth-scopes"
	HeaderElevated = "x-auth-elevated"
	HeaderReason   = "x-auth-reason"
	authPrefix     = "x-auth-"
)

// removedQuery are the query parameters never forwarded upstream (they carry secrets).
var removedQuery = []string{queryAPIKey, queryAuthtoken}

// allow builds the answer for an allowed request: the identity's x-auth-* headers and extra
// (a policy's) upstream, the client's own x-auth-* headers removed, and response added to the
// upstream's response after the CORS headers of a browser token.
func (a *Agent) allow(c *call, id token.Identity, extra, response []token.Header) *Decision {
	d := &Decision{Allowed: true, Site: c.site.ID, Identity: id, Status: http.StatusOK,
		RemoveQuery: removedQuery, ResponseHeaders: append(c.cors[:len(c.cors):len(c.cors)], response...)}
	up := make([]token.Header, 0, 6+len(extra))
	up = append(up, token.Header{Name: HeaderSite, Value: c.site.ID}, token.Header{Name: HeaderKind, Value: string(id.Kind)})
	if id.User != "" {
		up = append(up, token.Header{Name: HeaderUser, Value: id.User})
	}
	if id.ClientID != "" {
		up = append(up, token.Header{Name: HeaderClientID, Value: id.ClientID})
	}
	if len(id.Scopes) > 0 {
		up = append(up, token.Header{Name: HeaderScopes, Value: strings.Join(id.Scopes, " ")})
	}
	if id.Elevated {
		up = append(up, token.Header{Name: HeaderElevated, Value: "true"})
	}
	up = append(up, extra...)
	d.UpstreamHeaders = up
	d.RemoveHeaders = spoofedAuthHeaders(c.req.Headers, up)
	return d
}

// spoofedAuthHeaders lists the client-sent headers in the x-auth-* namespace, in any spelling
// (isAuthHeader: `x_auth_user`, `X-Auth_User` …), that the agent does not set under that exact
// name, so no upstream ever sees one it did not write (SPEC §2a, §4). They are listed under the
// exact name the client used.
func spoofedAuthHeaders(h map[string]string, set []token.Header) []string {
	var out []string
	for name := range h {
		if !isAuthHeader(name) {
			continue
		}
		mine := false
		for _, s := range set {
			if s.Name == name {
				mine = true
				break
			}
		}
		if !mine {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// errorBody is the JSON body of a denial.
type errorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// deny builds the answer for a denied request. s may be nil (no site matched).
func (a *Agent) deny(s *Site, e *reason.Error) *Decision {
	body, _ := json.Marshal(errorBody{Error: string(e.Reason), Description: e.Description()})
	d := &Decision{Status: e.HTTPStatus(), Reason: e.Reason, Body: body, Cause: e.Cause,
		Identity: token.Identity{Kind: token.KindAnonymous}}
	if s != nil {
		d.Site = s.ID
	}
	d.Headers = make([]token.Header, 0, 2+len(e.Headers))
	d.Headers = append(d.Headers, token.Header{Name: "content-type", Value: "application/json"}, token.Header{Name: HeaderReason, Value: string(e.Reason)})
	for _, k := range sortedKeys(e.Headers) {
		d.Headers = append(d.Headers, token.Header{Name: strings.ToLower(k), Value: e.Headers[k]})
	}
	return d
}

// refuse builds the denial of a request at its site, with the CORS headers of a browser token
// that passed.
func (a *Agent) refuse(c *call, e *reason.Error) *Decision {
	d := a.deny(c.site, e)
	d.Headers = append(d.Headers, c.cors...)
	return d
}

// shadow turns the denial d of a site in shadow mode into what the site lets through (SPEC
// §8): the request goes upstream without identity (every client-sent x-auth-* header removed,
// only x-auth-site and x-auth-kind: anonymous set), the CORS headers of a browser token that
// passed kept, and the would-be reason in the decision (dynamic metadata shadow_reason, the
// decision log, the metrics).
func (a *Agent) shadow(c *call, d *Decision) *Decision {
	allowed := a.allow(c, token.Identity{Kind: token.KindAnonymous}, nil, nil)
	allowed.Shadow, allowed.Cause = d.Reason, d.Cause
	return allowed
}

// answer builds the agent's own answer (status 200 or 204) to a request it serves itself.
func answer(s *Site, status int, headers []token.Header, body []byte) *Decision {
	return &Decision{Site: s.ID, Status: status, Answered: true, Headers: headers, Body: body,
		Identity: token.Identity{Kind: token.KindAnonymous}, own: true}
}

// preflightAnswer answers a CORS preflight request itself: 204 with the CORS headers when the
// site has a browser key and the origin is one of the site's hostnames or a trusted origin of
// any of its browser keys, 403 origin_not_allowed otherwise.
func (a *Agent) preflightAnswer(ctx context.Context, c *call) *Decision {
	h := c.req.Headers
	cors, err := a.browser.Preflight(ctx, &c.site.SiteSettings, h[headerOrigin], h[headerRequestMethod], h[headerRequestHeaders])
	if err != nil {
		d := a.deny(c.site, reason.From(err))
		d.own = true
		return d
	}
	return answer(c.site, http.StatusNoContent, cors, nil)
}

// exchangeAnswer answers `POST /@app/auth/token/exchange` itself (package exchange).
func (a *Agent) exchangeAnswer(ctx context.Context, c *call) *Decision {
	ans, rerr := a.exchange.Exchange(ctx, &c.site.SiteSettings, c.req.Body, c.req.BodyTruncated)
	if rerr != nil {
		d := a.deny(c.site, rerr)
		d.own = true
		return d
	}
	d := answer(c.site, ans.Status, ans.Headers, ans.Body)
	d.Identity = ans.Identity
	return d
}

func sortedKeys(m map[string]string) []string {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

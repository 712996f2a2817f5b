package agent

import (
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

// allow builds the answer for an allowed request.
func (a *Agent) allow(s *Site, req *Request, id token.Identity, respHeaders, extra []Header) *Decision {
	d := &Decision{Allowed: true, Site: s.ID, Identity: id, Status: http.StatusOK,
		RemoveQuery: removedQuery, ResponseHeaders: respHeaders}
	up := make([]Header, 0, 6+len(extra))
	up = append(up, Header{HeaderSite, s.ID}, Header{HeaderKind, string(id.Kind)})
	if id.User != "" {
		up = append(up, Header{HeaderUser, id.User})
	}
	if id.ClientID != "" {
		up = append(up, Header{HeaderClientID, id.ClientID})
	}
	if len(id.Scopes) > 0 {
		up = append(up, Header{HeaderScopes, strings.Join(id.Scopes, " ")})
	}
	if id.Elevated {
		up = append(up, Header{HeaderElevated, "true"})
	}
	up = append(up, extra...)
	d.UpstreamHeaders = up
	d.RemoveHeaders = spoofedAuthHeaders(req.Headers, up)
	return d
}

// spoofedAuthHeaders lists the client-sent headers in the x-auth-* namespace, in any spelling
// (isAuthHeader: `x_auth_user`, `X-Auth_User` …), that the agent does not set under that exact
// name, so no upstream ever sees one it did not write (SPEC §2a, §4). They are listed under the
// exact name the client used.
func spoofedAuthHeaders(h map[string]string, set []Header) []string {
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
	d.Headers = make([]Header, 0, 2+len(e.Headers))
	d.Headers = append(d.Headers, Header{"content-type", "application/json"}, Header{HeaderReason, string(e.Reason)})
	for _, k := range sortedKeys(e.Headers) {
		d.Headers = append(d.Headers, Header{strings.ToLower(k), e.Headers[k]})
	}
	return d
}

// shadow turns the denial d of a site in shadow mode into what the site lets through (SPEC
// §8): the request goes upstream without identity (every client-sent x-auth-* header removed,
// only x-auth-site and x-auth-kind: anonymous set), the CORS headers of the denial kept, and
// the would-be reason in the decision (dynamic metadata shadow_reason, the decision log, the
// metrics).
func (a *Agent) shadow(s *Site, req *Request, d *Decision) *Decision {
	var cors []Header
	for _, h := range d.Headers {
		if strings.HasPrefix(h.Name, "access-control-") || h.Name == "vary" {
			cors = append(cors, h)
		}
	}
	allowed := a.allow(s, req, token.Identity{Kind: token.KindAnonymous}, cors, nil)
	allowed.Shadow, allowed.Cause = d.Reason, d.Cause
	return allowed
}

// answer builds the agent's own answer (status 200 or 204) to a request it serves itself.
func answer(s *Site, status int, headers []Header, body []byte) *Decision {
	return &Decision{Site: s.ID, Status: status, Answered: true, Headers: headers, Body: body,
		Identity: token.Identity{Kind: token.KindAnonymous}, own: true}
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

package agent

import (
	"context"
	"net/http"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
)

// Request headers of the browser flow (lower case, as Request.Headers holds them).
const (
	headerOrigin         = "origin"
	headerRequestMethod  = "access-control-request-method"
	headerRequestHeaders = "access-control-request-headers"
)

// browserState is the Browser API Token verifier's state (SPEC §3.3): the verifier keeps the
// compiled origins of each browser key and each site's preflight origin index.
type browserState struct {
	v *token.BrowserVerifier
}

func (a *Agent) initBrowser() error {
	a.browser.v = &token.BrowserVerifier{Keys: a.keys, Logger: a.log}
	return nil
}

// verifyBrowser verifies a Browser API Token key against the request's Origin and returns the
// CORS headers to add to the response of an allowed cross-origin request. The identity names
// no user; the pipeline sets the user of an Auth Token that comes along. An Origin header that
// is present but empty is refused like any malformed origin.
func (a *Agent) verifyBrowser(ctx context.Context, s *Site, req *Request, key string) (token.Identity, []Header, error) {
	origin, hasOrigin := req.Headers[headerOrigin]
	if hasOrigin && origin == "" {
		return token.Identity{}, nil, reason.Newf(reason.OriginNotAllowed, "the Origin header is empty")
	}
	id, err := a.browser.v.Verify(ctx, &s.Site, key, origin)
	if err != nil {
		return token.Identity{}, nil, err
	}
	return id, toHeaders(token.CORSHeaders(origin, req.Host)), nil
}

// preflight answers a CORS preflight request itself: 204 with the CORS headers when the
// origin is one of the site's hostnames or a trusted origin of any of its browser keys, 403
// origin_not_allowed otherwise.
func (a *Agent) preflight(ctx context.Context, s *Site, req *Request) *Decision {
	h, err := a.browser.v.Preflight(ctx, &s.Site, req.Headers[headerOrigin],
		req.Headers[headerRequestMethod], req.Headers[headerRequestHeaders])
	if err != nil {
		return a.deny(s, reason.From(err))
	}
	return answer(s, http.StatusNoContent, toHeaders(h), nil)
}

// toHeaders converts the verifier's headers to the Decision's.
func toHeaders(h []token.HTTPHeader) []Header {
	if len(h) == 0 {
		return nil
	}
	out := make([]Header, len(h))
	for i, x := range h {
		out[i] = Header{Name: x.Name, Value: x.Value}
	}
	return out
}

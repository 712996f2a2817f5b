package agent

import (
	"context"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
)

// browserState is the Browser API Token verifier's state (SPEC §3.3).
type browserState struct{}

func (a *Agent) initBrowser() error { return nil }

// verifyBrowser verifies a Browser API Token key against the request's Origin and returns the
// CORS headers to add to the response of an allowed cross-origin request.
func (a *Agent) verifyBrowser(_ context.Context, _ *Site, _ *Request, _ string) (token.Identity, []Header, error) {
	return token.Identity{}, nil, reason.Newf(reason.NotImplemented, "Browser API Tokens are not supported yet")
}

// preflight answers a CORS preflight request itself.
func (a *Agent) preflight(_ context.Context, s *Site, _ *Request) *Decision {
	return a.deny(s, reason.New(reason.OriginNotAllowed))
}

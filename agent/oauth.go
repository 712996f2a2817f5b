package agent

import (
	"context"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
)

// oauthState is the OAuth verifier's state (SPEC §3.4).
//
//lint:ignore U1000 filled by the OAuth verifier
type oauthState struct{}

func (a *Agent) initOAuth() error { return nil }

// verifyOAuth verifies an `Authorization: Bearer` JWT.
func (a *Agent) verifyOAuth(_ context.Context, _ *Site, _ string) (token.Identity, error) {
	return token.Identity{}, reason.Newf(reason.NotImplemented, "OAuth bearer tokens are not supported yet")
}

// oauthWarnings lists issuers whose keys cannot be fetched.
func (a *Agent) oauthWarnings() []string { return nil }

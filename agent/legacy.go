package agent

import (
	"context"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
)

// legacyState is the legacy verifiers' state (SPEC §3.6, §3.7).
type legacyState struct{}

func (a *Agent) initLegacy() error { return nil }

// verifyImpersonation verifies a legacy Impersonation Auth Token (`imp_…`).
func (a *Agent) verifyImpersonation(_ context.Context, s *Site, _ string) (token.Identity, error) {
	if !s.LegacyImpersonation {
		return token.Identity{}, reason.New(reason.LegacyTokenDisabled)
	}
	return token.Identity{}, reason.Newf(reason.NotImplemented, "Impersonation Auth Tokens are not supported yet")
}

// verifyAPIKey verifies the legacy Site API Key, acting as impersonate when hasImpersonate.
func (a *Agent) verifyAPIKey(_ context.Context, s *Site, _, _ string, _ bool) (token.Identity, error) {
	if !s.LegacyAPIKey {
		return token.Identity{}, reason.New(reason.LegacyTokenDisabled)
	}
	return token.Identity{}, reason.Newf(reason.NotImplemented, "the Site API Key is not supported yet")
}

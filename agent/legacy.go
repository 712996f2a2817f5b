package agent

import (
	"context"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
)

// legacyState is the legacy verifiers' state (SPEC §3.6, §3.7). Both share one LegacyAudit:
// every accepted legacy credential is logged as a warning and counted in
// tokenagent_legacy_credentials_total{site,kind}.
type legacyState struct {
	imp    *token.ImpersonationVerifier
	apikey *token.APIKeyVerifier
}

func (a *Agent) initLegacy() error {
	audit := token.NewLegacyAudit(a.reg, a.log)
	a.legacy.imp = &token.ImpersonationVerifier{Keys: a.keys, Audit: audit, Now: a.now}
	a.legacy.apikey = &token.APIKeyVerifier{Keys: a.keys, Audit: audit}
	return nil
}

// verifyImpersonation verifies a legacy Impersonation Auth Token (`imp_…`).
func (a *Agent) verifyImpersonation(ctx context.Context, s *Site, tok string) (token.Identity, error) {
	return a.legacy.imp.Verify(ctx, &s.Site, tok)
}

// verifyAPIKey verifies the legacy Site API Key, acting as impersonate when hasImpersonate. A
// present but empty `impersonateuserid=` is not a decimal id: malformed_token.
func (a *Agent) verifyAPIKey(ctx context.Context, s *Site, key, impersonate string, hasImpersonate bool) (token.Identity, error) {
	if !s.LegacyAPIKey {
		return token.Identity{}, reason.New(reason.LegacyTokenDisabled)
	}
	if hasImpersonate && impersonate == "" {
		return token.Identity{}, reason.Newf(reason.MalformedToken, "impersonateuserid is empty")
	}
	return a.legacy.apikey.Verify(ctx, &s.Site, key, impersonate)
}

package agent

import (
	"context"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
)

func (a *Agent) initPolicy() error { return nil }

// evaluatePolicy runs the site's policy last; it returns headers to add upstream, or a denial.
func (a *Agent) evaluatePolicy(_ context.Context, _ *Site, _ *Request, _, _ string, _ *token.Identity) ([]Header, *reason.Error) {
	return nil, reason.Newf(reason.PolicyError, "policy modules are not supported yet")
}

// policyProblems lists policy modules that never loaded.
func (a *Agent) policyProblems() []string { return nil }

// policyWarnings lists policy reloads that failed while the old module keeps serving.
func (a *Agent) policyWarnings() []string { return nil }

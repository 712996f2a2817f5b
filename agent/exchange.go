package agent

import (
	"context"

	"github.com/tokenagent/tokenagent/agent/reason"
)

func (a *Agent) initExchange() error { return nil }

// doExchange answers `POST /@app/auth/token/exchange` itself.
func (a *Agent) doExchange(_ context.Context, s *Site, _ *Request) *Decision {
	return a.deny(s, reason.Newf(reason.NotImplemented, "the identity token exchange is not supported yet"))
}

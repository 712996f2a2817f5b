package agent

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/tokenagent/tokenagent/agent/exchange"
	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
)

// The walk of one check, each step once, down and back: the site from the host (site.go), the
// request line (request.go), the credentials (credentials.go), their verification (verify.go),
// the revocation list (revocation.go), the route rules (routes.go), the policy (evaluate.go), the answer (answer.go). What a step
// reads or finds goes into the call, so no later step reads it again.

// call is one check on its way through the pipeline.
type call struct {
	req   *Request
	start time.Time      // when the check began
	host  string         // the canonical host of req.Host (lower case, no port, no trailing dot)
	site  *Site          // the site of host
	tg    target         // the method and target, read once (SPEC §2a)
	creds credentials    // the credentials found (SPEC §2)
	kind  token.Kind     // the credential kind, for metrics, logs and spans
	cors  []token.Header // set once a Browser API Token and its Origin passed: on every answer
}

// Check decides req. It never returns nil and never panics on client input.
func (a *Agent) Check(ctx context.Context, req *Request) *Decision {
	start := time.Now()
	var span trace.Span
	if a.rt.tracer != nil && a.rt.traced(req.Headers) {
		ctx, span = a.rt.startCheck(ctx, req)
	}
	c := call{req: req, start: start, kind: token.KindAnonymous}
	d := a.decide(ctx, &c)
	if d.Reason != "" && !d.own && c.site != nil && c.site.Shadow {
		d = a.shadow(&c, d)
	}
	d.ID = NewDecisionID()
	took := time.Since(start)
	a.rt.metrics.observe(d, c.kind, took)
	a.logDecision(&c, d, took)
	if span != nil {
		endCheck(span, d, c.kind)
	}
	return d
}

func (a *Agent) decide(ctx context.Context, c *call) *Decision {
	if c.host, c.site = a.sites.find(c.req.Host); c.site == nil {
		return a.deny(nil, reason.New(reason.UnknownSite))
	}
	// The request itself (SPEC §2a), before any credential: every later step reads the
	// upper-case method and the normalised path.
	var rerr *reason.Error
	if c.tg, rerr = readTarget(c.req.Method, c.req.Path); rerr != nil {
		return a.deny(c.site, rerr)
	}
	if c.tg.method == "POST" && c.tg.path == exchange.Path {
		c.kind = token.KindAuthToken
		return a.exchangeAnswer(ctx, c)
	}
	c.creds, rerr = findCredentials(c.req.Headers, c.tg.query)
	c.kind = c.creds.kind()
	if rerr != nil {
		return a.deny(c.site, rerr)
	}
	if c.tg.method == "OPTIONS" && c.kind == token.KindAnonymous &&
		c.req.Headers[headerOrigin] != "" && c.req.Headers[headerRequestMethod] != "" {
		c.kind = token.KindBrowser
		return a.preflightAnswer(ctx, c)
	}
	id, err := a.verify(ctx, c)
	if err != nil {
		return a.refuse(c, reason.From(err))
	}
	if e := a.checkRevoked(c, &id); e != nil {
		return a.refuse(c, e)
	}
	if e := checkRoutes(c.site.Routes, &c.tg, &id); e != nil {
		return a.refuse(c, e)
	}
	if c.site.Policy == "" {
		return a.allow(c, id, nil, nil)
	}
	pr, e := a.evaluatePolicy(ctx, c, &id)
	if e != nil {
		return a.refuse(c, e)
	}
	return a.allow(c, id, pr.upstream, pr.response)
}

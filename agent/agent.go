// Package agent is tokenagent's decision pipeline: for one Request it finds the site by host,
// reads the request line, finds the credentials, verifies them with the verifier of their
// kind (package token, keys from package vault), applies the site's route rules and policy,
// and returns a Decision. It knows nothing of Envoy: package extauthz turns wire messages into
// Requests and Decisions back into wire answers.
//
//	rt, err := agent.NewRuntime(agent.RuntimeOptions{Keys: store})   // once per process
//	a, err := agent.New(rt, cfg)                                     // once per config
//	d := a.Check(ctx, &agent.Request{Method: "GET", Host: "docs.example.com", Path: "/", Headers: h})
//	if d.Allowed { ... }
//
// # Notes
//
//   - Two lifetimes: a Runtime holds what outlives a config (caches, key sets, replay memory,
//     policy modules, collectors) and is closed at exit; an Agent is one config compiled
//     against it, immutable, owning nothing that needs closing. A config reload builds a new
//     Agent over the same Runtime.
//   - Safe for concurrent use. Every internal failure fails closed: the request is denied,
//     never allowed.
package agent

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/exchange"
	"github.com/tokenagent/tokenagent/agent/policy"
	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
	"go.opentelemetry.io/otel/trace"
)

// Agent decides Requests for one config. Build it with New.
type Agent struct {
	rt    *Runtime
	cfg   *config.Config
	sites *siteIndex
	list  []*Site
	log   *slog.Logger

	// The verifiers of this config, over the Runtime's keys and caches.
	authTokens    token.AuthTokenVerifier
	servers       token.ServerTokenVerifier
	browser       *token.BrowserVerifier
	oauth         *token.OAuthVerifier
	impersonation *token.ImpersonationVerifier
	apikey        *token.APIKeyVerifier
	exchange      *exchange.Endpoint
	idTokens      *token.IDTokenVerifier

	// policies holds the policy module of each site that has one, by site id.
	policies map[string]*policy.Entry

	// sampled counts allowed decisions for log.allow_sample (decisionlog.go).
	sampled atomic.Uint64
	// prefetch reads the sites' key records and fetches the issuers' key sets once, on the
	// first Warnings (verify.go).
	prefetchMu sync.Mutex
	prefetched bool
}

// New compiles cfg, a validated config, into an Agent over rt. It starts no goroutine; the
// policy modules cfg names are loaded (once per process: rt keeps them) before it returns.
func New(rt *Runtime, cfg *config.Config) (*Agent, error) {
	if rt == nil {
		return nil, fmt.Errorf("agent: a Runtime is required")
	}
	idx, list := buildSites(cfg.Sites)
	keys, now := rt.keys, rt.now
	a := &Agent{rt: rt, cfg: cfg, sites: idx, list: list, log: rt.log,
		authTokens:    token.AuthTokenVerifier{Keys: keys, Now: now},
		servers:       token.ServerTokenVerifier{Keys: keys, Replay: rt.replay, Now: now},
		browser:       &token.BrowserVerifier{Keys: keys, Logger: rt.log},
		oauth:         &token.OAuthVerifier{Keys: keys, JWKS: rt.jwks, Cache: rt.verified, MaxCacheAge: keys.Refresh(), Metrics: rt.oauthM, Logger: rt.log, Now: now},
		impersonation: &token.ImpersonationVerifier{Keys: keys, Audit: rt.legacy, Now: now},
		apikey:        &token.APIKeyVerifier{Keys: keys, Audit: rt.legacy},
		idTokens:      &token.IDTokenVerifier{Keys: keys, JWKS: rt.jwks, Now: now},
		policies:      map[string]*policy.Entry{},
	}
	a.exchange = &exchange.Endpoint{IDTokens: a.idTokens, Keys: keys, Users: rt.users, Metrics: rt.exchange,
		Logger: rt.log, Now: now}
	for _, s := range a.list {
		if s.Policy == "" {
			continue
		}
		key := policy.Key{Path: s.Policy, Deadline: a.policyDeadline(s), Entrypoint: s.PolicyEntrypoint}
		e := rt.policies.Entry(context.Background(), key, s.ID)
		if e == nil {
			return nil, fmt.Errorf("agent: the runtime is closed")
		}
		a.policies[s.ID] = e
	}
	return a, nil
}

// Sites returns the agent's compiled sites, in config order.
func (a *Agent) Sites() []*Site { return a.list }

// Config returns the config the agent was built from.
func (a *Agent) Config() *config.Config { return a.cfg }

// Check decides req. It never returns nil and never panics on client input.
func (a *Agent) Check(ctx context.Context, req *Request) *Decision {
	start := time.Now()
	var span trace.Span
	if a.rt.tracer != nil && a.rt.traced(req.Headers) {
		ctx, span = a.rt.startCheck(ctx, req)
	}
	d, kind := a.decide(ctx, req)
	if d.Reason != "" && !d.own {
		if s := a.sites.byID[d.Site]; s != nil && s.Shadow {
			d = a.shadow(s, req, d)
		}
	}
	d.ID = NewDecisionID()
	took := time.Since(start)
	a.rt.metrics.observe(d, kind, took)
	a.logDecision(req, d, kind, took)
	if span != nil {
		endCheck(span, d, kind)
	}
	return d
}

func (a *Agent) decide(ctx context.Context, req *Request) (*Decision, token.Kind) {
	site := a.sites.lookup(req.Host)
	if site == nil {
		return a.deny(nil, reason.New(reason.UnknownSite)), token.KindAnonymous
	}
	// The request itself (SPEC §2a), before any credential: every later step reads the
	// upper-case method and the normalised path.
	tg, terr := readTarget(req.Method, req.Path)
	if terr != nil {
		return a.deny(site, terr), token.KindAnonymous
	}
	if tg.method == "POST" && tg.path == exchange.Path {
		return a.doExchange(ctx, site, req), token.KindAuthToken
	}
	creds, derr := findCredentials(req.Headers, tg.query)
	kind := creds.kind()
	if derr != nil {
		return a.deny(site, derr), kind
	}
	if tg.method == "OPTIONS" && kind == token.KindAnonymous &&
		req.Headers[headerOrigin] != "" && req.Headers[headerRequestMethod] != "" {
		return a.preflight(ctx, site, req), token.KindBrowser
	}

	// corsHeaders are set once a Browser API Token and its Origin have passed: from then on
	// every answer, denials included, carries them, so the page's script can read a 401.
	id, corsHeaders, err := a.verify(ctx, site, req, &creds)
	if err != nil {
		return withHeaders(a.deny(site, reason.From(err)), corsHeaders), kind
	}
	if rule := matchRoute(site.Routes, tg.method, tg.path); rule != nil {
		if e := checkRule(rule, &id); e != nil {
			return withHeaders(a.deny(site, e), corsHeaders), kind
		}
	}
	if site.Policy == "" {
		return a.allow(site, req, id, corsHeaders, nil), kind
	}
	pr, e := a.evaluatePolicy(ctx, site, req, &tg, &id)
	if e != nil {
		return withHeaders(a.deny(site, e), corsHeaders), kind
	}
	return a.allow(site, req, id, append(corsHeaders, pr.response...), pr.upstream), kind
}

// withHeaders adds headers to a denial's answer.
func withHeaders(d *Decision, h []Header) *Decision {
	d.Headers = append(d.Headers, h...)
	return d
}

// checkRule applies a route rule's requirement and scopes to a verified identity.
func checkRule(r *Route, id *token.Identity) *reason.Error {
	switch r.Require {
	case config.RequireAuthenticated:
		if !id.Authenticated() {
			return reason.New(reason.AuthenticationRequired)
		}
	case config.RequireUser:
		switch {
		case id.HasUser():
		case id.Application || id.Kind == token.KindAPIKey:
			return reason.New(reason.UserTokenRequired)
		default:
			return reason.New(reason.AuthenticationRequired)
		}
	}
	if len(r.Scopes) > 0 && id.Kind == token.KindOAuth {
		for _, need := range r.Scopes {
			if !hasScope(id.Scopes, need) {
				return &reason.Error{Reason: reason.InsufficientScope,
					Detail:  "the token lacks a scope this route needs: " + strings.Join(r.Scopes, " "),
					Headers: map[string]string{"WWW-Authenticate": r.scopeChallenge}}
			}
		}
	}
	return nil
}

func hasScope(have []string, need string) bool {
	for _, s := range have {
		if s == need {
			return true
		}
	}
	return false
}

// Problems lists what stops the agent from deciding as configured (a policy module that never
// loaded); /readyz is not ready while there are any.
func (a *Agent) Problems() []string { return a.policyProblems() }

// Warnings lists problems that do not stop serving (an issuer whose keys cannot be fetched, a
// policy module reload that failed while the old one keeps serving). The first call after the
// key source is ready reads every site's site-wide key records and fetches every issuer's
// remote key set (see prefetch in verify.go), so a caller that also lists the key store's
// warnings must call Warnings first to see the invalid records those reads found.
func (a *Agent) Warnings() []string {
	a.prefetch()
	return append(a.oauth.Warnings(), a.policyWarnings()...)
}

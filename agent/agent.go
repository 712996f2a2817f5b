// Package agent is tokenagent's decision pipeline: for one Request it finds the site by host,
// finds the credentials, verifies them with the verifier of their kind (package token, keys
// from package vault), applies the site's route rules and policy, and returns a Decision. It
// knows nothing of Envoy: package extauthz turns wire messages into Requests and Decisions
// back into wire answers.
//
//	a, err := agent.New(cfg, agent.Options{Keys: store})
//	d := a.Check(ctx, &agent.Request{Method: "GET", Host: "docs.example.com", Path: "/", Headers: h})
//	if d.Allowed { ... }
//
// # Notes
//
//   - An Agent is immutable once built and safe for concurrent use; a config reload builds a
//     new Agent over the same key store.
//   - Every internal failure fails closed: the request is denied, never allowed.
package agent

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/users"
)

// ExchangePath is the path of the Identity Token Exchange (SPEC §3.5).
const ExchangePath = "/@app/auth/token/exchange"

// Options are what an Agent needs besides its Config.
type Options struct {
	// Keys is the key store (required).
	Keys *vault.Store
	// Logger receives decision and problem logs (default slog.Default()).
	Logger *slog.Logger
	// Metrics are the check metrics (default: unregistered ones).
	Metrics *Metrics
	// Registerer registers the collectors of the verifiers built by New (nil: none).
	Registerer prometheus.Registerer
	// Replay is the single-use Server API Token cache; shared across config reloads so a
	// reload does not forget used tokens (default: a new one).
	Replay *token.ReplayCache
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Policies is the registry of WebAssembly policy modules, shared across config reloads
	// (default: a new one, with its own engine, when any site has a policy).
	Policies *Policies
	// Users is the just-in-time user directory of the identity token exchange (nil: the
	// exchange is refused with keys_unavailable).
	Users users.Directory
}

// Agent decides Requests. Build it with New.
type Agent struct {
	cfg     *Config
	sites   *siteIndex
	list    []*Site
	keys    *vault.Store
	log     *slog.Logger
	reg     prometheus.Registerer
	metrics *Metrics
	now     func() time.Time

	authTokens token.AuthTokenVerifier
	servers    token.ServerTokenVerifier
	policies   *Policies

	// sampled counts allowed decisions for log.allow_sample (decisionlog.go).
	sampled atomic.Uint64

	// Per-kind state, each owned by its own file.
	//lint:ignore U1000 filled by the OAuth verifier (agent/oauth.go)
	oauth    oauthState
	browser  browserState
	legacy   legacyState
	exchange exchangeState
	policy   policyState
}

// New builds an Agent from a validated Config.
func New(cfg *Config, opts Options) (*Agent, error) {
	if opts.Keys == nil {
		return nil, fmt.Errorf("agent: Options.Keys is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Replay == nil {
		opts.Replay = token.NewReplayCache(opts.Now)
	}
	idx, list := buildSites(cfg.Sites)
	a := &Agent{
		cfg: cfg, sites: idx, list: list, keys: opts.Keys, log: opts.Logger,
		reg: opts.Registerer, metrics: opts.Metrics, now: opts.Now,
		authTokens: token.AuthTokenVerifier{Keys: opts.Keys, Now: opts.Now},
		servers:    token.ServerTokenVerifier{Keys: opts.Keys, Replay: opts.Replay, Now: opts.Now},
		policies:   opts.Policies,
		exchange:   exchangeState{users: opts.Users},
	}
	for _, init := range []struct {
		name string
		fn   func() error
	}{{"oauth", a.initOAuth}, {"browser", a.initBrowser}, {"legacy", a.initLegacy},
		{"exchange", a.initExchange}, {"policy", a.initPolicy}} {
		if err := init.fn(); err != nil {
			return nil, fmt.Errorf("agent: %s: %w", init.name, err)
		}
	}
	return a, nil
}

// Sites returns the agent's compiled sites, in config order.
func (a *Agent) Sites() []*Site { return a.list }

// Config returns the config the agent was built from.
func (a *Agent) Config() *Config { return a.cfg }

// Check decides req. It never returns nil and never panics on client input.
func (a *Agent) Check(ctx context.Context, req *Request) *Decision {
	start := time.Now()
	d, kind := a.decide(ctx, req)
	d.ID = NewDecisionID()
	took := time.Since(start)
	a.metrics.observe(d, kind, took)
	a.logDecision(req, d, kind, took)
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
	if tg.method == "POST" && tg.path == ExchangePath {
		return a.doExchange(ctx, site, req), token.KindAuthToken
	}
	creds, derr := findCredentials(req.Headers, tg.query)
	kind := creds.kind()
	if derr != nil {
		return a.deny(site, derr), kind
	}
	if tg.method == "OPTIONS" && kind == token.KindAnonymous &&
		req.Headers["origin"] != "" && req.Headers["access-control-request-method"] != "" {
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

// verify runs the verifier of the request's credential kind.
func (a *Agent) verify(ctx context.Context, s *Site, req *Request, c *credentials) (token.Identity, []Header, error) {
	switch {
	case c.deki.present:
		v := c.deki.value
		switch {
		case strings.HasPrefix(v, token.ServerTokenPrefix):
			id, err := a.servers.Verify(ctx, &s.Site, v)
			return id, nil, err
		case strings.IndexByte(v, '_') >= 0:
			if !s.LegacyUnprefixedServerToken {
				return token.Identity{}, nil, reason.Newf(reason.MalformedToken,
					"the X-Deki-Token is neither a browser key nor a tkn_ server token")
			}
			id, err := a.servers.VerifyUnprefixed(ctx, &s.Site, v)
			return id, nil, err
		}
		id, cors, err := a.verifyBrowser(ctx, s, req, v)
		if err != nil || !c.auth.present {
			return id, cors, err
		}
		// A Browser API Token with an Auth Token: the user is the Auth Token's.
		user, err := a.verifyAuth(ctx, s, c.auth.value)
		if err != nil {
			return token.Identity{}, cors, err
		}
		id.User = user.User
		if id.Expires.IsZero() || (!user.Expires.IsZero() && user.Expires.Before(id.Expires)) {
			id.Expires = user.Expires
		}
		return id, cors, nil
	case c.bearer.present:
		id, err := a.verifyOAuth(ctx, s, c.bearer.value)
		return id, nil, err
	case c.auth.present:
		id, err := a.verifyAuth(ctx, s, c.auth.value)
		return id, nil, err
	case c.apikey.present:
		id, err := a.verifyAPIKey(ctx, s, c.apikey.value, c.impersonate.value, c.impersonate.present)
		return id, nil, err
	}
	return token.Identity{Kind: token.KindAnonymous}, nil, nil
}

// verifyAuth verifies an Auth Token or, by its prefix, an Impersonation Auth Token.
func (a *Agent) verifyAuth(ctx context.Context, s *Site, v string) (token.Identity, error) {
	if strings.HasPrefix(v, impersonationPrefix) {
		return a.verifyImpersonation(ctx, s, v)
	}
	return a.authTokens.Verify(ctx, &s.Site, v)
}

// checkRule applies a route rule's requirement and scopes to a verified identity.
func checkRule(r *Route, id *token.Identity) *reason.Error {
	switch r.Require {
	case RequireAuthenticated:
		if !id.Authenticated() {
			return reason.New(reason.AuthenticationRequired)
		}
	case RequireUser:
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
// policy module reload that failed while the old one keeps serving).
func (a *Agent) Warnings() []string {
	return append(a.oauthWarnings(), a.policyWarnings()...)
}

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
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/exchange"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/plugins"
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

	// denyStale refuses every credential while the revocation list is stale
	// (revocation.on_stale: deny).
	denyStale bool

	// policies holds the policy module of each site that has one, by site id.
	policies map[string]*plugins.Entry

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
		policies:      map[string]*plugins.Entry{},
		denyStale:     cfg.Revocation.OnStale == config.OnStaleDeny,
	}
	a.exchange = &exchange.Endpoint{IDTokens: a.idTokens, Keys: keys, Users: rt.users, Metrics: rt.exchange,
		Logger: rt.log, Now: now}
	for _, s := range a.list {
		if s.Policy == "" {
			continue
		}
		key := plugins.ModuleKey{Path: s.Policy, Deadline: a.policyDeadline(s), Entrypoint: s.PolicyEntrypoint}
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

// prefetchTimeout bounds the first Warnings call's reads and fetches.
const prefetchTimeout = 2 * time.Second

// prefetch reads every site's site-wide key records (Auth Token keys, own and external OAuth
// issuers, identity providers, browser keys, and the legacy record where a legacy switch is on)
// and fetches their remote key sets, once, on the first Warnings (the first /readyz) after the
// key source is ready, waiting up to prefetchTimeout. So the first /readyz already lists an
// invalid record and a jwks_uri that cannot be fetched, before any token needs them, and the
// first tokens find their keys cached. It runs in the caller's goroutine, not at New, so no
// goroutine of the Agent reads the key store behind the caller's back, and only once the
// source is ready, so it never marks a source that is still logging in as down. Records read
// here are cached as any other and refreshed only while checks use them.
func (a *Agent) prefetch() {
	if !a.prefetchMu.TryLock() {
		return // another /readyz is doing it
	}
	defer a.prefetchMu.Unlock()
	if a.prefetched || a.rt.keys.Ready() != nil {
		return
	}
	a.prefetched = true
	ctx, cancel := context.WithTimeout(context.Background(), prefetchTimeout)
	defer cancel()
	keys := a.rt.keys
	ids := make([]string, len(a.list))
	for i, s := range a.list {
		ids[i] = s.ID
		// Errors are the store's to report (its warnings); only the reads matter here.
		_, _ = keys.AuthTokenKeys(ctx, s.ID, s.AuthTokenRotationGrace)
		_, _ = keys.BrowserKeys(ctx, s.ID)
		if s.LegacyAPIKey || s.LegacyImpersonation {
			_, _ = keys.Legacy(ctx, s.ID)
		}
	}
	a.oauth.Prefetch(ctx, ids...)
	a.idTokens.Prefetch(ctx, ids...)
}

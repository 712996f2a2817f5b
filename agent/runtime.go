package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenagent/tokenagent/agent/exchange"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/plugins"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/blocking"
	"github.com/tokenagent/tokenagent/vault/jwks"
	"github.com/tokenagent/tokenagent/vault/users"
)

// RuntimeOptions are what a Runtime is built from. The key store and the user directory are
// the caller's: it builds them (they depend on the key source) and closes them after the
// Runtime.
type RuntimeOptions struct {
	// Keys is the key store (required).
	Keys *vault.Store
	// Users is the just-in-time user directory of the identity token exchange (nil: the
	// exchange answers keys_unavailable).
	Users users.Directory
	// Registerer receives every collector of the pipeline, registered once (nil: none).
	Registerer prometheus.Registerer
	// Logger receives decision and problem logs (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// PolicyCacheDir keeps compiled WebAssembly modules across restarts (empty: in memory).
	PolicyCacheDir string
	// OAuthCacheBytes is the verified-token cache's capacity (default
	// token.DefaultOAuthCacheMaxCost).
	OAuthCacheBytes int64
	// TracerProvider receives the spans of traced checks (tokenagent.check, SPEC §8); nil: no
	// tracing. The runtime decides which checks are traced (a sampled W3C traceparent, or
	// TraceRatio of the others) before starting a span, so the provider's sampler should keep
	// what it is given (sdktrace.AlwaysSample). The caller owns the provider and shuts it down.
	TracerProvider trace.TracerProvider
	// TraceRatio is the share of checks without a valid traceparent that are traced (0 to 1).
	TraceRatio float64
	// Revocations is the fleet's revocation list (SPEC §9; nil: none). The caller builds it
	// (fleet.RevocationList), keeps it current and closes it.
	Revocations Revocations
	// Replay is the memory of single-use Server API Tokens (nil: node-local memory,
	// token.ReplayCache; fleet.ReplayStore shares it between agents). The caller closes it.
	Replay token.ReplayStore
}

// Runtime holds what outlives a config: the key sets of JWT issuers, the verified-token cache,
// the replay memory of single-use tokens, the policy modules, the user directory and every
// collector, each built once. An Agent is rebuilt from it at every config reload (New), cheap
// and immutable, so a reload loses no cache, counter or warm policy instance.
//
//	rt, err := agent.NewRuntime(agent.RuntimeOptions{Keys: store, Registerer: reg})
//	defer rt.Close(ctx)
//	a, err := agent.New(rt, cfg)          // and again for each new config
//	rt.KeepOnly(a)                        // after the swap: drop what only old configs used
//
// # Notes
//
//   - Safe for concurrent use. NewRuntime starts no goroutine of its own; Close stops every one
//     the Runtime or its parts started (cache workers, policy module watchers and retries).
//   - Agents built from a Runtime must not be used after Close.
type Runtime struct {
	keys  *vault.Store
	users users.Directory
	log   *slog.Logger
	now   func() time.Time

	jwks       *jwks.Cache
	verified   *token.VerifiedTokens
	oauthM     *token.OAuthMetrics
	replay     token.ReplayStore
	revoked    Revocations
	legacy     *token.LegacyAudit
	exchange   *exchange.Metrics
	metrics    *Metrics
	policies   *plugins.Registry
	tracer     trace.Tracer // nil: no tracing
	traceRatio float64

	closeOnce sync.Once
}

// NewRuntime builds the process-lifetime part of the pipeline and registers its collectors.
func NewRuntime(opts RuntimeOptions) (*Runtime, error) {
	if opts.Keys == nil {
		return nil, errors.New("agent: RuntimeOptions.Keys is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	rt := &Runtime{keys: opts.Keys, users: opts.Users, log: opts.Logger, now: opts.Now, replay: opts.Replay,
		revoked: opts.Revocations}
	if rt.replay == nil {
		rt.replay = token.NewReplayCache(opts.Now)
	}
	if opts.TracerProvider != nil {
		rt.tracer = opts.TracerProvider.Tracer("github.com/tokenagent/tokenagent/agent")
		rt.traceRatio = opts.TraceRatio
	}
	var err error
	fail := func(what string, err error) (*Runtime, error) {
		_ = rt.Close(context.Background())
		return nil, fmt.Errorf("agent: %s: %w", what, err)
	}
	if rt.metrics, err = NewMetrics(opts.Registerer); err != nil {
		return fail("check metrics", err)
	}
	jm, err := jwks.NewMetrics(opts.Registerer)
	if err != nil {
		return fail("key set metrics", err)
	}
	rt.jwks = jwks.NewCache(jwks.Options{Now: opts.Now, Logger: opts.Logger, Metrics: jm})
	if rt.oauthM, err = token.NewOAuthMetrics(opts.Registerer); err != nil {
		return fail("OAuth metrics", err)
	}
	if rt.verified, err = token.NewVerifiedTokens(opts.OAuthCacheBytes, rt.oauthM); err != nil {
		return fail("verified-token cache", err)
	}
	if rt.legacy, err = token.NewLegacyAudit(opts.Registerer, opts.Logger); err != nil {
		return fail("legacy audit", err)
	}
	if rt.exchange, err = exchange.NewMetrics(opts.Registerer); err != nil {
		return fail("exchange metrics", err)
	}
	rt.policies = plugins.NewRegistry(plugins.RegistryOptions{Engine: plugins.EngineOptions{
		CacheDir: opts.PolicyCacheDir, Registerer: opts.Registerer, Logger: opts.Logger,
		BeforeWait: blocking.Ahead}}) // a check about to wait for a module hands its connection on
	return rt, nil
}

// Close stops what the Runtime started and releases its caches. It is safe to call more than
// once.
func (rt *Runtime) Close(ctx context.Context) error {
	var err error
	rt.closeOnce.Do(func() {
		if rt.policies != nil {
			err = rt.policies.Close(ctx)
		}
		rt.verified.Close()
	})
	return err
}

// KeepOnly tells the runtime that a is the agent deciding now (after a config reload): policy
// modules that only earlier configs used are closed after plugins.DefaultRetireGrace, so checks that
// started under the old config finish on them.
func (rt *Runtime) KeepOnly(a *Agent) { rt.policies.KeepOnly(a.policyKeys()) }

// Keys returns the key store.
func (rt *Runtime) Keys() *vault.Store { return rt.keys }

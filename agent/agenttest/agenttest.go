// Package agenttest builds agents for tests and benchmarks of the packages around the
// pipeline (transports, benchmarks, examples): a Runtime and an Agent over it, both released
// when the test ends.
//
//	a := agenttest.New(t, cfg, agent.RuntimeOptions{Keys: store})
//	d := a.Check(ctx, req)
package agenttest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/plugins/plugintest"
)

// Runtime builds a Runtime of opts, closed when the test ends. Policy modules compile into
// plugintest's shared cache (unless opts names another), so only the first test compiles each.
func Runtime(tb testing.TB, opts agent.RuntimeOptions) *agent.Runtime {
	tb.Helper()
	if opts.PolicyCacheDir == "" {
		opts.PolicyCacheDir = filepath.Join(plugintest.CacheDir(), "wazero")
	}
	rt, err := agent.NewRuntime(opts)
	if err != nil {
		tb.Fatalf("agenttest: %v", err)
	}
	tb.Cleanup(func() { _ = rt.Close(context.Background()) })
	return rt
}

// New builds an Agent for cfg over a new Runtime of opts (see Runtime).
func New(tb testing.TB, cfg *config.Config, opts agent.RuntimeOptions) *agent.Agent {
	tb.Helper()
	a, err := agent.New(Runtime(tb, opts), cfg)
	if err != nil {
		tb.Fatalf("agenttest: %v", err)
	}
	return a
}

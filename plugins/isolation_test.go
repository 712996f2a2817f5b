package plugins_test

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/plugins"
	"github.com/tokenagent/tokenagent/plugins/plugintest"
)

// TestFailingModuleDoesNotStallOthers is the regression test of the adversarial review's
// finding (SPEC §5: one site's policy cannot slow another's). Four clients call a module that
// fails on every call while two call a healthy one, on an engine with one WebAssembly slot (a
// 2-core machine) and the agent's defaults (5 ms deadline, 1 s of waiting). Before the fix,
// the failing module's next call held the only slot while waiting for the replacement
// instance, which waited for the slot: the healthy module's calls waited about 1 s and failed
// ("busy"). Now no healthy call fails, and the failing module is mostly refused by its
// backoff rather than run.
func TestFailingModuleDoesNotStallOthers(t *testing.T) {
	for _, tc := range []struct {
		name, module string
		kind         plugins.Failure
	}{
		{"loops until its deadline", "loop", plugins.FailureTimeout},
		{"returns length 0", "empty", plugins.FailureBadOutput},
		{"traps", "trap", plugins.FailureTrap},
		{"exits", "exit", plugins.FailureExit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			e := plugintest.NewEngine(t, plugins.EngineOptions{MaxConcurrency: 1, Registerer: reg})
			opts := plugins.ModuleOptions{Deadline: 5 * time.Millisecond, MaxWait: time.Second, InitTimeout: 2 * time.Second}
			hopts, fopts := opts, opts
			hopts.Name, fopts.Name = "healthy", "failing"
			// The healthy module's deadline is long: a busy machine that deschedules this test
			// for 5 ms must not look like interference. Its wait for a slot or an instance keeps
			// the agent's default (1 s), which the old behaviour ran out of.
			hopts.Deadline = time.Second
			if tc.kind != plugins.FailureTimeout {
				// Likewise for a module that fails at once: only the looping one needs a short
				// deadline, so that a descheduled call is not taken for a loop.
				fopts.Deadline = time.Second
			}
			healthy := plugintest.Load(t, e, plugintest.BuildWAT(t, filepath.Join("testdata", "wat", "allow_v1.wat")), hopts)
			failing := plugintest.Load(t, e, plugintest.BuildWAT(t, filepath.Join("testdata", "hostile", tc.module+".wat")), fopts)

			ctx := context.Background()
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var ran, refused, other atomic.Int64
			var otherErr atomic.Value
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						_, err := failing.Evaluate(ctx, &plugins.Input{Method: "GET", Path: "/"})
						switch failureOf(err) {
						case tc.kind:
							ran.Add(1)
						case plugins.FailureBackoff:
							refused.Add(1)
						default:
							other.Add(1)
							otherErr.CompareAndSwap(nil, err)
						}
						time.Sleep(100 * time.Microsecond) // the client's turnaround, not a wait for an event
					}
				}()
			}
			var healthyCalls atomic.Int64
			var healthyErr atomic.Value
			for range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						if out, err := healthy.Evaluate(ctx, &plugins.Input{Method: "GET", Path: "/"}); err != nil || !out.Allow {
							healthyErr.CompareAndSwap(nil, err)
						}
						healthyCalls.Add(1)
					}
				}()
			}
			// Run until the failing module has been refused many times, i.e. through several
			// backoffs: long enough for the old behaviour to fail the healthy calls.
			waitFor(t, "the failing module's backoffs", func() bool { return refused.Load() >= 2000 && healthyCalls.Load() >= 2000 })
			close(stop)
			wg.Wait()

			if err := healthyErr.Load(); err != nil {
				t.Fatalf("a healthy module's call failed beside a module that %s: %v", tc.name, err)
			}
			if err := otherErr.Load(); err != nil {
				t.Errorf("the failing module's calls failed with %d errors of another kind than %s or backoff; first: %v", other.Load(), tc.kind, err)
			}
			// The failing module runs only to probe: far fewer runs than refusals.
			if r, f := ran.Load(), refused.Load(); r*10 > f {
				t.Errorf("the failing module ran %d times and was refused %d times; want it mostly refused", r, f)
			}
			if n := metricValue(t, reg, "tokenagent_policy_backoffs_total", map[string]string{"policy": "failing"}); n < 1 {
				t.Errorf("tokenagent_policy_backoffs_total = %v, want at least 1", n)
			}
			if n := metricValue(t, reg, "tokenagent_policy_errors_total", map[string]string{"policy": "healthy", "kind": "busy"}); n != 0 {
				t.Errorf("healthy module busy errors = %v", n)
			}
		})
	}
}

package bench

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/plugins"
	"github.com/tokenagent/tokenagent/plugins/plugintest"
)

// BenchmarkPolicyNeighbour measures a healthy site's policy (the Go-built readonly-anonymous
// and the WAT no-legacy) alone, and beside another site's module that loops until its deadline
// on every call while four clients call it, each sending its next request 100 µs after the
// last answer (SPEC §5: the healthy policy's p99 stays within 2× of its p99 alone). Both run on one engine with the default options: on a
// 2-core machine, one WebAssembly slot for both. Compare the p99-ns of the two sub-benchmarks.
//
//	go test ./bench -run '^$' -bench PolicyNeighbour
func BenchmarkPolicyNeighbour(b *testing.B) {
	for _, healthy := range []struct {
		name string
		path func(testing.TB) string
		in   *plugins.Input
	}{
		{"go", goPolicy("readonly-anonymous"), request("anonymous", "", "GET")},
		{"wat", func(tb testing.TB) string { return plugintest.BuildWAT(tb, "../policies/no-legacy/policy.wat") },
			request("authtoken", "42", "GET")},
	} {
		for _, neighbour := range []string{"alone", "beside-looping"} {
			b.Run(healthy.name+"/"+neighbour, func(b *testing.B) {
				e := plugintest.NewEngine(b, plugins.EngineOptions{Logger: discardLogger()})
				// The agent's defaults (plugintest's are longer): a 5 ms deadline, 1 s of waiting;
				// for the healthy module a 1 s deadline, which costs the same, so a busy machine
				// stalling the benchmark's thread for 5 ms does not abort the run.
				opts := plugins.ModuleOptions{Deadline: 5 * time.Millisecond, MaxWait: time.Second, InitTimeout: 2 * time.Second}
				hopts := opts
				hopts.Name, hopts.Deadline = "healthy", time.Second
				m := plugintest.Load(b, e, healthy.path(b), hopts)
				ctx := context.Background()
				if neighbour == "beside-looping" {
					lopts := opts
					lopts.Name = "looping"
					loop := plugintest.Load(b, e, plugintest.BuildWAT(b, "../plugins/testdata/hostile/loop.wat"), lopts)
					stop := make(chan struct{})
					var wg sync.WaitGroup
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
								_, _ = loop.Evaluate(ctx, &plugins.Input{Method: "GET", Path: "/"})
								time.Sleep(100 * time.Microsecond) // the client's turnaround, not a wait for an event
							}
						}()
					}
					b.Cleanup(func() { close(stop); wg.Wait() })
				}
				call := func() {
					// The default 5 ms deadline; a healthy call never fails, neighbour or not.
					if _, err := m.Evaluate(ctx, healthy.in); err != nil {
						b.Fatal(err)
					}
				}
				call()
				b.ReportAllocs()
				for b.Loop() {
					call()
				}
				reportPercentiles(b, call)
			})
		}
	}
}

package bench

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/plugins"
	"github.com/tokenagent/tokenagent/plugins/opatest"
	"github.com/tokenagent/tokenagent/plugins/plugintest"
)

// request is a realistic request for the policy benchmarks (an input record of about 400 bytes).
func request(kind, user, method string) *plugins.Input {
	return &plugins.Input{
		Site: "docs", Kind: kind, User: user, Method: method,
		Path: "/@api/deki/pages/=Guides%252FInstall/contents", Query: "mode=view&format=html",
		Host: "docs.example.com", Origin: "https://docs.example.com",
		Headers: [][2]string{
			{"accept", "application/json, text/plain, */*"},
			{"accept-encoding", "gzip, deflate, br"},
			{"accept-language", "en-US,en;q=0.9"},
			{"user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"},
			{"x-forwarded-for", "203.0.113.7"},
			{"x-request-id", "7f3c2a9e-51d4-4b8e-9a4f-0c2b1e6d8a31"},
		},
		Time: time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC),
	}
}

// BenchmarkPolicy measures one Evaluate of each example policy through the real host: taking
// an instance, encoding the input into its memory, the call under its deadline, and decoding and
// checking the output. It also reports p50 and p99 latency over 20000 timed calls after the
// measured loop. The deadline is 1 s rather than the default 5 ms: it costs the same, and a
// busy machine stalling the benchmark's thread for 5 ms must not abort the run.
func BenchmarkPolicy(b *testing.B) {
	e := plugintest.NewEngine(b, plugins.EngineOptions{Logger: discardLogger()})
	maintenanceFlags := "-X 'main.windows=22:00-02:00,2026-12-24T00:00:00Z/2026-12-27T00:00:00Z' -X main.exempt=1,=ops" // as in its tests: no extra build
	cases := []struct {
		name string
		path func(testing.TB) string
		in   *plugins.Input
	}{
		{"readonly-anonymous/allow", goPolicy("readonly-anonymous"), request("anonymous", "", "GET")},
		{"readonly-anonymous/deny", goPolicy("readonly-anonymous"), request("anonymous", "", "POST")},
		{"maintenance/allow", goPolicy("maintenance", maintenanceFlags), request("authtoken", "42", "POST")},
		{"role-header/oauth", goPolicy("role-header"), withScopes(request("oauth", "sub-42", "GET"), "read", "write")},
		// The floor of any Go module: plugins' test module answering /allow with guest.Allow()
		// and nothing else (the Go runtime's entry and exit, the input decoded, the output
		// encoded).
		{"go-floor/allow", func(tb testing.TB) string { return plugintest.BuildGo(tb, "../plugins/testdata/goguest") },
			withPath(request("anonymous", "", "GET"), "/allow")},
		{"no-legacy-wat/allow", func(tb testing.TB) string { return plugintest.BuildWAT(tb, "../policies/no-legacy/policy.wat") },
			request("authtoken", "42", "GET")},
		// The Rego example (OPA's WebAssembly ABI): the input document as JSON, opa_eval, the
		// result set read back.
		{"rego-envoy/read", regoPolicy, request("anonymous", "", "GET")},
		{"rego-envoy/editor-write", regoPolicy, request("authtoken", "42", "POST")},
		{"rego-envoy/deny", regoPolicy, request("authtoken", "7", "POST")},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			m := plugintest.Load(b, e, c.path(b), plugins.ModuleOptions{Deadline: time.Second})
			ctx := context.Background()
			if _, err := m.Evaluate(ctx, c.in); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Evaluate(ctx, c.in); err != nil {
					b.Fatal(err)
				}
			}
			reportPercentiles(b, func() {
				if _, err := m.Evaluate(ctx, c.in); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// BenchmarkPolicyParallel is role-header from GOMAXPROCS goroutines at once. With the default
// EngineOptions.MaxConcurrency (GOMAXPROCS-1) calls queue for a WebAssembly slot on a small
// machine; this shows the cost of that.
func BenchmarkPolicyParallel(b *testing.B) {
	e := plugintest.NewEngine(b, plugins.EngineOptions{Logger: discardLogger()})
	m := plugintest.Load(b, e, goPolicy("role-header")(b), plugins.ModuleOptions{Deadline: time.Second})
	in := withScopes(request("oauth", "sub-42", "GET"), "read")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.Evaluate(context.Background(), in); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func goPolicy(name string, ldflags ...string) func(testing.TB) string {
	return func(tb testing.TB) string { return plugintest.BuildGo(tb, "../policies/"+name, ldflags...) }
}

func withPath(in *plugins.Input, path string) *plugins.Input {
	in.Path, in.Query = path, ""
	return in
}

func withScopes(in *plugins.Input, scopes ...string) *plugins.Input {
	in.Scopes = scopes
	return in
}

func reportPercentiles(b *testing.B, call func()) {
	const n = 20000
	d := make([]time.Duration, n)
	for i := range d {
		t0 := time.Now()
		call()
		d[i] = time.Since(t0)
	}
	slices.Sort(d)
	b.ReportMetric(float64(d[n/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(d[n*99/100].Nanoseconds()), "p99-ns")
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// regoPolicy builds policies/rego-envoy with the real opa (OPA's WebAssembly bundle).
func regoPolicy(tb testing.TB) string {
	files := map[string]string{}
	for _, name := range []string{"policy.rego", "data.json"} {
		b, err := os.ReadFile(filepath.Join("../policies/rego-envoy", name))
		if err != nil {
			tb.Fatal(err)
		}
		files[name] = string(b)
	}
	return opatest.Build(tb, files, "envoy/authz/result")
}

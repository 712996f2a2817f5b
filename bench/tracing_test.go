package bench

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
)

// BenchmarkCheckTracing is tracing's cost per check (SPEC §8): a Server API Token check with
// tracing off, on at 1 % and 100 % sampling of requests without a traceparent, and with a
// sampled traceparent from Envoy. The spans go through the real batch processor to an
// exporter that discards them, so what is measured is the check's side: extracting the
// parent, starting, filling and ending the span, and queueing it.
func BenchmarkCheckTracing(b *testing.B) {
	tok := token.MintServerToken("k1", vault.NewSecret([]byte(hmSecret)), "42", hmNow)
	provider := func(b *testing.B) trace.TracerProvider {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()),
			sdktrace.WithBatcher(tracetest.NewNoopExporter()))
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		return tp
	}
	for _, tc := range []struct {
		name        string
		ratio       float64 // <0: tracing off
		traceparent string
	}{
		{"off", -1, ""},
		{"ratio=0.01", 0.01, ""},
		{"ratio=1", 1, ""},
		{"traceparent-sampled", 0.01, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{"traceparent-unsampled", 0.01, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var tp trace.TracerProvider
			if tc.ratio >= 0 {
				tp = provider(b)
			}
			a := hmAgentTraced(b, tp, tc.ratio)
			h := envoyHeaders(map[string]string{"x-deki-token": tok})
			if tc.traceparent != "" {
				h["traceparent"] = tc.traceparent
			}
			req := &agent.Request{Method: "GET", Scheme: "https", Host: "docs.example.com", Path: "/@api/deki/site/settings", Headers: h}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if d := a.Check(ctx, req); !d.Allowed {
					b.Fatal("denied")
				}
			}
		})
	}
}

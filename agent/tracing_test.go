package agent

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

func TestParentSampled(t *testing.T) {
	for _, tc := range []struct {
		tp          string
		sampled, ok bool
	}{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true, true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", false, true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", true, true},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", true, true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", false, false},
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, false},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false, false},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false, false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false, false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", false, false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", false, false},
		{"", false, false},
	} {
		sampled, ok := parentSampled(tc.tp)
		if sampled != tc.sampled || ok != tc.ok {
			t.Errorf("parentSampled(%q) = %v, %v; want %v, %v", tc.tp, sampled, ok, tc.sampled, tc.ok)
		}
	}
}

// FuzzParentSampled: the agent's quick reading of a traceparent agrees with OpenTelemetry's
// propagator on which ones are valid and which are sampled, for any client-sent value.
func FuzzParentSampled(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x")
	f.Fuzz(func(t *testing.T, tp string) {
		sampled, ok := parentSampled(tp)
		sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(),
			propagation.MapCarrier{"traceparent": tp}))
		if ok != sc.IsValid() || (ok && sampled != sc.IsSampled()) {
			t.Fatalf("%q: ours valid=%v sampled=%v, OpenTelemetry valid=%v sampled=%v", tp, ok, sampled, sc.IsValid(), sc.IsSampled())
		}
	})
}

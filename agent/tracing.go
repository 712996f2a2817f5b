package agent

import (
	"context"
	"math/rand/v2"
	"strings"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault/spans"
)

// traced decides whether a check is traced (SPEC §8), parent-based: a valid W3C traceparent
// decides by its sampled flag; without one (or with a malformed one) a check is traced at
// the runtime's sample ratio. The decision is taken before any span exists, so a check that
// is not traced costs a map lookup and a random number, not a span.
func (rt *Runtime) traced(h map[string]string) bool {
	if tp := h["traceparent"]; tp != "" {
		if sampled, ok := parentSampled(tp); ok {
			return sampled
		}
	}
	return rt.traceRatio >= 1 || rt.traceRatio > 0 && rand.Float64() < rt.traceRatio
}

// parentSampled reads the sampled flag of a W3C traceparent
// (version "-" trace-id "-" parent-id "-" flags, lower-case hex); ok is false when it is not
// a valid one. A version after 00 may carry more fields after the flags.
func parentSampled(tp string) (sampled, ok bool) {
	const n = 55
	if len(tp) < n || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' {
		return false, false
	}
	if version := tp[:2]; version == "ff" || !isLowerHex(version) || (version == "00" && len(tp) != n) ||
		(len(tp) > n && tp[n] != '-') {
		return false, false
	}
	traceID, parentID, flags := tp[3:35], tp[36:52], tp[53:55]
	if !isLowerHex(traceID) || !isLowerHex(parentID) || !isLowerHex(flags) ||
		strings.Count(traceID, "0") == len(traceID) || strings.Count(parentID, "0") == len(parentID) {
		return false, false
	}
	f := unhexByte(flags[0])<<4 | unhexByte(flags[1])
	if tp[:2] == "00" && f > 3 { // version 00 has two flags: sampled and random
		return false, false
	}
	return f&1 == 1, true
}

// isLowerHex reports whether s is lower-case hexadecimal digits, as W3C Trace Context wants.
func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// startCheck starts the check's span: a server span whose parent is the W3C traceparent (and
// tracestate) of the checked request's headers, or the root of a new trace. Key-source reads
// and JWKS fetches made for the check are its children.
func (rt *Runtime) startCheck(ctx context.Context, req *Request) (context.Context, trace.Span) {
	if req.Headers["traceparent"] != "" {
		ctx = propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier(req.Headers))
	}
	return rt.tracer.Start(ctx, spans.CheckSpan, trace.WithSpanKind(trace.SpanKindServer))
}

// endCheck records the decision on the check's span and ends it. Only what the upstream and
// the metrics see goes in: no token, key, cookie, path or query.
func endCheck(span trace.Span, d *Decision, kind token.Kind) {
	if span.IsRecording() {
		dec, why := d.outcome()
		span.SetAttributes(spans.Site.String(d.Site), spans.Kind.String(string(kind)),
			spans.Decision.String(dec), spans.DecisionID.String(d.ID.String()))
		if why != "" {
			span.SetAttributes(spans.Reason.String(string(why)))
		}
		if d.Allowed && d.Identity.User != "" {
			span.SetAttributes(spans.User.String(d.Identity.User))
		}
		if d.Status >= 500 {
			span.SetStatus(codes.Error, string(d.Reason)) // keys_unavailable, policy_error
		}
	}
	span.End()
}

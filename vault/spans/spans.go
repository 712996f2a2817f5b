// Package spans is the one vocabulary of tokenagent's traces (SPEC §8): the check's span and
// its attributes, which the pipeline and the verifiers set, and the child spans the key layer
// adds (a read from the key source, a JWKS fetch). A child span is started only under a parent
// that records, with the parent's own tracer provider, so the key layer needs no tracer of its
// own and background refreshes (no parent) make no trace; attributes are set only on a span
// that records, so a check that is not sampled pays one interface call.
//
// Nothing secret goes into a span: no token, key, cookie, query, path or URL query; the only
// value that identifies a user is the one the upstream gets as x-auth-user (enduser.id).
//
// Who does what with them: package agent decides which checks are traced and starts and ends
// the check's span (agent/tracing.go); the daemon builds the tracer provider and its OTLP
// exporter (agent/cmd/daemon/tracing.go).
package spans

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// The attributes of tokenagent.check, the span of one check.
const (
	Site       = attribute.Key("tokenagent.site")
	Kind       = attribute.Key("tokenagent.kind")
	Decision   = attribute.Key("tokenagent.decision") // allow, deny, answer or shadow
	Reason     = attribute.Key("tokenagent.reason")   // the denial's, or a shadow site's would-be one
	CacheHit   = attribute.Key("tokenagent.cache_hit")
	PolicyTime = attribute.Key("tokenagent.policy.duration_ns")
	DecisionID = attribute.Key("tokenagent.decision_id")
	User       = attribute.Key("enduser.id") // x-auth-user, allowed requests only
	Method     = attribute.Key("http.request.method")
)

// CheckSpan is the name of the span of one check.
const CheckSpan = "tokenagent.check"

// Recording returns the span of ctx when it records, else nil: callers build attributes only
// for a span that keeps them.
//
//	if s := spans.Recording(ctx); s != nil {
//		s.SetAttributes(spans.CacheHit.Bool(true))
//	}
func Recording(ctx context.Context) trace.Span {
	if s := trace.SpanFromContext(ctx); s.IsRecording() {
		return s
	}
	return nil
}

// The names and attributes of the key layer's spans. No key, secret or URL query goes in.
const (
	KeyRead   = "tokenagent.keys.read"
	JWKSFetch = "tokenagent.jwks.fetch"

	Source = attribute.Key("tokenagent.key_source") // file or vault
	Path   = attribute.Key("tokenagent.key_path")   // the record's path, e.g. sites/docs/server-tokens/k1
	Result = attribute.Key("tokenagent.result")     // ok, not_found, invalid, error, status, too_large
	Server = attribute.Key("server.address")        // the JWKS host
)

const scope = "github.com/tokenagent/tokenagent/vault"

// Start starts span name as a child of the span of ctx when that one records; otherwise it
// returns ctx and nil.
func Start(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return ctx, nil
	}
	return parent.TracerProvider().Tracer(scope).Start(ctx, name,
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// End records result on span (nil: nothing) and ends it; a failure marks the span an error.
func End(span trace.Span, result string, failed bool) {
	if span == nil {
		return
	}
	span.SetAttributes(Result.String(result))
	if failed {
		span.SetStatus(codes.Error, result)
	}
	span.End()
}

// Package spans starts the child spans of a check that the key layer adds (SPEC §8): a read
// from the key source, a JWKS fetch. A span is started only under a parent that records, with
// the parent's own tracer provider, so the key layer needs no tracer of its own and background
// refreshes (no parent) make no trace.
package spans

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

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

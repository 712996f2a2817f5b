// Package tracing names the attributes of the check's span (SPEC §8); verifiers set them on
// the span of their context only when it records, so a check that is not sampled pays one
// interface call.
//
// Nothing secret goes into a span: no token, key, cookie, query or path; the only value that
// identifies a user is the one the upstream gets as x-auth-user (enduser.id).
package tracing

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// The attributes of tokenagent.check.
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
//	if s := tracing.Recording(ctx); s != nil {
//		s.SetAttributes(tracing.CacheHit.Bool(true))
//	}
func Recording(ctx context.Context) trace.Span {
	if s := trace.SpanFromContext(ctx); s.IsRecording() {
		return s
	}
	return nil
}

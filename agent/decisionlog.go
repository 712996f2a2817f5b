package agent

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tokenagent/tokenagent/agent/token"
)

// DecisionID names one decision: a random 64-bit number, written as 16 lower-case hex digits.
// It is in the decision's log line, in the gRPC answer's dynamic metadata (`decision_id`) and
// in the HTTP front's `x-auth-decision-id` header, so a request can be followed from the
// proxy's access log to the agent's. The zero value means "no id".
//
// IDs are random, not secret and not unique by construction: at 64 bits a repeat is
// negligible within any log retention.
type DecisionID uint64

// NewDecisionID returns a new random, non-zero DecisionID. It does not allocate.
func NewDecisionID() DecisionID {
	for {
		if v := rand.Uint64(); v != 0 {
			return DecisionID(v)
		}
	}
}

// String returns the id as 16 lower-case hex digits, or "" for the zero id.
func (id DecisionID) String() string {
	if id == 0 {
		return ""
	}
	var b [16]byte
	const digits = "0123456789abcdef"
	for i := 15; i >= 0; i-- {
		b[i] = digits[id&0xf]
		id >>= 4
	}
	return string(b[:])
}

// ParseDecisionID parses the form String writes.
func ParseDecisionID(s string) (DecisionID, error) {
	if len(s) != 16 {
		return 0, strconv.ErrSyntax
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, strconv.ErrSyntax
	}
	return DecisionID(v), nil
}

// Log line messages of the decision log.
const (
	LogDenied   = "denied"
	LogAllowed  = "allowed"
	LogAnswered = "answered"
	// LogShadowDenied is a denial of a site in shadow mode, let through (always logged).
	LogShadowDenied = "shadow_denied"
)

// maxLogValue bounds the request values (host, path, origin) a decision log line copies, so a
// client cannot make the agent write huge lines.
const maxLogValue = 256

// logDecision writes the decision log: one line for every denial, and one for every Nth
// allowed or self-answered decision when log.allow_sample is N > 0. Lines carry the decision
// id, site, credential kind, request method, host and path (never the query, which may hold a
// credential), status and reason, the identity of an allowed request, and the credential's
// fingerprint (token.CredentialFingerprint) — never a token or secret.
func (a *Agent) logDecision(c *call, d *Decision, took time.Duration) {
	req, kind := c.req, c.kind
	msg := LogDenied
	if d.Shadow != "" {
		msg = LogShadowDenied
	} else if d.Allowed || d.Answered {
		n := uint64(a.cfg.Log.AllowSample)
		if n == 0 || a.sampled.Add(1)%n != 0 {
			return
		}
		msg = LogAllowed
		if d.Answered {
			msg = LogAnswered
		}
	}
	ctx := context.Background()
	if !a.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	path, _ := splitPath(req.Path)
	attrs := make([]slog.Attr, 0, 14)
	attrs = append(attrs,
		slog.String("decision_id", d.ID.String()),
		slog.String("site", d.Site), slog.String("kind", string(kind)),
		slog.String("method", clip(req.Method)), slog.String("host", clip(req.Host)),
		slog.String("path", clip(path)), slog.Int("status", d.Status))
	if d.Reason != "" {
		attrs = append(attrs, slog.String("reason", string(d.Reason)))
	}
	if d.Shadow != "" {
		attrs = append(attrs, slog.String("reason", string(d.Shadow)))
	}
	if d.Allowed {
		if d.Identity.User != "" {
			attrs = append(attrs, slog.String("user", clip(d.Identity.User)))
		}
		if d.Identity.ClientID != "" {
			attrs = append(attrs, slog.String("client_id", clip(d.Identity.ClientID)))
		}
	}
	if o := req.Headers[headerOrigin]; o != "" {
		attrs = append(attrs, slog.String("origin", clip(o)))
	}
	if kind != token.KindAnonymous {
		if cred := c.creds.primary(); cred != "" {
			attrs = append(attrs, slog.String("credential_sha256", token.CredentialFingerprint(cred)))
		}
	}
	if d.Cause != nil {
		attrs = append(attrs, slog.String("cause", d.Cause.Error()))
	}
	attrs = append(attrs, slog.Float64("duration_seconds", took.Seconds()))
	a.log.LogAttrs(ctx, slog.LevelInfo, msg, attrs...)
}

// primary is the credential the request's kind names: the one a log line fingerprints.
func (c *credentials) primary() string {
	switch {
	case c.deki.present:
		return c.deki.value
	case c.bearer.present:
		return c.bearer.value
	case c.auth.present:
		return c.auth.value
	case c.apikey.present:
		return c.apikey.value
	}
	return ""
}

// clip cuts s to maxLogValue bytes, at a rune boundary, marking the cut with "…".
func clip(s string) string {
	if len(s) <= maxLogValue {
		return s
	}
	i := maxLogValue
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

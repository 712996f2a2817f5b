package agent

import (
	"strings"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
)

// Request is one authorization question, independent of the transport that asked it.
type Request struct {
	// Method is the HTTP method.
	Method string
	// Scheme is "http" or "https" as the proxy saw it.
	Scheme string
	// Host is the request's authority (`:authority` / Host), possibly with a port.
	Host string
	// Path is the request path with its query, as received.
	Path string
	// Headers are the request headers with lower-case names. The agent only reads them.
	Headers map[string]string
	// Body is the request body as the proxy buffered it (only needed for the token exchange).
	Body []byte
	// BodyTruncated reports that the proxy cut the body at its buffer limit.
	BodyTruncated bool
}

// Decision is the agent's answer to a Request.
type Decision struct {
	// Allowed requests go upstream with UpstreamHeaders set, RemoveHeaders removed,
	// RemoveQuery parameters dropped, and ResponseHeaders added to the upstream's response.
	Allowed bool

	// ID names this decision in the decision log, the dynamic metadata (`decision_id`) and the
	// HTTP front's answers, so one request can be followed across logs. Set by Agent.Check.
	ID DecisionID

	// Site is the id of the site (empty when none matched).
	Site string
	// Identity is who the request was found to be (Kind anonymous when no credential).
	Identity token.Identity

	UpstreamHeaders []token.Header
	RemoveHeaders   []string
	RemoveQuery     []string
	ResponseHeaders []token.Header

	// Status, Reason and Body describe the answer when the request does not go upstream:
	// a denial (Reason set), or the agent's own answer (Answered: a CORS preflight's 204, the
	// token exchange's 200).
	Status   int
	Reason   reason.Reason
	Body     []byte
	Answered bool
	// Shadow is the reason a site in shadow mode would have denied this allowed request with
	// (SPEC §8); "" otherwise.
	Shadow reason.Reason
	// own marks the agent's own answers and their refusals (CORS preflight, token exchange),
	// which shadow mode leaves as they are.
	own bool
	// Headers are the headers of a denial or of the agent's own answer.
	Headers []token.Header
	// Cause is the internal error behind a denial, for logs only.
	Cause error
}

// MaxMethodLen is the longest method accepted (SPEC §2a); the longest registered one is 17.
const MaxMethodLen = 32

// target is a request's method and target as the pipeline reads them (SPEC §2a): the method
// upper-case, the path normalised for route rules and policies, and the raw query.
type target struct {
	method  string
	rawPath string // the path as received, without the query
	path    string // NormalizePath(rawPath)
	query   string // the raw query, without "?"
}

// readTarget checks a request's method and target before anything else reads them (SPEC
// §2a) and returns them in the form every later step uses. It refuses, with
// malformed_request: a method that is not an HTTP token; an empty target; a target that is
// not origin-form ("/…"), except "*" for OPTIONS; a raw control character (0x00–0x1F, 0x7F)
// or "#" anywhere in the target; and in the path, a raw or percent-encoded backslash or an
// encoded control character. Upstream servers read those differently from the agent, so the
// agent refuses them rather than guess.
func readTarget(method, t string) (target, *reason.Error) {
	m, ok := upperMethod(method)
	if !ok {
		return target{}, reason.Newf(reason.MalformedRequest, "the method is not an HTTP method token")
	}
	switch {
	case t == "":
		return target{}, reason.Newf(reason.MalformedRequest, "the request path is empty")
	case t == "*":
		if m != "OPTIONS" {
			return target{}, reason.Newf(reason.MalformedRequest, "the target * is only for OPTIONS")
		}
		return target{method: m, rawPath: t, path: t}, nil
	case t[0] != '/':
		return target{}, reason.Newf(reason.MalformedRequest, "the request target is not a path starting with /")
	}
	q := len(t)
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case c < 0x20 || c == 0x7f:
			return target{}, reason.Newf(reason.MalformedRequest, "the request target holds a control character")
		case c == '#':
			return target{}, reason.Newf(reason.MalformedRequest, "the request target holds a fragment (#)")
		case c == '?' && q == len(t):
			q = i
		case i > q:
			// The query: only the raw characters above are refused.
		case c == '\\':
			return target{}, reason.Newf(reason.MalformedRequest, "the request path holds a backslash")
		case c == '%' && i+2 < len(t) && isHex(t[i+1]) && isHex(t[i+2]):
			if d := unhexByte(t[i+1])<<4 | unhexByte(t[i+2]); d < 0x20 || d == 0x7f || d == '\\' {
				return target{}, reason.Newf(reason.MalformedRequest, "the request path holds an encoded control character or backslash")
			}
		}
	}
	tg := target{method: m, rawPath: t[:q]}
	if q < len(t) {
		tg.query = t[q+1:]
	}
	tg.path = NormalizePath(tg.rawPath)
	return tg, nil
}

// upperMethod returns method upper-cased (allocating only when it has lower-case letters),
// and false when it is not an RFC 9110 token of at most MaxMethodLen characters.
func upperMethod(method string) (string, bool) {
	if method == "" || len(method) > MaxMethodLen {
		return "", false
	}
	lower := false
	for i := 0; i < len(method); i++ {
		c := method[i]
		switch {
		case 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case 'a' <= c && c <= 'z':
			lower = true
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return "", false
		}
	}
	if lower {
		return strings.ToUpper(method), true
	}
	return method, true
}

// outcome names the decision as metrics, logs and spans do: allow, deny, answer (the agent's
// own answer) or shadow (a shadow-mode site's would-be denial, let through), with its reason
// (the denial's or the would-be one).
func (d *Decision) outcome() (string, reason.Reason) {
	switch {
	case d.Shadow != "":
		return "shadow", d.Shadow
	case d.Allowed:
		return "allow", ""
	case d.Answered:
		return "answer", ""
	}
	return "deny", d.Reason
}

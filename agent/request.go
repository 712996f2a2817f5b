package agent

import (
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

// Header is one header name and value.
type Header struct {
	Name, Value string
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

	UpstreamHeaders []Header
	RemoveHeaders   []string
	RemoveQuery     []string
	ResponseHeaders []Header

	// Status, Reason and Body describe the answer when the request does not go upstream:
	// a denial (Reason set), or the agent's own answer (Answered: a CORS preflight's 204, the
	// token exchange's 200).
	Status   int
	Reason   reason.Reason
	Body     []byte
	Answered bool
	// Headers are the headers of a denial or of the agent's own answer.
	Headers []Header
	// Cause is the internal error behind a denial, for logs only.
	Cause error
}

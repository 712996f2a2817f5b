package plugins

import (
	"encoding/binary"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/tokenagent/tokenagent/plugins/internal/output"
)

// The ABI v1 exports and import (plugins/ABI.md).
const (
	exportMarker   = "tokenagent_abi_v1"
	exportAlloc    = "tokenagent_alloc"
	exportEvaluate = "tokenagent_evaluate"
	exportMemory   = "memory"
	exportInit     = "_initialize"
	hostModule     = "tokenagent"
	hostLogFunc    = "log"
	layoutVersion  = 1
)

// Limits of ABI v1 that are not configurable (plugins/ABI.md, "Limits").
const (
	// MaxInputBytes is the largest input record the host sends; a request whose record would be
	// larger is refused with an error of kind FailureInputTooLarge.
	MaxInputBytes = output.MaxInputBytes
	// MaxReasonBytes is the longest reason an output may carry.
	MaxReasonBytes = output.MaxReasonBytes
	// MaxOutputHeaders is the most headers each of an output's two header lists may hold.
	MaxOutputHeaders = output.MaxHeaders
	// MaxHeaderNameBytes and MaxHeaderValueBytes bound one output header.
	MaxHeaderNameBytes  = output.MaxHeaderNameBytes
	MaxHeaderValueBytes = output.MaxHeaderValueBytes
)

// Input is what a policy sees of one request: the verified identity and the request itself.
// The host encodes it into the module's memory; nothing here is retained after Evaluate returns.
type Input struct {
	// Site is the site id.
	Site string
	// Kind is the credential kind (authtoken, browser, server, oauth, impersonation, apikey,
	// anonymous).
	Kind string
	// User is the user as the token names it; empty when there is none.
	User string
	// ClientID is the OAuth client_id, when there is one.
	ClientID string
	// Scopes are the OAuth scopes.
	Scopes []string
	// Method is the HTTP method.
	Method string
	// Scheme is "http" or "https" as the proxy saw it. OPA modules see it
	// (input.attributes.request.http.scheme); the ABI v1 record does not carry it.
	Scheme string
	// Path is the request path without the query; the agent passes the path normalised as for
	// route rules (SPEC §5).
	Path string
	// Query is the raw query without "?", as the module sees it: the agent removes the
	// authtoken, apikey and impersonateuserid parameters before (SPEC §5).
	Query string
	// Host is the request host, lower-case, without the port.
	Host string
	// Origin is the Origin header, if any.
	Origin string
	// Headers are the request headers, names in lower case, passed to the module as given.
	// The agent gives none that carries a credential: not authorization, proxy-authorization,
	// x-deki-token or x-authtoken, not the authtoken cookie, no client-sent x-auth-* header in
	// any spelling, and no credential parameter in a header that carries a URL (SPEC §5,
	// ABI.md "Input record").
	Headers [][2]string
	// Time is the request time; the zero Time means the engine's clock (EngineOptions.Now).
	Time time.Time
}

// Output is a policy's decision.
type Output struct {
	// Allow lets the request through.
	Allow bool
	// Status is the HTTP status of a denial (400 to 599; 403 when the module gives none); 0 when
	// Allow.
	Status int
	// Reason is the module's reason, for a person (UTF-8, no control characters, at most
	// MaxReasonBytes); may be empty.
	Reason string
	// Headers are to be set on the upstream request when allowed; nil when none.
	Headers map[string]string
	// ResponseHeaders are to be added to the answer to the client (the denial, or the upstream's
	// response when allowed), for example Retry-After; nil when none.
	ResponseHeaders map[string]string
}

// inputSize returns the size of in's record.
func inputSize(in *Input) int {
	n := 4 + 8 + 9*4 + len(in.Site) + len(in.Kind) + len(in.User) + len(in.ClientID) +
		len(in.Method) + len(in.Path) + len(in.Query) + len(in.Host) + len(in.Origin)
	n += 4
	for _, s := range in.Scopes {
		n += 4 + len(s)
	}
	n += 4
	for _, h := range in.Headers {
		n += 8 + len(h[0]) + len(h[1])
	}
	return n
}

// encodeInput writes in's record into b, which is exactly inputSize bytes long.
func encodeInput(b []byte, in *Input, now time.Time) {
	le := binary.LittleEndian
	le.PutUint32(b, layoutVersion)
	le.PutUint64(b[4:], uint64(now.UnixNano()))
	off := 12
	put := func(s string) {
		le.PutUint32(b[off:], uint32(len(s)))
		off += 4 + copy(b[off+4:], s)
	}
	put(in.Site)
	put(in.Kind)
	put(in.User)
	put(in.ClientID)
	put(in.Method)
	put(in.Path)
	put(in.Query)
	put(in.Host)
	put(in.Origin)
	le.PutUint32(b[off:], uint32(len(in.Scopes)))
	off += 4
	for _, s := range in.Scopes {
		put(s)
	}
	le.PutUint32(b[off:], uint32(len(in.Headers)))
	off += 4
	for _, h := range in.Headers {
		put(h[0])
		put(h[1])
	}
}

// decodeOutput decodes and checks an ABI v1 output record. Every rule of ABI.md "Output" is
// checked here; an error names the first rule broken and comes with the zero Output.
func decodeOutput(b []byte) (Output, error) {
	out, err := decodeOutputFields(b)
	if err != nil {
		return Output{}, err
	}
	return out, nil
}

func decodeOutputFields(b []byte) (Output, error) {
	var out Output
	if len(b) == 0 {
		return out, fmt.Errorf("empty output (the module returned length 0)")
	}
	r := reader{b: b, ok: true}
	if v := r.u32(); !r.ok || v != layoutVersion {
		if !r.ok {
			return out, fmt.Errorf("output of %d bytes is shorter than its 12-byte prefix", len(b))
		}
		return out, fmt.Errorf("output layout version %d, want %d", v, layoutVersion)
	}
	flags := r.u32()
	status := r.u32()
	if !r.ok {
		return out, fmt.Errorf("output of %d bytes is shorter than its 12-byte prefix", len(b))
	}
	if flags&^1 != 0 {
		return out, fmt.Errorf("output flags %#x hold unknown bits (only bit 0, allow, is defined)", flags)
	}
	out.Allow = flags&1 == 1
	switch {
	case out.Allow && status != 0:
		return out, fmt.Errorf("output allows with status %d (must be 0 when allowing)", status)
	case !out.Allow && status == 0:
		out.Status = 403
	case !out.Allow && (status < 400 || status > 599):
		return out, fmt.Errorf("output denies with status %d, outside 400..599", status)
	case !out.Allow:
		out.Status = int(status)
	}
	reason, ok := r.str()
	if !ok {
		return out, r.truncated("reason")
	}
	if len(reason) > MaxReasonBytes {
		return out, fmt.Errorf("output reason is %d bytes, over %d", len(reason), MaxReasonBytes)
	}
	if !utf8.Valid(reason) {
		return out, fmt.Errorf("output reason is not valid UTF-8")
	}
	for _, c := range reason {
		if c < 0x20 || c == 0x7f {
			return out, fmt.Errorf("output reason holds control character %#x", c)
		}
	}
	out.Reason = string(reason)
	var err error
	if out.Headers, err = r.headers("header"); err != nil {
		return out, err
	}
	if out.ResponseHeaders, err = r.headers("response header"); err != nil {
		return out, err
	}
	if r.off != len(b) {
		return out, fmt.Errorf("output has %d trailing bytes after its last field", len(b)-r.off)
	}
	return out, nil
}

type reader struct {
	b   []byte
	off int
	ok  bool
}

func (r *reader) u32() uint32 {
	if !r.ok || len(r.b)-r.off < 4 {
		r.ok = false
		return 0
	}
	v := binary.LittleEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v
}

func (r *reader) str() ([]byte, bool) {
	n := r.u32()
	if !r.ok || uint64(n) > uint64(len(r.b)-r.off) {
		r.ok = false
		return nil, false
	}
	s := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return s, true
}

func (r *reader) truncated(field string) error {
	return fmt.Errorf("output is truncated in its %s (at byte %d of %d)", field, r.off, len(r.b))
}

func (r *reader) headers(what string) (map[string]string, error) {
	n := r.u32()
	if !r.ok {
		return nil, r.truncated(what + " count")
	}
	if n > MaxOutputHeaders {
		return nil, fmt.Errorf("output has %d %ss, over %d", n, what, MaxOutputHeaders)
	}
	if n == 0 {
		return nil, nil
	}
	m := make(map[string]string, n)
	for i := uint32(0); i < n; i++ {
		name, ok := r.str()
		if !ok {
			return nil, r.truncated(what + " name")
		}
		value, ok := r.str()
		if !ok {
			return nil, r.truncated(what + " value")
		}
		if err := output.CheckHeader(what, name, value); err != nil {
			return nil, err
		}
		if _, dup := m[string(name)]; dup {
			return nil, fmt.Errorf("output %s %q is given twice", what, name)
		}
		m[string(name)] = string(value)
	}
	return m, nil
}

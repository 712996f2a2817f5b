// Package guest is the small SDK a tokenagent site policy written in Go imports. It implements
// the module side of ABI v1 (see plugins/ABI.md): it exports the ABI functions, decodes the
// host's input in place and encodes the policy's answer, so a policy is a plain Go function.
//
//	package main
//
//	import "github.com/tokenagent/tokenagent/plugins/guest"
//
//	func main() {} // required by -buildmode=c-shared; never called
//
//	func init() { guest.Handle(policy) }
//
//	func policy(in *guest.Input) guest.Output {
//		if in.Anonymous() && in.Method != "GET" {
//			return guest.Deny(401, "anonymous users may only read")
//		}
//		return guest.Allow(guest.Header{Name: "x-site-role", Value: "reader"})
//	}
//
// Build it as a WASI reactor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o policy.wasm .
//
// The exports (`tokenagent_abi_v1`, `tokenagent_alloc`, `tokenagent_evaluate`) live in this
// package (Go 1.24 and later accept `//go:wasmexport` outside package main), so importing it is
// all a policy needs; no copied main.go template. On other platforms the package builds too
// (without the exports), so a policy's package can be vetted and unit-tested natively.
//
// # Notes
//
//   - Handle is called once, from an init function (it runs in the module's `_initialize`).
//     Registering a second handler panics, so a module with two policies fails to load.
//   - The *Input and every string in it point into the module's reused input buffer: they are
//     valid only until the policy function returns. Copy (strings.Clone) what must outlive it.
//   - A module instance serves one call at a time; the host runs several instances in parallel,
//     each with its own memory, so package-level state is per instance and is never shared
//     between instances (do not count on it across calls either: instances are replaced).
//   - A panic in the policy ends the instance; the host reports the call as a policy_error
//     (which denies) with the panic message, and replaces the instance.
//   - There is no filesystem, network or environment: configuration is compiled in (constants,
//     or variables set with -ldflags "-X main.name=value").
//   - Cost: the host enforces the call's deadline by checking at every loop header, and Go's
//     WebAssembly backend also puts a loop at the top of most functions, so each loop iteration
//     and non-inlined call costs tens of nanoseconds. Keep byte-by-byte scans of long strings off
//     the common path (see policies/readonly-anonymous for a word-at-a-time scan), and avoid
//     allocating per call: the collector runs inside calls too.
package guest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"time"
	"unsafe"
)

// Version is the input and output layout version this package implements (ABI v1).
const Version = 1

// Header is one HTTP header: a lower-case name and its value.
type Header struct {
	Name, Value string
}

// Input is what the host tells the policy about one request: the verified identity and the
// request. Strings point into the host's input buffer (see the package Notes).
type Input struct {
	// Site is the site id (config `sites[].id`).
	Site string
	// Kind is the credential kind: authtoken, browser, server, oauth, impersonation, apikey or
	// anonymous.
	Kind string
	// User is the user as the token names it (a decimal id, "=" and a URL-encoded username, or an
	// OAuth sub); empty when there is none.
	User string
	// ClientID is the OAuth client_id, when there is one.
	ClientID string
	// Scopes are the OAuth scopes, when there are any.
	Scopes []string
	// Method is the HTTP method (upper-case).
	Method string
	// Path is the request path, without the query (normalised as for route rules).
	Path string
	// Query is the raw query string without the "?", with the credential parameters
	// (authtoken, apikey) removed.
	Query string
	// Host is the request's host, lower-case, without the port.
	Host string
	// Origin is the Origin header, when the request has one.
	Origin string
	// Headers are the request headers with lower-case names, in the order received. The host
	// leaves out the headers that carry credentials (authorization, cookie, x-deki-token, ...) and
	// any client-sent x-auth-* header.
	Headers []Header
	// TimeUnixNano is the agent's clock for this request, in Unix nanoseconds (UTC).
	TimeUnixNano int64
}

// Time returns the request time as a time.Time in UTC.
func (in *Input) Time() time.Time { return time.Unix(0, in.TimeUnixNano).UTC() }

// Header returns the value of the first header named name (lower-case) and whether it is there.
func (in *Input) Header(name string) (string, bool) {
	for i := range in.Headers {
		if in.Headers[i].Name == name {
			return in.Headers[i].Value, true
		}
	}
	return "", false
}

// HasScope reports whether the OAuth scopes hold s.
func (in *Input) HasScope(s string) bool {
	for _, sc := range in.Scopes {
		if sc == s {
			return true
		}
	}
	return false
}

// Anonymous reports whether the request carries no identity: kind anonymous, or a Browser API
// Token without an Auth Token (which is anonymous too, SPEC §5). An OAuth application token
// (ClientID but no User) and a Site API Key without a user are not anonymous.
func (in *Input) Anonymous() bool {
	return in.Kind == "anonymous" || in.Kind == "" || (in.Kind == "browser" && in.User == "")
}

// Output is the policy's decision.
type Output struct {
	// Allow lets the request through; false denies it.
	Allow bool
	// Status is the HTTP status of a denial, 400 to 599; 0 means 403. It must be 0 when Allow.
	Status int
	// Reason says why, for a person (the agent sends it as the denial's error_description). At
	// most 256 bytes of UTF-8 without control characters.
	Reason string
	// Headers are set on the upstream request when the request is allowed. Names are lower-case
	// tokens; x-auth-* and the framing headers are reserved (see ABI.md).
	Headers []Header
	// ResponseHeaders are added to the answer to the client (the denial, or the upstream's
	// response when allowed), for example Retry-After.
	ResponseHeaders []Header
}

// Allow returns an Output that allows the request and sets headers on the upstream request.
func Allow(headers ...Header) Output { return Output{Allow: true, Headers: headers} }

// Deny returns an Output that denies the request with status (0 means 403) and reason.
func Deny(status int, reason string) Output {
	return Output{Status: status, Reason: reason}
}

// Level is a log level; the values are those of log/slog.
type Level int32

// Log levels for Log.
const (
	LevelDebug Level = -4
	LevelInfo  Level = 0
	LevelWarn  Level = 4
	LevelError Level = 8
)

var handler func(*Input) Output

// Handle registers fn as the module's policy. Call it once, from an init function.
//
// It also runs a garbage collection: in a WASI reactor, Go's background goroutines (the
// collector's workers among them) run only while the host is calling into the module, so a
// collection left half-done at start-up would keep write barriers on, and every call slow, until
// some later call finished it.
func Handle(fn func(*Input) Output) {
	if fn == nil {
		panic("guest: Handle(nil)")
	}
	if handler != nil {
		panic("guest: Handle called twice")
	}
	handler = fn
	runtime.GC()
}

// ErrInput is wrapped by the errors DecodeInput returns.
var ErrInput = errors.New("guest: malformed input")

// DecodeInput decodes an ABI v1 input record into in, reusing in's slices. The strings of in
// point into b (no copy): they are valid while b is not changed.
//
// It is written for a host that makes every loop and non-inlined call costly (a deadline check
// each): straight-line code with inlined helpers, and one loop per list.
func DecodeInput(b []byte, in *Input) error {
	if len(b) < 12 {
		return fmt.Errorf("%w: %d bytes, shorter than the 12-byte prefix", ErrInput, len(b))
	}
	if v := binary.LittleEndian.Uint32(b); v != Version {
		return fmt.Errorf("%w: layout version %d, this module reads %d", ErrInput, v, Version)
	}
	in.TimeUnixNano = int64(binary.LittleEndian.Uint64(b[4:]))
	off := 12
	in.Site, off = str(b, off)
	in.Kind, off = str(b, off)
	in.User, off = str(b, off)
	in.ClientID, off = str(b, off)
	in.Method, off = str(b, off)
	in.Path, off = str(b, off)
	in.Query, off = str(b, off)
	in.Host, off = str(b, off)
	in.Origin, off = str(b, off)
	var n int
	n, off = count(b, off, 4)
	in.Scopes = in.Scopes[:0]
	for i := 0; i < n; i++ {
		var s string
		s, off = str(b, off)
		in.Scopes = append(in.Scopes, s)
	}
	n, off = count(b, off, 8)
	in.Headers = in.Headers[:0]
	for i := 0; i < n; i++ {
		var h Header
		h.Name, off = str(b, off)
		h.Value, off = str(b, off)
		in.Headers = append(in.Headers, h)
	}
	if off < 0 {
		return fmt.Errorf("%w: truncated (%d bytes)", ErrInput, len(b))
	}
	if off != len(b) {
		return fmt.Errorf("%w: %d trailing bytes", ErrInput, len(b)-off)
	}
	return nil
}

// str reads the string at off and returns it (pointing into b) and the offset after it; -1
// once the record is found short (and from then on). Small enough to be inlined.
func str(b []byte, off int) (string, int) {
	if off < 0 || len(b)-off < 4 {
		return "", -1
	}
	n := int(binary.LittleEndian.Uint32(b[off:]))
	off += 4
	if n > len(b)-off {
		return "", -1
	}
	return unsafe.String(unsafe.SliceData(b[off:]), n), off + n
}

// count reads a list length and checks it against the bytes left (each item takes at least
// minSize bytes), so a bad count cannot make the decoder loop or allocate for long.
func count(b []byte, off, minSize int) (int, int) {
	if off < 0 || len(b)-off < 4 {
		return 0, -1
	}
	n := int(binary.LittleEndian.Uint32(b[off:]))
	off += 4
	if uint64(n)*uint64(minSize) > uint64(len(b)-off) {
		return 0, -1
	}
	return n, off
}

// AppendOutput appends the ABI v1 output record of o to dst. It does not check o: the host
// does (an Output that breaks a rule of ABI.md is a policy_error).
func AppendOutput(dst []byte, o *Output) []byte {
	var flags, status uint32
	if o.Allow {
		flags = 1
	} else {
		status = uint32(o.Status)
	}
	le := binary.LittleEndian
	dst = le.AppendUint32(dst, Version)
	dst = le.AppendUint32(dst, flags)
	dst = le.AppendUint32(dst, status)
	dst = le.AppendUint32(dst, uint32(len(o.Reason)))
	dst = append(dst, o.Reason...)
	dst = le.AppendUint32(dst, uint32(len(o.Headers)))
	for _, h := range o.Headers {
		dst = le.AppendUint32(dst, uint32(len(h.Name)))
		dst = append(dst, h.Name...)
		dst = le.AppendUint32(dst, uint32(len(h.Value)))
		dst = append(dst, h.Value...)
	}
	dst = le.AppendUint32(dst, uint32(len(o.ResponseHeaders)))
	for _, h := range o.ResponseHeaders {
		dst = le.AppendUint32(dst, uint32(len(h.Name)))
		dst = append(dst, h.Name...)
		dst = le.AppendUint32(dst, uint32(len(h.Value)))
		dst = append(dst, h.Value...)
	}
	return dst
}

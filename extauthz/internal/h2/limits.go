package h2

import (
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// abuse is a connection's budget of frames that cost the server without serving a call: a
// token bucket of AbuseBudget tokens refilled at AbuseRefill a second, plus one for every
// answered call. A peer that spends it all gets GOAWAY ENHANCE_YOUR_CALM. Legitimate peers
// send such frames rarely (a keepalive PING now and then, a reset when a request times out),
// so they never come near it; a flood empties it within AbuseBudget frames.
type abuse struct {
	tokens, burst, rate float64
	last                time.Time
	// handedOff counts calls answered by a goroutine that had given the reader role away:
	// their credit, taken by the reader at its next spend (the rest of abuse is the reader's).
	handedOff atomic.Int64
}

func (a *abuse) init(budget, refill int) {
	a.burst, a.rate, a.tokens = float64(budget), float64(refill), float64(budget)
}

// spend takes one token for a frame of kind (a metric label: ping, settings, reset, empty,
// priority, unknown).
func (a *abuse) spend(kind string) error {
	now := time.Now()
	if !a.last.IsZero() {
		a.tokens = min(a.burst, a.tokens+now.Sub(a.last).Seconds()*a.rate)
	}
	a.last = now
	if n := a.handedOff.Swap(0); n > 0 {
		a.tokens = min(a.burst, a.tokens+float64(n))
	}
	a.tokens--
	if a.tokens < 0 {
		return abuseErr(kind, "too many "+kind+" frames that serve no call")
	}
	return nil
}

// creditHandedOff gives back one token for a call answered off the reader's goroutine (a check
// that had to wait): a peer that answers each response with a frame of its own (gRPC-Go's
// BDP pings) must not run out because its calls waited.
func (a *abuse) creditHandedOff() { a.handedOff.Add(1) }

// credit gives back one token for an answered call (the reader's goroutine only).
func (a *abuse) credit() {
	if a.tokens < a.burst {
		a.tokens++
	}
}

// abuseErr ends the connection with ENHANCE_YOUR_CALM; kind names the abuse for the metric.
func abuseErr(kind, reason string) error {
	return connError{code: http2.ErrCodeEnhanceYourCalm, reason: reason, kind: kind}
}

// headerBlock collects the fields of one header block as hpack decodes them, up to the
// decoded size limit (MaxHeaderListSize): past it the block is still decoded, to keep the
// HPACK state, but nothing more is kept.
type headerBlock struct {
	dec       *hpack.Decoder
	max       uint32
	streamID  uint32
	endStream bool
	selfDep   bool // the HEADERS frame's priority named its own stream
	frames    int
	encoded   int
	size      uint32
	truncated bool
	fields    []hpack.HeaderField
}

func (h *headerBlock) init(dec *hpack.Decoder, max uint32) {
	h.dec, h.max = dec, max
}

// start begins the block of a HEADERS frame.
func (h *headerBlock) start(id uint32, endStream, selfDep bool) {
	clear(h.fields)
	*h = headerBlock{dec: h.dec, max: h.max, streamID: id, endStream: endStream, selfDep: selfDep, fields: h.fields[:0]}
	h.dec.SetEmitEnabled(true)
}

// emit is the decoder's field callback.
func (h *headerBlock) emit(f hpack.HeaderField) {
	if h.truncated {
		return
	}
	if h.size += f.Size(); h.size > h.max {
		h.truncated = true
		h.dec.SetEmitEnabled(false)
		return
	}
	h.fields = append(h.fields, f)
}

// reqHeaders are the fields of a request's header block that the server reads, after the
// checks of RFC 9113 §8.2 and §8.3.
type reqHeaders struct {
	method, scheme, path, authority string
	contentType, te, grpcTimeout    string
	grpcEncoding                    string
	contentLength                   int64 // -1: none
	authorities, hosts, timeouts    int
	host                            string
}

// readRequest checks a request's header block and reads the fields the server uses. It fails
// (a stream PROTOCOL_ERROR) on a malformed block: an upper-case or invalid name, an invalid
// value, a pseudo-header after a regular one, twice, unknown or missing, a connection-specific
// field, a TE other than "trailers", or a bad content-length.
func readRequest(fields []hpack.HeaderField, h *reqHeaders) bool {
	*h = reqHeaders{contentLength: -1}
	regular := false
	var seen [4]bool // :method :scheme :path :authority
	for _, f := range fields {
		if !httpguts.ValidHeaderFieldValue(f.Value) {
			return false
		}
		if strings.HasPrefix(f.Name, ":") {
			if regular {
				return false
			}
			var i int
			switch f.Name {
			case ":method":
				i, h.method = 0, f.Value
			case ":scheme":
				i, h.scheme = 1, f.Value
			case ":path":
				i, h.path = 2, f.Value
			case ":authority":
				i, h.authority = 3, f.Value
				h.authorities++
			default: // :status, :protocol (no extended CONNECT) and the unknown
				return false
			}
			if seen[i] {
				return false
			}
			seen[i] = true
			continue
		}
		regular = true
		if !validFieldName(f.Name) {
			return false
		}
		switch f.Name {
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
			return false
		case "te":
			if !strings.EqualFold(f.Value, "trailers") {
				return false
			}
			h.te = f.Value
		case "content-length":
			n, ok := parseContentLength(f.Value)
			if !ok || (h.contentLength >= 0 && n != h.contentLength) {
				return false
			}
			h.contentLength = n
		case "content-type":
			h.contentType = f.Value
		case "grpc-timeout":
			h.grpcTimeout = f.Value
			h.timeouts++
		case "grpc-encoding":
			h.grpcEncoding = f.Value
		case "host":
			h.host = f.Value
			h.hosts++
		}
	}
	if !seen[0] {
		return false
	}
	if h.method == "CONNECT" { // RFC 9113 §8.5: :authority, and no :scheme or :path
		return seen[3] && !seen[1] && !seen[2]
	}
	return seen[1] && seen[2] && h.path != ""
}

// readTrailers checks a request's trailers: regular fields only (RFC 9113 §8.1).
func readTrailers(fields []hpack.HeaderField) bool {
	for _, f := range fields {
		if strings.HasPrefix(f.Name, ":") || !validFieldName(f.Name) || !httpguts.ValidHeaderFieldValue(f.Value) {
			return false
		}
	}
	return true
}

// validFieldName: a token in lower case (RFC 9113 §8.2.1).
func validFieldName(name string) bool {
	if !httpguts.ValidHeaderFieldName(name) {
		return false
	}
	for i := 0; i < len(name); i++ {
		if 'A' <= name[i] && name[i] <= 'Z' {
			return false
		}
	}
	return true
}

func parseContentLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int64(s[i]-'0')
	}
	return n, true
}

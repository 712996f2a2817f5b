package h2

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// gRPC status codes the server itself answers with (google.golang.org/grpc/codes).
const (
	codeOK                = 0
	codeCanceled          = 1
	codeInvalidArgument   = 3
	codeDeadlineExceeded  = 4
	codeResourceExhausted = 8
	codeUnimplemented     = 12
	codeInternal          = 13
	codeUnavailable       = 14
)

// grpcContentType reports whether ct is a gRPC content type with the proto subtype (what
// gRPC-Go's default codec serves): application/grpc, application/grpc+proto, or either with
// parameters.
func grpcContentType(ct string) bool {
	rest, ok := strings.CutPrefix(ct, "application/grpc")
	if !ok {
		return false
	}
	switch {
	case rest == "", rest[0] == ';':
		return true
	case rest[0] == '+':
		sub := rest[1:]
		if i := strings.IndexByte(sub, ';'); i >= 0 {
			sub = sub[:i]
		}
		return sub == "proto"
	}
	return false
}

// decodeTimeout reads a grpc-timeout value: at most 8 digits and a unit (H, M, S, m, u, n).
func decodeTimeout(s string) (time.Duration, error) {
	if len(s) < 2 {
		return 0, fmt.Errorf("transport: timeout string is too short: %q", s)
	}
	if len(s) > 9 {
		return 0, fmt.Errorf("transport: timeout string is too long: %q", s)
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, fmt.Errorf("transport: timeout unit is not recognized: %q", s)
	}
	n, err := strconv.ParseUint(s[:len(s)-1], 10, 64)
	if err != nil {
		return 0, err
	}
	if unit == time.Hour && n > math.MaxInt64/uint64(time.Hour) {
		return time.Duration(math.MaxInt64), nil
	}
	return unit * time.Duration(n), nil
}

// encodeGrpcMessage percent-encodes a grpc-message value as gRPC does: bytes outside
// printable ASCII, and '%', as %XX (invalid UTF-8 as the encoding of U+FFFD).
func encodeGrpcMessage(msg string) string {
	clean := true
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c < ' ' || c > '~' || c == '%' {
			clean = false
			break
		}
	}
	if clean {
		return msg
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for len(msg) > 0 {
		r, size := utf8.DecodeRuneInString(msg)
		enc := msg[:size]
		if r == utf8.RuneError && size == 1 {
			enc = string(utf8.RuneError)
		}
		for i := 0; i < len(enc); i++ {
			c := enc[i]
			if size == 1 && c >= ' ' && c <= '~' && c != '%' {
				b.WriteByte(c)
				continue
			}
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
		msg = msg[size:]
	}
	return b.String()
}

// requestMessage reads the one message of a unary request body framed as gRPC frames it
// (a flag byte, a 4-byte length, the message) and decompresses it when its flag says so.
// A body that does not hold exactly one message, a message over max, or a compression the
// server cannot read gets the status gRPC-Go answers with.
func requestMessage(body []byte, encoding string, max int) ([]byte, *Status) {
	if len(body) == 0 {
		return nil, &Status{codeInternal, "grpc: the client sent no request message"}
	}
	if len(body) < 5 {
		return nil, &Status{codeInternal, "grpc: the request message's frame is truncated"}
	}
	n := binary.BigEndian.Uint32(body[1:5])
	if uint64(n) > uint64(max) {
		return nil, &Status{codeResourceExhausted, fmt.Sprintf("grpc: received message larger than max (%d vs. %d)", n, max)}
	}
	if len(body) < 5+int(n) {
		return nil, &Status{codeInternal, "grpc: the request message's frame is truncated"}
	}
	if len(body) > 5+int(n) {
		return nil, &Status{codeUnimplemented, "grpc: received more than one request message for a unary call"}
	}
	msg := body[5:]
	switch body[0] {
	case 0:
		return msg, nil
	case 1:
		if encoding == "" || encoding == "identity" {
			return nil, &Status{codeInternal, "grpc: compressed flag set with identity or empty encoding"}
		}
		// Only gzip gets here: any other grpc-encoding was refused with the headers.
		out, err := gunzip(msg, max)
		if err != nil {
			return nil, err
		}
		return out, nil
	}
	return nil, &Status{codeInternal, fmt.Sprintf("grpc: received unexpected payload format %d", body[0])}
}

// gunzip decompresses a gzip message, reading at most max+1 bytes of output (a small
// message that inflates to gigabytes is refused, not inflated).
func gunzip(msg []byte, max int) ([]byte, *Status) {
	zr, err := gzip.NewReader(bytes.NewReader(msg))
	if err != nil {
		return nil, &Status{codeInternal, "grpc: failed to decompress the received message: " + err.Error()}
	}
	out, err := io.ReadAll(io.LimitReader(zr, int64(max)+1))
	if err != nil {
		return nil, &Status{codeInternal, "grpc: failed to decompress the received message: " + err.Error()}
	}
	if len(out) > max {
		return nil, &Status{codeResourceExhausted, fmt.Sprintf("grpc: received message after decompression larger than max (%d vs. %d)", len(out), max)}
	}
	return out, nil
}

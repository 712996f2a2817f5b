// Package wire reads ext_authz v3 CheckRequests and writes CheckResponses in the protobuf wire
// format directly, without the generated messages: the agent uses a few fields of a request,
// and answers with a handful of fields. proto.Unmarshal of a CheckRequest (a map of every
// header, reflection, a message per level) and proto.Marshal of a CheckResponse (a message per
// header option, a Struct of Values) were a third of the agent's CPU under load.
//
// The reader walks CheckRequest.attributes.request.http only, and reads there the fields the
// agent uses; everything else is skipped by its length. Where it reads, it follows protobuf's
// rules as proto.Unmarshal does (a later scalar wins, repeated messages merge, a map entry
// without key or value has ""), and refuses what proto.Unmarshal refuses (malformed wire data,
// strings that are not UTF-8). A differential fuzz target checks it against proto.Unmarshal.
package wire

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// HTTP is the part of a CheckRequest's attributes.request.http the agent reads. Its strings
// are slices of one string the decoder makes from the buffer (one allocation for all of them).
type HTTP struct {
	// Present: the request has attributes.request.http (a request without it is refused).
	Present bool
	Method  string
	Path    string
	Host    string
	Scheme  string
	// Headers is the headers map (names as Envoy sends them: lower case).
	Headers map[string]string
	// HeaderMap is header_map, in order: Envoy sends it instead of headers when the filter
	// encodes raw header values. Value is value, or raw_value when value is empty.
	HeaderMap [][2]string
	Size      int64
	Body      string // body (UTF-8)
	RawBody   string // raw_body (bytes)
}

// Field numbers of the messages the reader walks (envoy/service/auth/v3/*.proto,
// envoy/config/core/v3/base.proto).
const (
	checkRequestAttributes = 1
	attributesRequest      = 4
	requestHTTP            = 2
	httpMethod             = 2
	httpHeaders            = 3
	httpPath               = 4
	httpHost               = 5
	httpScheme             = 6
	httpSize               = 9
	httpBody               = 11
	httpRawBody            = 12
	httpHeaderMap          = 13
	headerMapHeaders       = 1
	headerValueKey         = 1
	headerValueValue       = 2
	headerValueRawValue    = 3
	mapEntryKey            = 1
	mapEntryValue          = 2
)

// errMalformed is malformed wire data.
var errMalformed = errors.New("wire: malformed protobuf")

// DecodeCheckRequest reads b, a serialized CheckRequest, into h. The Headers map and the
// HeaderMap slice h already holds are cleared and reused (a caller may pool its HTTP values).
func DecodeCheckRequest(b []byte, h *HTTP) error {
	headers, headerMap := h.Headers, h.HeaderMap[:0]
	clear(headers)
	clear(h.HeaderMap)
	*h = HTTP{Headers: headers, HeaderMap: headerMap}
	s := string(b) // every string field below is a slice of this one copy
	return fields(s, func(num protowire.Number, typ protowire.Type, v string, _ uint64) error {
		if num == checkRequestAttributes && typ == protowire.BytesType {
			return fields(v, func(num protowire.Number, typ protowire.Type, v string, _ uint64) error {
				if num == attributesRequest && typ == protowire.BytesType {
					return fields(v, func(num protowire.Number, typ protowire.Type, v string, _ uint64) error {
						if num == requestHTTP && typ == protowire.BytesType {
							h.Present = true
							return h.decodeHTTP(v)
						}
						return nil
					})
				}
				return nil
			})
		}
		return nil
	})
}

func (h *HTTP) decodeHTTP(s string) error {
	return fields(s, func(num protowire.Number, typ protowire.Type, v string, n uint64) error {
		switch {
		case num == httpSize && typ == protowire.VarintType:
			h.Size = int64(n)
		case typ != protowire.BytesType:
			// A known field with another wire type is an unknown field to protobuf.
		case num == httpMethod:
			return utf8Field(&h.Method, v, "method")
		case num == httpPath:
			return utf8Field(&h.Path, v, "path")
		case num == httpHost:
			return utf8Field(&h.Host, v, "host")
		case num == httpScheme:
			return utf8Field(&h.Scheme, v, "scheme")
		case num == httpBody:
			return utf8Field(&h.Body, v, "body")
		case num == httpRawBody:
			h.RawBody = v
		case num == httpHeaders:
			var key, value string
			err := fields(v, func(num protowire.Number, typ protowire.Type, v string, _ uint64) error {
				switch {
				case typ != protowire.BytesType:
				case num == mapEntryKey:
					return utf8Field(&key, v, "headers key")
				case num == mapEntryValue:
					return utf8Field(&value, v, "headers value")
				}
				return nil
			})
			if err != nil {
				return err
			}
			if h.Headers == nil {
				h.Headers = make(map[string]string, 16)
			}
			h.Headers[key] = value
		case num == httpHeaderMap:
			return fields(v, func(num protowire.Number, typ protowire.Type, v string, _ uint64) error {
				if num != headerMapHeaders || typ != protowire.BytesType {
					return nil
				}
				var key, value, raw string
				err := fields(v, func(num protowire.Number, typ protowire.Type, v string, _ uint64) error {
					switch {
					case typ != protowire.BytesType:
					case num == headerValueKey:
						return utf8Field(&key, v, "header_map key")
					case num == headerValueValue:
						return utf8Field(&value, v, "header_map value")
					case num == headerValueRawValue:
						raw = v
					}
					return nil
				})
				if err != nil {
					return err
				}
				if value == "" {
					value = raw
				}
				h.HeaderMap = append(h.HeaderMap, [2]string{key, value})
				return nil
			})
		}
		return nil
	})
}

func utf8Field(dst *string, v, name string) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("wire: %s is not valid UTF-8", name)
	}
	*dst = v
	return nil
}

// fields calls fn for every field of the message s: its number, wire type, and its bytes
// (length-delimited) or value (varint). Groups and fixed-width fields are skipped.
func fields(s string, fn func(num protowire.Number, typ protowire.Type, v string, n uint64) error) error {
	for len(s) > 0 {
		num, typ, tagLen := consumeTag(s)
		if tagLen < 0 {
			return errMalformed
		}
		s = s[tagLen:]
		switch typ {
		case protowire.VarintType:
			v, n := consumeVarint(s)
			if n < 0 {
				return errMalformed
			}
			s = s[n:]
			if err := fn(num, typ, "", v); err != nil {
				return err
			}
		case protowire.BytesType:
			l, n := consumeVarint(s)
			if n < 0 || l > uint64(len(s)-n) {
				return errMalformed
			}
			v := s[n : n+int(l)]
			s = s[n+int(l):]
			if err := fn(num, typ, v, 0); err != nil {
				return err
			}
		case protowire.Fixed32Type:
			if len(s) < 4 {
				return errMalformed
			}
			s = s[4:]
		case protowire.Fixed64Type:
			if len(s) < 8 {
				return errMalformed
			}
			s = s[8:]
		case protowire.StartGroupType:
			n := protowire.ConsumeFieldValue(num, typ, []byte(s))
			if n < 0 {
				return errMalformed
			}
			s = s[n:]
		default:
			return errMalformed
		}
	}
	return nil
}

// consumeTag reads a field tag: protobuf's rules (field numbers 1 to 2^29-1).
func consumeTag(s string) (protowire.Number, protowire.Type, int) {
	v, n := consumeVarint(s)
	if n < 0 {
		return 0, 0, -1
	}
	num, typ := protowire.DecodeTag(v)
	if num < protowire.MinValidNumber || num > protowire.MaxValidNumber {
		return 0, 0, -1
	}
	return num, typ, n
}

// consumeVarint is protowire.ConsumeVarint on a string (no copy).
func consumeVarint(s string) (uint64, int) {
	var v uint64
	for i := 0; i < len(s) && i < 10; i++ {
		c := s[i]
		if i == 9 && c > 1 {
			return 0, -1 // overflow
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, i + 1
		}
	}
	return 0, -1
}

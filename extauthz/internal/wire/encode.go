package wire

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tokenagent/tokenagent/agent/token"
)

// Response is a CheckResponse as the agent answers: an OK response with headers to set,
// headers and query parameters to remove and response headers to add, or a denied response
// with an HTTP status, headers and a body; dynamic metadata of string values either way.
type Response struct {
	// Code is the google.rpc.Status code.
	Code int32
	// OK selects ok_response; else denied_response.
	OK bool
	// OK response.
	Upstream, ResponseHeaders  []Header
	RemoveHeaders, RemoveQuery []string
	// Denied response.
	HTTPStatus int32
	Headers    []Header
	Body       []byte
	// Metadata is dynamic_metadata: string fields ("" values are left out). For an OK response
	// it is written both in the CheckResponse and, as SPEC §4 asks, in the OkHttpResponse.
	Metadata []Header
}

// Header is a header (or a metadata field): a name and a value.
type Header = token.Header

// Field numbers of the messages the writer writes.
const (
	respStatus          = 1
	respDenied          = 2
	respOK              = 3
	respMetadata        = 4
	statusCode          = 1
	deniedStatus        = 1
	deniedHeaders       = 2
	deniedBody          = 3
	httpStatusCode      = 1
	okHeaders           = 2
	okMetadata          = 3
	okHeadersToRemove   = 5
	okResponseHeaders   = 6
	okQueryToRemove     = 8
	optionHeader        = 1
	optionAppend        = 2
	optionAppendAction  = 3
	boolValue           = 1
	structFields        = 1
	valueString         = 3
	overwriteIfExistsOr = 2 // HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
)

// AppendCheckResponse appends r as a serialized CheckResponse to b.
func AppendCheckResponse(b []byte, r *Response) []byte {
	// status
	st := 0
	if r.Code != 0 {
		st = tagSize(statusCode) + protowire.SizeVarint(uint64(int64(r.Code)))
	}
	b = appendMessageHeader(b, respStatus, st)
	if r.Code != 0 {
		b = protowire.AppendTag(b, statusCode, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(r.Code)))
	}
	md := structSize(r.Metadata)
	if r.OK {
		n := optionsSize(okHeaders, r.Upstream) + stringsSize(okHeadersToRemove, r.RemoveHeaders) +
			optionsSize(okResponseHeaders, r.ResponseHeaders) + stringsSize(okQueryToRemove, r.RemoveQuery)
		if md > 0 {
			n += fieldSize(okMetadata, md)
		}
		b = appendMessageHeader(b, respOK, n)
		b = appendOptions(b, okHeaders, r.Upstream)
		if md > 0 {
			b = appendStruct(b, okMetadata, r.Metadata, md)
		}
		b = appendStrings(b, okHeadersToRemove, r.RemoveHeaders)
		b = appendOptions(b, okResponseHeaders, r.ResponseHeaders)
		b = appendStrings(b, okQueryToRemove, r.RemoveQuery)
	} else {
		hs := 0
		if r.HTTPStatus != 0 {
			hs = tagSize(httpStatusCode) + protowire.SizeVarint(uint64(int64(r.HTTPStatus)))
		}
		n := fieldSize(deniedStatus, hs) + optionsSize(deniedHeaders, r.Headers)
		if len(r.Body) > 0 {
			n += fieldSize(deniedBody, len(r.Body))
		}
		b = appendMessageHeader(b, respDenied, n)
		b = appendMessageHeader(b, deniedStatus, hs)
		if r.HTTPStatus != 0 {
			b = protowire.AppendTag(b, httpStatusCode, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(int64(r.HTTPStatus)))
		}
		b = appendOptions(b, deniedHeaders, r.Headers)
		if len(r.Body) > 0 {
			b = protowire.AppendTag(b, deniedBody, protowire.BytesType)
			b = protowire.AppendBytes(b, r.Body)
		}
	}
	if md > 0 {
		b = appendStruct(b, respMetadata, r.Metadata, md)
	}
	return b
}

func tagSize(num protowire.Number) int { return protowire.SizeTag(num) }

// fieldSize is the size of a length-delimited field of n bytes.
func fieldSize(num protowire.Number, n int) int {
	return tagSize(num) + protowire.SizeBytes(n)
}

func appendMessageHeader(b []byte, num protowire.Number, n int) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendVarint(b, uint64(n))
}

// HeaderValueOption{header: {key, value}, append: {value: false}, append_action:
// OVERWRITE_IF_EXISTS_OR_ADD}: the header is set, overwriting the client's, said both ways
// Envoy understands.
func optionSize(h Header) (option, header int) {
	header = stringSize(headerValueKey, h.Name) + stringSize(headerValueValue, h.Value)
	option = fieldSize(optionHeader, header) + fieldSize(optionAppend, 0) +
		tagSize(optionAppendAction) + protowire.SizeVarint(overwriteIfExistsOr)
	return option, header
}

func optionsSize(num protowire.Number, hs []Header) int {
	n := 0
	for _, h := range hs {
		o, _ := optionSize(h)
		n += fieldSize(num, o)
	}
	return n
}

func appendOptions(b []byte, num protowire.Number, hs []Header) []byte {
	for _, h := range hs {
		o, hv := optionSize(h)
		b = appendMessageHeader(b, num, o)
		b = appendMessageHeader(b, optionHeader, hv)
		b = appendString(b, headerValueKey, h.Name)
		b = appendString(b, headerValueValue, h.Value)
		b = appendMessageHeader(b, optionAppend, 0) // BoolValue{value: false}: no fields
		b = protowire.AppendTag(b, optionAppendAction, protowire.VarintType)
		b = protowire.AppendVarint(b, overwriteIfExistsOr)
	}
	return b
}

// stringSize is a string field's size; proto3 leaves empty strings out.
func stringSize(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return fieldSize(num, len(s))
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// stringsSize is a repeated string field's size (every element written, empty ones too).
func stringsSize(num protowire.Number, ss []string) int {
	n := 0
	for _, s := range ss {
		n += fieldSize(num, len(s))
	}
	return n
}

func appendStrings(b []byte, num protowire.Number, ss []string) []byte {
	for _, s := range ss {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	return b
}

// A google.protobuf.Struct of string Values: each field a map entry {key, Value{string_value}}.
func entrySize(f Header) (entry, value int) {
	value = fieldSize(valueString, len(f.Value))
	entry = stringSize(mapEntryKey, f.Name) + fieldSize(mapEntryValue, value)
	return entry, value
}

// structSize is the size of the Struct's contents, 0 when it has no field (then it is left out).
func structSize(fs []Header) int {
	n := 0
	for _, f := range fs {
		if f.Value == "" {
			continue
		}
		e, _ := entrySize(f)
		n += fieldSize(structFields, e)
	}
	return n
}

func appendStruct(b []byte, num protowire.Number, fs []Header, size int) []byte {
	b = appendMessageHeader(b, num, size)
	for _, f := range fs {
		if f.Value == "" {
			continue
		}
		e, v := entrySize(f)
		b = appendMessageHeader(b, structFields, e)
		b = appendString(b, mapEntryKey, f.Name)
		b = appendMessageHeader(b, mapEntryValue, v)
		b = protowire.AppendTag(b, valueString, protowire.BytesType)
		b = protowire.AppendString(b, f.Value)
	}
	return b
}

// Valid reports a string protobuf would refuse to write (proto3 strings are UTF-8): a header,
// a header or query parameter to remove, a metadata field, the body.
func (r *Response) Valid() error {
	for _, list := range [][]Header{r.Upstream, r.ResponseHeaders, r.Headers, r.Metadata} {
		for _, h := range list {
			if !utf8.ValidString(h.Name) || !utf8.ValidString(h.Value) {
				return fmt.Errorf("wire: header or metadata %q is not valid UTF-8", h.Name)
			}
		}
	}
	for _, list := range [][]string{r.RemoveHeaders, r.RemoveQuery} {
		for _, s := range list {
			if !utf8.ValidString(s) {
				return fmt.Errorf("wire: %q is not valid UTF-8", s)
			}
		}
	}
	if !utf8.Valid(r.Body) {
		return errors.New("wire: the body is not valid UTF-8")
	}
	return nil
}

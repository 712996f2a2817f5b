package opa

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tokenagent/tokenagent/plugins/internal/output"
)

// Builtin is a built-in function OPA's WebAssembly leaves to the host. Arguments and the result
// are JSON values as encoding/json decodes them (numbers as json.Number). An error makes the call
// undefined, as in OPA's own (non-strict) evaluation.
type Builtin struct {
	// Arity is the number of arguments.
	Arity int
	// Call computes the result for one evaluation.
	Call func(ev *Evaluation, args []any) (any, error)
}

// Evaluation is what the built-ins of one evaluation share: its time, and the lines print()
// made, for the host to log.
type Evaluation struct {
	// Now is the evaluation's time (time.now_ns): the request's, the same for every call.
	Now time.Time
	// Printed are the lines of print() calls since the host last took them.
	Printed []string
}

// builtins are the built-ins the host provides: those SPEC §5a names that OPA's modules do
// not carry (time.now_ns, io.jwt.decode; base64url.decode, json.unmarshal and regex.match are
// compiled into the modules), and sprintf, urlquery.encode/decode and time.parse_rfc3339_ns,
// which policies written for OPA-Envoy use. A module that needs another one is refused at load,
// naming it.
var builtins = map[string]Builtin{
	// The evaluation's time: the request's (Input.Time), the same for every call in one
	// evaluation, as OPA's.
	"time.now_ns": {0, func(ev *Evaluation, _ []any) (any, error) {
		return json.Number(strconv.FormatInt(ev.Now.UnixNano(), 10)), nil
	}},
	"io.jwt.decode":         {1, jwtDecode},
	"time.parse_rfc3339_ns": {1, parseRFC3339},
	"sprintf":               {2, sprintf},
	"urlquery.encode": {1, func(_ *Evaluation, args []any) (any, error) {
		s, ok := args[0].(string)
		if !ok {
			return nil, errors.New("urlquery.encode: not a string")
		}
		return url.QueryEscape(s), nil
	}},
	"urlquery.decode": {1, func(_ *Evaluation, args []any) (any, error) {
		s, ok := args[0].(string)
		if !ok {
			return nil, errors.New("urlquery.decode: not a string")
		}
		return url.QueryUnescape(s)
	}},
	// print(), in a module built with `opa build --wasm-include-print` (without it, opa
	// build drops print calls).
	"internal.print": {1, internalPrint},
}

// maxPrintLines bounds the lines one print() call makes (each operand that is a set of several
// values multiplies them, as in OPA).
const maxPrintLines = 16

// internalPrint is OPA's print(): its operand is an array holding, for each argument, the set
// of its values (empty when the argument is undefined). One line is made per combination of
// values, the arguments separated by a space: a string as it is, "<undefined>" for an undefined
// argument, any other value as JSON. The lines go to the agent's debug log (rate limited, cut
// to the log line limit); the input holds no credential (SPEC §5), so neither can they. It is
// always defined, so a print never changes a decision.
func internalPrint(ev *Evaluation, args []any) (any, error) {
	operands, ok := args[0].([]any)
	if !ok {
		return true, nil
	}
	parts := make([]string, len(operands))
	var walk func(i int)
	walk = func(i int) {
		if len(ev.Printed) >= maxPrintLines {
			return
		}
		if i == len(operands) {
			line := strings.Join(parts, " ")
			if len(line) > output.MaxLogBytes {
				line = strings.ToValidUTF8(line[:output.MaxLogBytes], "") + "..."
			}
			ev.Printed = append(ev.Printed, output.Sanitize([]byte(line)))
			return
		}
		values, _ := operands[i].([]any) // a set is dumped as a JSON array
		if len(values) == 0 {
			parts[i] = "<undefined>"
			walk(i + 1)
			return
		}
		for _, v := range values {
			parts[i] = printValue(v)
			walk(i + 1)
		}
	}
	walk(0)
	return true, nil
}

// printValue writes one print() operand value: a string as it is, anything else as JSON.
func printValue(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// sprintf is OPA's sprintf: Go's fmt.Sprintf with integers as int64 (or big.Int), other
// numbers as float64, strings as they are, and any other value in Rego's notation.
func sprintf(_ *Evaluation, args []any) (any, error) {
	format, ok := args[0].(string)
	if !ok {
		return nil, errors.New("sprintf: the format is not a string")
	}
	list, ok := args[1].([]any)
	if !ok {
		return nil, errors.New("sprintf: the values are not an array")
	}
	vals := make([]any, len(list))
	for i, v := range list {
		switch v := v.(type) {
		case json.Number:
			ns := string(v)
			switch {
			case strings.ContainsAny(ns, ".eE"):
				if f, err := strconv.ParseFloat(ns, 64); err == nil {
					vals[i] = f
				} else {
					vals[i] = ns
				}
			default:
				if n, err := strconv.ParseInt(ns, 10, 64); err == nil {
					vals[i] = n
				} else if b, ok := new(big.Int).SetString(ns, 10); ok {
					vals[i] = b
				} else {
					vals[i] = ns
				}
			}
		case string:
			vals[i] = v
		default:
			vals[i] = regoString(v)
		}
	}
	return fmt.Sprintf(format, vals...), nil
}

// regoString writes a JSON value in Rego's notation: strings quoted, ", " between elements,
// ": " in objects, keys sorted.
func regoString(v any) string {
	var b strings.Builder
	var write func(any)
	write = func(v any) {
		switch v := v.(type) {
		case nil:
			b.WriteString("null")
		case bool:
			b.WriteString(strconv.FormatBool(v))
		case json.Number:
			b.WriteString(string(v))
		case string:
			b.WriteString(strconv.Quote(v))
		case []any:
			b.WriteByte('[')
			for i, e := range v {
				if i > 0 {
					b.WriteString(", ")
				}
				write(e)
			}
			b.WriteByte(']')
		case map[string]any:
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			b.WriteByte('{')
			for i, k := range keys {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString(strconv.Quote(k) + ": ")
				write(v[k])
			}
			b.WriteByte('}')
		}
	}
	write(v)
	return b.String()
}

// Lookup returns the built-in of that name, and whether the host provides it.
func Lookup(name string) (Builtin, bool) {
	b, ok := builtins[name]
	return b, ok
}

// BuiltinNames lists the built-ins the host provides, sorted.
func BuiltinNames() []string {
	out := make([]string, 0, len(builtins))
	for n := range builtins {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// jwtDecode is io.jwt.decode: a compact JWS, unverified, as [header, payload, signature in hex].
func jwtDecode(_ *Evaluation, args []any) (any, error) {
	s, ok := args[0].(string)
	if !ok {
		return nil, errors.New("io.jwt.decode: the token is not a string")
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return nil, errors.New("io.jwt.decode: not a compact JWS (three parts)")
	}
	decode := func(p string) ([]byte, error) {
		return base64.RawURLEncoding.DecodeString(strings.TrimRight(p, "="))
	}
	var out [3]any
	for i, p := range parts[:2] {
		b, err := decode(p)
		if err != nil {
			return nil, fmt.Errorf("io.jwt.decode: part %d: %w", i+1, err)
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil || dec.More() {
			return nil, fmt.Errorf("io.jwt.decode: part %d is not a JSON object", i+1)
		}
		out[i] = obj
	}
	sig, err := decode(parts[2])
	if err != nil {
		return nil, fmt.Errorf("io.jwt.decode: signature: %w", err)
	}
	out[2] = hex.EncodeToString(sig)
	return out[:], nil
}

// parseRFC3339 is time.parse_rfc3339_ns.
func parseRFC3339(_ *Evaluation, args []any) (any, error) {
	s, ok := args[0].(string)
	if !ok {
		return nil, errors.New("time.parse_rfc3339_ns: not a string")
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return nil, err
	}
	return json.Number(strconv.FormatInt(t.UnixNano(), 10)), nil
}

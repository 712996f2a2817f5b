package plugins

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tetratelabs/wazero/api"
)

// opaBuiltin is a built-in function OPA's WebAssembly leaves to the host. Arguments and the
// result are JSON values as encoding/json decodes them (numbers as json.Number). An error makes
// the call undefined, as in OPA's own (non-strict) evaluation.
type opaBuiltin struct {
	arity int
	fn    func(o *opaInstance, args []any) (any, error)
}

// hostBuiltins are the built-ins the host provides: those SPEC §5a names that OPA's modules do
// not carry (time.now_ns, io.jwt.decode; base64url.decode, json.unmarshal and regex.match are
// compiled into the modules), and sprintf, urlquery.encode/decode and time.parse_rfc3339_ns,
// which policies written for OPA-Envoy use. A module that needs another one is refused at load,
// naming it.
var hostBuiltins = map[string]opaBuiltin{
	// The evaluation's time: the request's (Input.Time), the same for every call in one
	// evaluation, as OPA's.
	"time.now_ns": {0, func(o *opaInstance, _ []any) (any, error) {
		return json.Number(strconv.FormatInt(o.now.UnixNano(), 10)), nil
	}},
	"io.jwt.decode":         {1, jwtDecode},
	"time.parse_rfc3339_ns": {1, parseRFC3339},
	"sprintf":               {2, sprintf},
	"urlquery.encode": {1, func(_ *opaInstance, args []any) (any, error) {
		s, ok := args[0].(string)
		if !ok {
			return nil, errors.New("urlquery.encode: not a string")
		}
		return url.QueryEscape(s), nil
	}},
	"urlquery.decode": {1, func(_ *opaInstance, args []any) (any, error) {
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
func internalPrint(o *opaInstance, args []any) (any, error) {
	operands, ok := args[0].([]any)
	if !ok {
		return true, nil
	}
	parts := make([]string, len(operands))
	var walk func(i int)
	walk = func(i int) {
		if len(o.printed) >= maxPrintLines {
			return
		}
		if i == len(operands) {
			line := strings.Join(parts, " ")
			if len(line) > maxLogBytes {
				line = strings.ToValidUTF8(line[:maxLogBytes], "") + "..."
			}
			o.printed = append(o.printed, sanitize([]byte(line)))
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
func sprintf(_ *opaInstance, args []any) (any, error) {
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

func hostBuiltinNames() []string {
	out := make([]string, 0, len(hostBuiltins))
	for n := range hostBuiltins {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// jwtDecode is io.jwt.decode: a compact JWS, unverified, as [header, payload, signature in hex].
func jwtDecode(_ *opaInstance, args []any) (any, error) {
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
func parseRFC3339(_ *opaInstance, args []any) (any, error) {
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

// instantiateOPAEnv adds the "env" host module every OPA instance imports its functions from:
// opa_abort and opa_println, and opa_builtin0..4, which find the calling instance's built-in
// table.
func (e *Engine) instantiateOPAEnv(ctx context.Context) error {
	i32 := api.ValueTypeI32
	b := e.rt.NewHostModuleBuilder(opaEnv)
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(e.opaAbort), []api.ValueType{i32}, nil).Export("opa_abort")
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(e.opaPrintln), []api.ValueType{i32}, nil).Export("opa_println")
	for n := range 5 {
		b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
			e.opaBuiltin(ctx, mod, n, stack)
		}), opaImports[fmt.Sprintf("opa_builtin%d", n)], []api.ValueType{i32}).Export(fmt.Sprintf("opa_builtin%d", n))
	}
	_, err := b.Instantiate(ctx)
	return err
}

// opaInstanceOf finds the host state of the calling OPA instance.
func (e *Engine) opaInstanceOf(mod api.Module) *instance {
	v, ok := e.instances.Load(mod)
	if !ok || v.(*instance).opa == nil {
		panic(errors.New("an OPA host function was called by a module the host did not instantiate"))
	}
	return v.(*instance)
}

// opaAbort stops the evaluation: the call fails (a trap, kind trap) with the module's message.
func (e *Engine) opaAbort(_ context.Context, mod api.Module, stack []uint64) {
	msg, err := cString(mod.Memory(), uint32(stack[0]), 1024)
	if err != nil {
		panic(fmt.Errorf("opa_abort (its message unreadable: %v)", err))
	}
	panic(fmt.Errorf("opa_abort: %s", sanitize(msg)))
}

// opaPrintln logs a line of the module's opa_println (OPA's runtime writes its own
// diagnostics there), rate-limited as tokenagent.log lines.
func (e *Engine) opaPrintln(ctx context.Context, mod api.Module, stack []uint64) {
	inst := e.opaInstanceOf(mod)
	msg, err := cString(mod.Memory(), uint32(stack[0]), maxLogBytes)
	if err != nil {
		msg = []byte("(unreadable: " + err.Error() + ")")
	}
	e.policyLine(ctx, inst.ver.mod, slog.LevelInfo, sanitize(msg))
}

// opaBuiltin dispatches opa_builtin<n>(id, ctx, args...) to the host function: the arguments
// are read as JSON, the result written back and parsed; 0 (undefined) when the function fails.
func (e *Engine) opaBuiltin(ctx context.Context, mod api.Module, n int, stack []uint64) {
	inst := e.opaInstanceOf(mod)
	o := inst.opa
	b, ok := o.mod.builtins[int32(uint32(stack[0]))]
	if !ok || b.arity != n {
		panic(fmt.Errorf("opa_builtin%d: unknown built-in id %d", n, int32(uint32(stack[0]))))
	}
	args := o.args[:n]
	for i := range n {
		raw, err := o.readJSON(ctx, mod.Memory(), uint32(stack[2+i]), MaxInputBytes)
		if err != nil {
			panic(fmt.Errorf("opa_builtin%d: argument %d: %v", n, i+1, err))
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&args[i]); err != nil {
			panic(fmt.Errorf("opa_builtin%d: argument %d: %v", n, i+1, err))
		}
	}
	res, err := b.fn(o, args)
	clear(args)
	for _, line := range o.printed { // print() lines, logged by the host, not the built-in
		e.policyLine(ctx, inst.ver.mod, slog.LevelDebug, line)
	}
	o.printed = o.printed[:0]
	if err != nil {
		stack[0] = 0 // undefined
		return
	}
	out, err := json.Marshal(res)
	if err != nil {
		panic(fmt.Errorf("opa_builtin%d: result: %v", n, err))
	}
	addr, err := o.writeJSON(ctx, mod.Memory(), out)
	if err != nil {
		panic(fmt.Errorf("opa_builtin%d: result: %v", n, err))
	}
	stack[0] = uint64(addr)
}

package plugins

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// OPA's WebAssembly ABI 1.x (https://www.openpolicyagent.org/docs/wasm), the second kind of
// module the engine runs, chosen by what a module exports: Rego compiled by
// `opa build -t wasm` (SPEC §5a). The host's side, in short:
//
//   - the module imports env.memory (the host defines it instead, see opa_memory.go) and the
//     functions env.opa_abort, env.opa_println and env.opa_builtin0..4, which the engine's
//     "env" host module provides to every OPA instance;
//   - at instantiation the host reads the module's built-ins (refusing the module when one is
//     not provided) and entrypoints, and loads the bundle's data once (opa_malloc,
//     opa_json_parse), keeping the heap pointer after it;
//   - each evaluation writes the input JSON at that heap pointer and calls opa_eval (ABI 1.2+;
//     older modules go through the evaluation context exports), which starts its heap after
//     the input: every evaluation reuses the same memory, nothing accumulates.
const (
	opaEnv        = "env"
	opaMalloc     = "opa_malloc"
	opaJSONParse  = "opa_json_parse"
	opaJSONDump   = "opa_json_dump"
	opaHeapGet    = "opa_heap_ptr_get"
	opaHeapSet    = "opa_heap_ptr_set"
	opaEval       = "opa_eval"
	opaBuiltins   = "builtins"
	opaEntries    = "entrypoints"
	opaStash      = "opa_heap_blocks_stash"
	opaABIVersion = "opa_wasm_abi_version"
	opaABIMinor   = "opa_wasm_abi_minor_version"
)

// The evaluation-context exports, for modules without opa_eval (ABI 1.0 and 1.1).
var opaCtxExports = []string{"opa_eval_ctx_new", "opa_eval_ctx_set_input", "opa_eval_ctx_set_data",
	"opa_eval_ctx_set_entrypoint", "opa_eval_ctx_get_result", "eval"}

// isOPA reports whether a compiled module is one of OPA's (it exports opa_malloc).
func isOPA(cm wazero.CompiledModule) bool {
	_, ok := cm.ExportedFunctions()[opaMalloc]
	return ok
}

// opaModule is what one compiled OPA module needs beside its code: the bundle's data, the
// entrypoint to evaluate, and the host built-ins it calls, resolved at its first instance.
type opaModule struct {
	data       []byte
	entrypoint int32
	entryName  string
	builtins   map[int32]opaBuiltin
	fast       bool // opa_eval: one call per evaluation
}

// opaInstance is an OPA instance's host state.
type opaInstance struct {
	mod                                           *opaModule
	malloc, parse, dump, heapGet, heapSet, evalFn api.Function
	ctxFns                                        []api.Function // opaCtxExports, for modules without opa_eval
	dataAddr, dataHeap                            uint32
	now                                           time.Time    // the evaluation's time (time.now_ns)
	input                                         bytes.Buffer // the evaluation's input JSON
	args                                          [4]any       // a built-in call's decoded arguments
	printed                                       []string     // lines of a print() call, for the host to log
}

// checkOPA reports every way cm falls short of OPA's ABI as the host runs it.
func checkOPA(cm wazero.CompiledModule, memMin, memLimit uint32) error {
	var problems []string
	fns := cm.ExportedFunctions()
	for _, name := range []string{opaMalloc, opaJSONParse, opaJSONDump, opaHeapGet, opaHeapSet, opaBuiltins, opaEntries} {
		if _, ok := fns[name]; !ok {
			problems = append(problems, "no "+name+" export")
		}
	}
	if _, ok := fns[opaEval]; !ok {
		for _, name := range opaCtxExports {
			if _, ok := fns[name]; !ok {
				problems = append(problems, "neither opa_eval nor "+name+" exported")
			}
		}
	}
	i32 := api.ValueTypeI32
	for _, f := range cm.ImportedFunctions() {
		mod, name, _ := f.Import()
		want, ok := opaImports[name]
		switch {
		case mod != opaEnv || !ok:
			problems = append(problems, fmt.Sprintf("imports %s.%s, which the host does not provide to OPA modules", mod, name))
		case !sameTypes(f.ParamTypes(), want) || len(f.ResultTypes()) > 1 ||
			(strings.HasPrefix(name, "opa_builtin") != (len(f.ResultTypes()) == 1)) ||
			(len(f.ResultTypes()) == 1 && f.ResultTypes()[0] != i32):
			problems = append(problems, fmt.Sprintf("import %s.%s has type %s", mod, name, typeString(f.ParamTypes(), f.ResultTypes())))
		}
	}
	if len(cm.ImportedMemories()) > 0 {
		problems = append(problems, "imports a memory the host did not define")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: OPA module: %s", ErrABI, strings.Join(problems, "; "))
	}
	if memMin > memLimit {
		return fmt.Errorf("memory starts at %d pages, over the module's limit of %d pages (MemoryLimitPages)", memMin, memLimit)
	}
	return nil
}

// opaImports are the functions the engine's env module provides, with their parameters.
var opaImports = func() map[string][]api.ValueType {
	i32 := api.ValueTypeI32
	m := map[string][]api.ValueType{"opa_abort": {i32}, "opa_println": {i32}}
	for n := range 5 {
		params := []api.ValueType{i32, i32}
		for range n {
			params = append(params, i32)
		}
		m[fmt.Sprintf("opa_builtin%d", n)] = params
	}
	return m
}()

// setupOPA prepares a new instance of an OPA module: its functions, built-ins and entrypoint
// (resolved once per module), and the bundle's data in its memory.
func (v *version) setupOPA(ctx context.Context, inst *instance) error {
	mod := inst.mod
	if g := mod.ExportedGlobal(opaABIVersion); g != nil && g.Get() != 1 {
		return fmt.Errorf("%w: OPA WebAssembly ABI version %d; the host runs 1.x", ErrABI, g.Get())
	}
	o := &opaInstance{mod: v.opa}
	o.malloc, o.parse, o.dump = mod.ExportedFunction(opaMalloc), mod.ExportedFunction(opaJSONParse), mod.ExportedFunction(opaJSONDump)
	o.heapGet, o.heapSet, o.evalFn = mod.ExportedFunction(opaHeapGet), mod.ExportedFunction(opaHeapSet), mod.ExportedFunction(opaEval)
	if !v.opa.fast {
		for _, name := range opaCtxExports {
			o.ctxFns = append(o.ctxFns, mod.ExportedFunction(name))
		}
	}
	inst.opa = o
	if v.opa.builtins == nil {
		if err := v.resolveOPA(ctx, inst); err != nil {
			return err
		}
	}
	// The data, once: parsed into the heap; evaluations start their heap after it.
	p, err := o.writeJSON(ctx, inst.mem, v.opa.data)
	if err != nil {
		return fmt.Errorf("loading data.json: %w", err)
	}
	if o.dataAddr = p; p == 0 {
		return errors.New("loading data.json: the module could not parse it")
	}
	if f := mod.ExportedFunction(opaStash); f != nil { // ABI 1.3: keep free blocks from eval's reset
		if _, err := f.Call(ctx); err != nil {
			return fmt.Errorf("%s: %w", opaStash, err)
		}
	}
	r, err := o.heapGet.Call(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", opaHeapGet, err)
	}
	o.dataHeap = uint32(r[0])
	return nil
}

// resolveOPA reads the module's built-ins and entrypoints at its first instance: a built-in the
// host does not provide, or an entrypoint that is not there, refuses the module.
func (v *version) resolveOPA(ctx context.Context, inst *instance) error {
	o := inst.opa
	names := func(export string) (map[string]int32, error) {
		r, err := inst.mod.ExportedFunction(export).Call(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", export, err)
		}
		b, err := o.readJSON(ctx, inst.mem, uint32(r[0]), 1<<20)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", export, err)
		}
		m := map[string]int32{}
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("%s: %w", export, err)
		}
		return m, nil
	}
	bs, err := names(opaBuiltins)
	if err != nil {
		return err
	}
	table := map[int32]opaBuiltin{}
	var missing []string
	for name, id := range bs {
		b, ok := hostBuiltins[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		table[id] = b
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("the policy needs the built-in function %s, which the host does not provide (it provides %s)",
			strings.Join(missing, ", "), strings.Join(hostBuiltinNames(), ", "))
	}
	eps, err := names(opaEntries)
	if err != nil {
		return err
	}
	want := strings.ReplaceAll(strings.TrimPrefix(v.mod.opts.Entrypoint, "data."), ".", "/")
	var all []string
	for name := range eps {
		all = append(all, name)
	}
	sort.Strings(all)
	switch {
	case want == "" && len(all) == 1:
		want = all[0]
	case want == "":
		return fmt.Errorf("the bundle has %d entrypoints (%s): name one with policy_entrypoint", len(all), strings.Join(all, ", "))
	}
	id, ok := eps[want]
	if !ok {
		return fmt.Errorf("the bundle has no entrypoint %q (it has %s)", want, strings.Join(all, ", "))
	}
	v.opa.entrypoint, v.opa.entryName, v.opa.builtins = id, want, table
	return nil
}

// writeJSON copies JSON into the module's heap and parses it there: the value's address (0 when
// the module could not parse it).
func (o *opaInstance) writeJSON(ctx context.Context, mem api.Memory, b []byte) (uint32, error) {
	r, err := o.malloc.Call(ctx, uint64(len(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", opaMalloc, err)
	}
	p := uint32(r[0])
	if !mem.Write(p, b) {
		return 0, fmt.Errorf("%s returned %d, outside the memory", opaMalloc, p)
	}
	r, err = o.parse.Call(ctx, uint64(p), uint64(len(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", opaJSONParse, err)
	}
	return uint32(r[0]), nil
}

// readJSON dumps the value at addr as JSON and returns it (at most limit bytes).
func (o *opaInstance) readJSON(ctx context.Context, mem api.Memory, addr uint32, limit int) ([]byte, error) {
	r, err := o.dump.Call(ctx, uint64(addr))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", opaJSONDump, err)
	}
	return cString(mem, uint32(r[0]), limit)
}

// cString reads the NUL-terminated string at p, at most limit bytes long.
func cString(mem api.Memory, p uint32, limit int) ([]byte, error) {
	size := mem.Size()
	if p >= size {
		return nil, fmt.Errorf("address %d is outside the memory (%d bytes)", p, size)
	}
	b, _ := mem.Read(p, min(size-p, uint32(limit)+1))
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		if len(b) > limit {
			return nil, fmt.Errorf("over %d bytes", limit)
		}
		return nil, errors.New("not terminated")
	}
	return b[:i], nil
}

// opaInput is the input document of SPEC §5a: OPA-Envoy's, plus identity and time.
type opaInput struct {
	Attributes  opaAttributes       `json:"attributes"`
	ParsedPath  []string            `json:"parsed_path"`
	ParsedQuery map[string][]string `json:"parsed_query"`
	Identity    opaIdentity         `json:"identity"`
	Time        int64               `json:"time"`
}

type opaAttributes struct {
	Request struct {
		HTTP opaHTTP `json:"http"`
	} `json:"request"`
}

type opaHTTP struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Host    string            `json:"host"`
	Scheme  string            `json:"scheme"`
	Headers map[string]string `json:"headers"`
}

type opaIdentity struct {
	Site     string   `json:"site"`
	Kind     string   `json:"kind"`
	User     string   `json:"user"`
	ClientID string   `json:"client_id"`
	Scopes   []string `json:"scopes"`
}

// buildInput writes in as OPA's input document into buf.
func buildInput(buf *bytes.Buffer, in *Input, now time.Time) error {
	doc := opaInput{Time: now.UnixNano(), ParsedPath: parsedPath(in.Path), ParsedQuery: map[string][]string{},
		Identity: opaIdentity{Site: in.Site, Kind: in.Kind, User: in.User, ClientID: in.ClientID, Scopes: in.Scopes}}
	if doc.Identity.Scopes == nil {
		doc.Identity.Scopes = []string{}
	}
	h := &doc.Attributes.Request.HTTP
	h.Method, h.Path, h.Host, h.Scheme = in.Method, in.Path, in.Host, in.Scheme
	if in.Query != "" {
		h.Path += "?" + in.Query
		if q, err := url.ParseQuery(in.Query); err == nil {
			doc.ParsedQuery = q
		}
	}
	h.Headers = make(map[string]string, len(in.Headers))
	for _, kv := range in.Headers {
		h.Headers[kv[0]] = kv[1]
	}
	buf.Reset()
	return jsonv2.MarshalWrite(buf, &doc)
}

// parsedPath splits a path into its segments, each decoded, as OPA-Envoy's parsed_path
// ("/" is [""]).
func parsedPath(p string) []string {
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i, s := range segs {
		if d, err := url.PathUnescape(s); err == nil {
			segs[i] = d
		}
	}
	return segs
}

// callOPA evaluates in on an OPA instance and reads its result as OPA-Envoy does.
func (inst *instance) callOPA(ctx context.Context, in *Input, now time.Time) (Output, error) {
	m := inst.ver.mod
	o := inst.opa
	if err := buildInput(&o.input, in, now); err != nil {
		return Output{}, m.errorf(KindBadOutput, "encoding the input: %w", err)
	}
	n := o.input.Len()
	if n > MaxInputBytes {
		return Output{}, m.errorf(KindInputTooLarge, "the input document would be %d bytes, over %d", n, MaxInputBytes)
	}
	o.now = now
	inst.output.reset()
	inst.memory.refused = false
	deadline := m.opts.Deadline
	cctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	fail := func(err error) error {
		kind, msg := inst.describe(ctx, err, deadline)
		return &Error{Policy: m.name, Kind: kind, Err: errors.New(msg)}
	}
	var resAddr uint32
	if o.mod.fast {
		// The input goes at the heap pointer after the data; opa_eval's heap starts after it.
		if need := uint64(o.dataHeap) + uint64(n); need > uint64(inst.mem.Size()) {
			if _, ok := inst.mem.Grow(uint32((need - uint64(inst.mem.Size()) + 65535) >> 16)); !ok {
				return Output{}, m.errorf(KindMemory, "the input document of %d bytes does not fit in the module's memory limit", n)
			}
		}
		if !inst.mem.Write(o.dataHeap, o.input.Bytes()) {
			return Output{}, m.errorf(KindMemory, "the input document does not fit in the module's memory")
		}
		s := inst.stack[:]
		s[0], s[1], s[2], s[3], s[4], s[5], s[6] = 0, uint64(uint32(o.mod.entrypoint)), uint64(o.dataAddr),
			uint64(o.dataHeap), uint64(n), uint64(o.dataHeap)+uint64(n), 0
		if err := o.evalFn.CallWithStack(cctx, s); err != nil {
			return Output{}, fail(err)
		}
		resAddr = uint32(s[0])
	} else {
		addr, err := o.evalCtx(cctx, inst)
		if err != nil {
			return Output{}, fail(err)
		}
		resAddr = addr
	}
	b, err := cString(inst.mem, resAddr, m.opts.MaxOutputBytes)
	if err != nil {
		return Output{}, m.errorf(KindBadOutput, "the result: %v", err)
	}
	out, err := decodeOPAResult(b)
	if err != nil {
		return Output{}, m.errorf(KindBadOutput, "%w", err)
	}
	return out, nil
}

// evalCtx evaluates through the evaluation context exports (modules without opa_eval) and
// returns the address of the result set's JSON.
func (o *opaInstance) evalCtx(ctx context.Context, inst *instance) (uint32, error) {
	newCtx, setInput, setData, setEntry, getResult, eval := o.ctxFns[0], o.ctxFns[1], o.ctxFns[2], o.ctxFns[3], o.ctxFns[4], o.ctxFns[5]
	if _, err := o.heapSet.Call(ctx, uint64(o.dataHeap)); err != nil {
		return 0, err
	}
	in, err := o.writeJSON(ctx, inst.mem, o.input.Bytes())
	if err != nil {
		return 0, err
	}
	if in == 0 {
		return 0, errors.New("the module could not parse the input document")
	}
	r, err := newCtx.Call(ctx)
	if err != nil {
		return 0, err
	}
	c := r[0]
	for _, call := range []struct {
		f    api.Function
		args []uint64
	}{
		{setInput, []uint64{c, uint64(in)}},
		{setData, []uint64{c, uint64(o.dataAddr)}},
		{setEntry, []uint64{c, uint64(uint32(o.mod.entrypoint))}},
		{eval, []uint64{c}},
	} {
		if _, err := call.f.Call(ctx, call.args...); err != nil {
			return 0, err
		}
	}
	r, err = getResult.Call(ctx, c)
	if err != nil {
		return 0, err
	}
	r, err = o.dump.Call(ctx, r[0])
	if err != nil {
		return 0, err
	}
	return uint32(r[0]), nil
}

// decodeOPAResult reads a result set as OPA-Envoy reads it (SPEC §5a): no result or false
// denies 403; true allows; an object {"allowed", "headers", "http_status", "body"} allows with
// headers or denies with its status and body.
func decodeOPAResult(b []byte) (Output, error) {
	var set []map[string]json.RawMessage
	if err := json.Unmarshal(b, &set); err != nil {
		return Output{}, fmt.Errorf("result set is not a JSON array of objects: %v", err)
	}
	if len(set) == 0 {
		return Output{Status: 403, Reason: "the policy's decision is undefined"}, nil
	}
	raw, ok := set[0]["result"]
	if !ok {
		return Output{Status: 403, Reason: "the policy's decision is undefined"}, nil
	}
	var allowed bool
	if err := json.Unmarshal(raw, &allowed); err == nil {
		if allowed {
			return Output{Allow: true}, nil
		}
		return Output{Status: 403}, nil
	}
	var obj struct {
		Allowed    *bool          `json:"allowed"`
		Headers    map[string]any `json:"headers"`
		HTTPStatus *int           `json:"http_status"`
		Body       *string        `json:"body"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return Output{}, fmt.Errorf("the decision is neither a boolean nor an object with \"allowed\": %s", truncate(raw))
	}
	if obj.Allowed == nil {
		return Output{}, errors.New(`the decision object has no boolean "allowed"`)
	}
	headers, err := opaHeaders(obj.Headers)
	if err != nil {
		return Output{}, err
	}
	if *obj.Allowed {
		return Output{Allow: true, Headers: headers}, nil
	}
	out := Output{Status: 403, ResponseHeaders: headers}
	if obj.HTTPStatus != nil {
		if *obj.HTTPStatus < 400 || *obj.HTTPStatus > 599 {
			return Output{}, fmt.Errorf("the decision denies with http_status %d, outside 400..599", *obj.HTTPStatus)
		}
		out.Status = *obj.HTTPStatus
	}
	if obj.Body != nil {
		out.Reason = reasonFrom(*obj.Body)
	}
	return out, nil
}

// opaHeaders checks a decision's headers: string values (or lists of strings, joined with ", "
// as HTTP does), names lower-cased, and the rules of ABI v1's output headers (no x-auth-*, no
// framing header, no control character).
func opaHeaders(h map[string]any) (map[string]string, error) {
	if len(h) == 0 {
		return nil, nil
	}
	if len(h) > MaxOutputHeaders {
		return nil, fmt.Errorf("the decision has %d headers, over %d", len(h), MaxOutputHeaders)
	}
	out := make(map[string]string, len(h))
	for name, v := range h {
		var value string
		switch v := v.(type) {
		case string:
			value = v
		case []any:
			parts := make([]string, 0, len(v))
			for _, p := range v {
				s, ok := p.(string)
				if !ok {
					return nil, fmt.Errorf("header %q: values must be strings", truncate([]byte(name)))
				}
				parts = append(parts, s)
			}
			value = strings.Join(parts, ", ")
		default:
			return nil, fmt.Errorf("header %q: the value must be a string or a list of strings", truncate([]byte(name)))
		}
		lower := strings.ToLower(name)
		if err := checkHeader("header", []byte(lower), []byte(value)); err != nil {
			return nil, err
		}
		if _, dup := out[lower]; dup {
			return nil, fmt.Errorf("header %q is given twice", lower)
		}
		out[lower] = value
	}
	return out, nil
}

// reasonFrom makes a denial body into a reason: printable, cut to MaxReasonBytes at a
// character boundary.
func reasonFrom(body string) string {
	r := sanitize([]byte(body))
	if len(r) <= MaxReasonBytes {
		return r
	}
	i := MaxReasonBytes
	for i > 0 && !utf8.RuneStart(r[i]) {
		i--
	}
	return r[:i]
}

// OPAInputJSON is the input document an OPA module sees for in (SPEC §5a): what `opa eval
// --input` needs to decide the same way, for tests and for debugging a Rego policy.
func OPAInputJSON(in *Input) ([]byte, error) {
	var buf bytes.Buffer
	now := in.Time
	if now.IsZero() {
		now = time.Now()
	}
	if err := buildInput(&buf, in, now); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// OPADecision reads an OPA result set ([{"result": …}], or [] when undefined) as the host reads
// a module's (SPEC §5a), for comparing with `opa eval`.
func OPADecision(resultSet []byte) (Output, error) { return decodeOPAResult(resultSet) }

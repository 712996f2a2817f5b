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

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tokenagent/tokenagent/plugins/internal/opa"
)

// OPA's WebAssembly ABI 1.x (https://www.openpolicyagent.org/docs/wasm), the second kind of
// module the engine runs, chosen by what a module exports: Rego compiled by
// `opa build -t wasm` (SPEC §5a). The host's side, in short:
//
//   - the module imports env.memory (the host defines it instead: internal/wasmbin) and the
//     functions env.opa_abort, env.opa_println and env.opa_builtin0..4, which the engine's
//     "env" host module provides to every OPA instance;
//   - at instantiation the host reads the module's built-ins (refusing the module when one is
//     not provided) and entrypoints, and loads the bundle's data once (opa_malloc,
//     opa_json_parse), keeping the heap pointer after it;
//   - each evaluation writes the input JSON at that heap pointer and calls opa_eval (ABI 1.2+;
//     older modules go through the evaluation context exports), which starts its heap after
//     the input: every evaluation reuses the same memory, nothing accumulates.

// opaModule is what one compiled OPA module needs beside its code: the bundle's data, the
// entrypoint to evaluate, and the host built-ins it calls, resolved at its first instance.
type opaModule struct {
	data       []byte
	entrypoint int32
	entryName  string
	builtins   map[int32]opa.Builtin
	fast       bool // opa_eval: one call per evaluation
}

// opaInstance is an OPA instance's host state.
type opaInstance struct {
	mod                                           *opaModule
	malloc, parse, dump, heapGet, heapSet, evalFn api.Function
	ctxFns                                        []api.Function // opa.CtxExports, for modules without opa_eval
	dataAddr, dataHeap                            uint32
	eval                                          opa.Evaluation // the current evaluation's time and print() lines
	doc                                           opa.Input      // the evaluation's input document
	input                                         bytes.Buffer   // ... as JSON
	args                                          [4]any         // a built-in call's decoded arguments
}

// checkOPA reports every way cm falls short of OPA's ABI as the host runs it.
func checkOPA(cm wazero.CompiledModule, memMin, memLimit uint32) error {
	if p := opa.Problems(cm); len(p) > 0 {
		return fmt.Errorf("%w: OPA module: %s", ErrABI, strings.Join(p, "; "))
	}
	if memMin > memLimit {
		return fmt.Errorf("memory starts at %d pages, over the module's limit of %d pages (MemoryLimitPages)", memMin, memLimit)
	}
	return nil
}

// setupOPA prepares a new instance of an OPA module: its functions, built-ins and entrypoint
// (resolved once per module), and the bundle's data in its memory.
func (v *version) setupOPA(ctx context.Context, inst *instance) error {
	mod := inst.mod
	if g := mod.ExportedGlobal(opa.ABIVersion); g != nil && g.Get() != 1 {
		return fmt.Errorf("%w: OPA WebAssembly ABI version %d; the host runs 1.x", ErrABI, g.Get())
	}
	o := &opaInstance{mod: v.opa}
	o.malloc, o.parse, o.dump = mod.ExportedFunction(opa.Malloc), mod.ExportedFunction(opa.JSONParse), mod.ExportedFunction(opa.JSONDump)
	o.heapGet, o.heapSet, o.evalFn = mod.ExportedFunction(opa.HeapGet), mod.ExportedFunction(opa.HeapSet), mod.ExportedFunction(opa.Eval)
	if !v.opa.fast {
		for _, name := range opa.CtxExports {
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
	if f := mod.ExportedFunction(opa.Stash); f != nil { // ABI 1.3: keep free blocks from eval's reset
		if _, err := f.Call(ctx); err != nil {
			return fmt.Errorf("%s: %w", opa.Stash, err)
		}
	}
	r, err := o.heapGet.Call(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", opa.HeapGet, err)
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
	bs, err := names(opa.Builtins)
	if err != nil {
		return err
	}
	table := map[int32]opa.Builtin{}
	var missing []string
	for name, id := range bs {
		b, ok := opa.Lookup(name)
		if !ok {
			missing = append(missing, name)
			continue
		}
		table[id] = b
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("the policy needs the built-in function %s, which the host does not provide (it provides %s)",
			strings.Join(missing, ", "), strings.Join(opa.BuiltinNames(), ", "))
	}
	eps, err := names(opa.Entrypoints)
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
		return 0, fmt.Errorf("%s: %w", opa.Malloc, err)
	}
	p := uint32(r[0])
	if !mem.Write(p, b) {
		return 0, fmt.Errorf("%s returned %d, outside the memory", opa.Malloc, p)
	}
	r, err = o.parse.Call(ctx, uint64(p), uint64(len(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", opa.JSONParse, err)
	}
	return uint32(r[0]), nil
}

// readJSON dumps the value at addr as JSON and returns it (at most limit bytes).
func (o *opaInstance) readJSON(ctx context.Context, mem api.Memory, addr uint32, limit int) ([]byte, error) {
	r, err := o.dump.Call(ctx, uint64(addr))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", opa.JSONDump, err)
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

// inputDocument fills doc with in as OPA's input document (SPEC §5a).
func inputDocument(doc *opa.Input, in *Input, now time.Time) {
	*doc = opa.Input{Time: now.UnixNano(), ParsedPath: opa.ParsedPath(in.Path), ParsedQuery: map[string][]string{},
		Identity: opa.Identity{Site: in.Site, Kind: in.Kind, User: in.User, ClientID: in.ClientID, Scopes: in.Scopes}}
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
}

// decision is an OPA decision as the engine's Output.
func decision(d opa.Decision) Output {
	if d.Allow {
		return Output{Allow: true, Headers: d.Headers}
	}
	return Output{Status: d.Status, Reason: d.Reason, ResponseHeaders: d.Headers}
}

// callOPA evaluates in on an OPA instance and reads its result as OPA-Envoy does.
func (inst *instance) callOPA(ctx context.Context, in *Input, now time.Time) (Output, error) {
	m := inst.ver.mod
	o := inst.opa
	inputDocument(&o.doc, in, now)
	if err := o.doc.Write(&o.input); err != nil {
		return Output{}, m.errorf(FailureBadOutput, "encoding the input: %w", err)
	}
	n := o.input.Len()
	if n > MaxInputBytes {
		return Output{}, m.errorf(FailureInputTooLarge, "the input document would be %d bytes, over %d", n, MaxInputBytes)
	}
	o.eval.Now = now
	inst.output.reset()
	inst.memory.Refused = false
	deadline := m.opts.Deadline
	cctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	fail := func(err error) error {
		kind, msg := inst.describe(ctx, err, deadline)
		return &Error{Policy: m.name, Failure: kind, Err: errors.New(msg)}
	}
	var resAddr uint32
	if o.mod.fast {
		// The input goes at the heap pointer after the data; opa_eval's heap starts after it.
		if need := uint64(o.dataHeap) + uint64(n); need > uint64(inst.mem.Size()) {
			if _, ok := inst.mem.Grow(uint32((need - uint64(inst.mem.Size()) + 65535) >> 16)); !ok {
				return Output{}, m.errorf(FailureMemory, "the input document of %d bytes does not fit in the module's memory limit", n)
			}
		}
		if !inst.mem.Write(o.dataHeap, o.input.Bytes()) {
			return Output{}, m.errorf(FailureMemory, "the input document does not fit in the module's memory")
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
		return Output{}, m.errorf(FailureBadOutput, "the result: %v", err)
	}
	d, err := opa.ReadDecision(b)
	if err != nil {
		return Output{}, m.errorf(FailureBadOutput, "%w", err)
	}
	return decision(d), nil
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

// OPAInputJSON is the input document an OPA module sees for in (SPEC §5a): what `opa eval
// --input` needs to decide the same way, for tests and for debugging a Rego policy.
func OPAInputJSON(in *Input) ([]byte, error) {
	var buf bytes.Buffer
	now := in.Time
	if now.IsZero() {
		now = time.Now()
	}
	var doc opa.Input
	inputDocument(&doc, in, now)
	if err := doc.Write(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// OPADecision reads an OPA result set ([{"result": …}], or [] when undefined) as the host reads
// a module's (SPEC §5a), for comparing with `opa eval`.
func OPADecision(resultSet []byte) (Output, error) {
	d, err := opa.ReadDecision(resultSet)
	if err != nil {
		return Output{}, err
	}
	return decision(d), nil
}

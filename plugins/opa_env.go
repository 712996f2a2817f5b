package plugins

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/tetratelabs/wazero/api"

	"github.com/tokenagent/tokenagent/plugins/internal/opa"
	"github.com/tokenagent/tokenagent/plugins/internal/output"
)

// instantiateOPAEnv adds the "env" host module every OPA instance imports its functions from:
// opa_abort and opa_println, and opa_builtin0..4, which find the calling instance's built-in
// table.
func (e *Engine) instantiateOPAEnv(ctx context.Context) error {
	i32 := api.ValueTypeI32
	b := e.rt.NewHostModuleBuilder(opa.Env)
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(e.opaAbort), []api.ValueType{i32}, nil).Export("opa_abort")
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(e.opaPrintln), []api.ValueType{i32}, nil).Export("opa_println")
	for n := range 5 {
		b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
			e.opaBuiltin(ctx, mod, n, stack)
		}), opa.Imports[fmt.Sprintf("opa_builtin%d", n)], []api.ValueType{i32}).Export(fmt.Sprintf("opa_builtin%d", n))
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
	panic(fmt.Errorf("opa_abort: %s", output.Sanitize(msg)))
}

// opaPrintln logs a line of the module's opa_println (OPA's runtime writes its own
// diagnostics there), rate-limited as tokenagent.log lines.
func (e *Engine) opaPrintln(ctx context.Context, mod api.Module, stack []uint64) {
	inst := e.opaInstanceOf(mod)
	msg, err := cString(mod.Memory(), uint32(stack[0]), output.MaxLogBytes)
	if err != nil {
		msg = []byte("(unreadable: " + err.Error() + ")")
	}
	e.policyLine(ctx, inst.ver.mod, slog.LevelInfo, output.Sanitize(msg))
}

// opaBuiltin dispatches opa_builtin<n>(id, ctx, args...) to the host function: the arguments
// are read as JSON, the result written back and parsed; 0 (undefined) when the function fails.
func (e *Engine) opaBuiltin(ctx context.Context, mod api.Module, n int, stack []uint64) {
	inst := e.opaInstanceOf(mod)
	o := inst.opa
	b, ok := o.mod.builtins[int32(uint32(stack[0]))]
	if !ok || b.Arity != n {
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
	res, err := b.Call(&o.eval, args)
	clear(args)
	for _, line := range o.eval.Printed { // print() lines, logged by the host, not the built-in
		e.policyLine(ctx, inst.ver.mod, slog.LevelDebug, line)
	}
	o.eval.Printed = o.eval.Printed[:0]
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

// Package opa holds the pure parts of OPA's WebAssembly ABI 1.x as tokenagent's policy engine
// (package plugins) runs it: the names of its exports and imports and the checks of a compiled
// module, the input document a policy sees (SPEC §5a), how a result set is read as a decision,
// and the built-in functions the host provides. The engine keeps what touches instances.
package opa

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

const (
	Env         = "env"
	Malloc      = "opa_malloc"
	JSONParse   = "opa_json_parse"
	JSONDump    = "opa_json_dump"
	HeapGet     = "opa_heap_ptr_get"
	HeapSet     = "opa_heap_ptr_set"
	Eval        = "opa_eval"
	Builtins    = "builtins"
	Entrypoints = "entrypoints"
	Stash       = "opa_heap_blocks_stash"
	ABIVersion  = "opa_wasm_abi_version"
	ABIMinor    = "opa_wasm_abi_minor_version"
)

// The evaluation-context exports, for modules without opa_eval (ABI 1.0 and 1.1).
var CtxExports = []string{"opa_eval_ctx_new", "opa_eval_ctx_set_input", "opa_eval_ctx_set_data",
	"opa_eval_ctx_set_entrypoint", "opa_eval_ctx_get_result", "eval"}

// Is reports whether a compiled module is one of OPA's (it exports opa_malloc).
func Is(cm wazero.CompiledModule) bool {
	_, ok := cm.ExportedFunctions()[Malloc]
	return ok
}

// Problems lists every way cm falls short of OPA's ABI as the host runs it (none: it runs).
func Problems(cm wazero.CompiledModule) []string {
	var problems []string
	fns := cm.ExportedFunctions()
	for _, name := range []string{Malloc, JSONParse, JSONDump, HeapGet, HeapSet, Builtins, Entrypoints} {
		if _, ok := fns[name]; !ok {
			problems = append(problems, "no "+name+" export")
		}
	}
	if _, ok := fns[Eval]; !ok {
		for _, name := range CtxExports {
			if _, ok := fns[name]; !ok {
				problems = append(problems, "neither opa_eval nor "+name+" exported")
			}
		}
	}
	i32 := api.ValueTypeI32
	for _, f := range cm.ImportedFunctions() {
		mod, name, _ := f.Import()
		want, ok := Imports[name]
		switch {
		case mod != Env || !ok:
			problems = append(problems, fmt.Sprintf("imports %s.%s, which the host does not provide to OPA modules", mod, name))
		case !slices.Equal(f.ParamTypes(), want) || len(f.ResultTypes()) > 1 ||
			(strings.HasPrefix(name, "opa_builtin") != (len(f.ResultTypes()) == 1)) ||
			(len(f.ResultTypes()) == 1 && f.ResultTypes()[0] != i32):
			problems = append(problems, fmt.Sprintf("import %s.%s has type %s", mod, name, fmt.Sprint(f.ParamTypes(), "->", f.ResultTypes())))
		}
	}
	if len(cm.ImportedMemories()) > 0 {
		problems = append(problems, "imports a memory the host did not define")
	}
	return problems
}

// Imports are the functions the engine's env module provides, with their parameters.
var Imports = func() map[string][]api.ValueType {
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

// Package plugins runs tokenagent's site policies: WebAssembly modules that see a verified
// identity and the request, and allow it (optionally adding upstream headers) or deny it with a
// status and a reason. It is the host side of two module interfaces, chosen by what a module
// exports: tokenagent's ABI v1 (plugins/ABI.md; plugins/guest is the module side for policies
// written in Go) and OPA's WebAssembly ABI 1.x, for Rego compiled by `opa build -t wasm` (a
// bundle .tar.gz or a policy.wasm; opa.go). plugins/plugintest builds and loads modules in
// tests, plugins/opatest compiles Rego with the real opa.
//
//	e, err := plugins.NewEngine(ctx, plugins.EngineOptions{
//		CacheDir:   "/var/cache/tokenagent/wasm",
//		Registerer: prometheus.DefaultRegisterer,
//	})
//	if err != nil {
//		return err
//	}
//	defer e.Close(ctx)
//	m, err := e.Load(ctx, "policies/docs.wasm", plugins.ModuleOptions{Name: "docs", Watch: true})
//	if err != nil {
//		return err // names the file and what is wrong with it
//	}
//	out, err := m.Evaluate(ctx, &plugins.Input{Site: "docs", Kind: "anonymous", Method: "GET", Path: "/"})
//	if err != nil {
//		// deny with policy_error: fail closed
//	}
//
// A Registry (registry.go) owns a module's whole life beside it: it loads each module once for
// every config that names it, retries one that fails to load, and retires one no config uses
// any more; the Module watches its file and reloads it. Everything that is not this API is in
// internal packages, one job each: internal/opa (the pure parts of OPA's ABI: names, checks,
// the input document, reading a decision, the built-ins), internal/bundle (reading an OPA
// bundle), internal/wasmbin (defining an imported memory), internal/output (the rules of a
// module's output), internal/limits (a module's breaker, memory cap and log rate).
//
// What the engine does:
//
//   - One wazero runtime for every module; each module binary is compiled once (and, with
//     EngineOptions.CacheDir, kept on disk so a restart does not compile it again).
//   - Modules are WASI reactors with no filesystem, network, arguments or environment; their
//     _initialize runs once per instance. The host function tokenagent.log is rate-limited.
//   - Each module keeps a pool of ready instances (instantiating a Go-built module takes
//     milliseconds; a call takes about a microsecond): Prewarm are made at load, more on
//     demand up to PoolSize, and a call never instantiates when an instance is free.
//   - Each call is bounded by a deadline, the instance's memory by a page limit and the output
//     by a byte limit. A trap, exit, timeout, memory exhaustion or bad output is an *Error; the
//     instance is thrown away and replaced, and other calls and modules are not affected.
//   - A watched module file is polled; a changed file is compiled in the background and swapped
//     in atomically. A file that fails to load leaves the previous module serving and is
//     reported in the log, the tokenagent_policy_reload_failing metric and Module.Status.
//
// # Notes
//
//   - Engine and Module are safe for concurrent use. Evaluate may be called from any number of
//     goroutines; each call uses one instance exclusively, and at most PoolSize run at once per
//     module.
//   - Evaluate does not keep Input or anything in it; the Output and its maps belong to the
//     caller.
//   - An error from Evaluate always means "deny with policy_error". The *Error's Failure is for
//     metrics and logs; callers must not allow on any kind.
//   - Closing the Engine closes its modules; a Module closed on its own stops its watcher and
//     closes once its running calls return.
package plugins

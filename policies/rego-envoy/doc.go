// Package regoenvoy is an example site policy written in Rego for OPA-Envoy and run by
// tokenagent unchanged (SPEC §5a): policy.rego and data.json, compiled with
// `opa build -t wasm -e envoy/authz/result`. Reads are open; writes need an editor listed in
// data.json for the site; the site administration API takes server tokens only; with
// data.maintenance on, every write is refused 503 with Retry-After. The tests build the bundle
// with the real opa and check it through a real agent over gRPC.
package regoenvoy

// Package nolegacy holds the no-legacy site policy, written in WebAssembly text (policy.wat)
// rather than Go, to show that ABI v1 is language-neutral: it refuses the legacy credentials
// (Site API Key, Impersonation Auth Token) with 403 and tells the upstream the site id in
// x-site-id. There is no Go code here besides its test, which assembles policy.wat with wabt's
// wat2wasm and runs it through the real host.
//
// Build it for deployment with:
//
//	wat2wasm policies/no-legacy/policy.wat -o no-legacy.wasm
package nolegacy

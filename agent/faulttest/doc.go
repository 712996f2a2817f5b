// Package faulttest holds tokenagent's fault-under-load tests and the fault injector they use.
//
// Each test runs a bounded load (a fixed number of checks from a few goroutines) against a real
// agent — the daemon in process, or the built binary — over real gRPC, with its keys in a real
// Vault dev server on 127.0.0.1 (vault/vaulttest), and injects one fault while the load runs:
// Vault killed and restarted, Vault stalled or slowed (through Proxy, a TCP proxy in front of
// the real server), Vault refusing the agent's token, an external issuer's JWKS endpoint down
// or stalled, a policy module replaced by a hostile one, SIGTERM, and config reloads. The tests
// assert outcomes (which checks were answered, with which decision, and that none was lost),
// never timings.
//
// The soak test (TestSoak) runs only with TOKENAGENT_SOAK=1: it drives the built binary at a
// fixed rate for a few minutes and checks that memory, goroutines and open files stay flat.
//
//	go test -race ./agent/faulttest/                                  # the fault tests
//	TOKENAGENT_SOAK=1 go test ./agent/faulttest/ -run TestSoak -v     # the soak (≈3 min)
package faulttest

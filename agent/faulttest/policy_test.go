package faulttest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/plugins/plugintest"
)

// policyOutcome names a check's outcome under the policy test's modules: "v1" and "v2" (allowed
// by allow_v1 / allow_v2, which set x-policy-version), "policy_error" (403, fail closed), or
// the unexpected result itself.
func policyOutcome(r result) string {
	switch {
	case r.err == nil && r.code == codes.OK:
		return "v" + daemontest.UpstreamHeader(r.resp, "x-policy-version")
	case r.err == nil && r.code == codes.PermissionDenied && r.reason == "policy_error" &&
		r.resp.GetDeniedResponse().GetStatus().GetCode() == 403:
		return "policy_error"
	}
	return r.String()
}

// TestHostilePolicyReplacedUnderLoad swaps a site's WebAssembly policy module on disk while
// checks run (the agent polls the file and hot-swaps it): a module whose initialisation never
// returns (it does not load: the old module keeps serving, and /readyz warns), one that traps
// on every call, one that loops forever (stopped by the per-call deadline), and finally a good
// one. Every check is answered — by the module serving at that moment: allowed by a good one,
// 403 policy_error (fail closed) under a hostile one — never with a gRPC error, never allowed
// by a hostile module, and the agent recovers as soon as a good module is back.
func TestHostilePolicyReplacedUnderLoad(t *testing.T) {
	build := func(name string) []byte {
		b, err := os.ReadFile(plugintest.BuildWAT(t, filepath.Join("..", "..", "plugins", "testdata", name)))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	v1, v2 := build("wat/allow_v1.wat"), build("wat/allow_v2.wat")
	initLoop, trap, loop := build("hostile/initloop.wat"), build("hostile/trap.wat"), build("hostile/loop.wat")

	a := startDaemon(t, `
grpc_addr: 127.0.0.1:0
http_addr: 127.0.0.1:0
keys: {source: file, file: keys.yaml}
policies: {cache_dir: `+filepath.Join(plugintest.CacheDir(), "wazero")+`}
sites:
  - id: docs
    hosts: [docs.example.com]
    policy: policy.wasm
    policy_deadline: 300ms
`, map[string]string{"keys.yaml": "sites:\n  docs: {}\n", "policy.wasm": string(v1)}, nil)
	policyPath := filepath.Join(a.Dir, "policy.wasm")
	replace := func(b []byte) { // as an operator deploys a module: write aside, rename into place
		tmp := policyPath + ".new"
		daemontest.WriteFile(t, tmp, string(b))
		if err := os.Rename(tmp, policyPath); err != nil {
			t.Fatal(err)
		}
	}
	daemontest.Eventually(t, "ready with the policy loaded", func() bool { return a.D.Ready().Ready })

	// Each phase accepts a set of outcomes: while a swap is under way, the old module's and the
	// new one's; once the new one has answered, only its own.
	var accept atomic.Value // map[string]bool
	accept.Store(map[string]bool{"v1": true})
	judge := func(phase string, r result) string {
		if o := policyOutcome(r); !accept.Load().(map[string]bool)[o] {
			return "outcome " + o
		}
		return ""
	}
	anon := func(_, _ int) *authv3.CheckRequest {
		return daemontest.CheckRequest("GET", "docs.example.com", "/", nil)
	}
	l := startLoad(t, a.Client, 4, anon, judge)
	l.setPhase(t, "v1", 200)

	// A module that never finishes initialising does not load: v1 keeps serving.
	replace(initLoop)
	l.setPhase(t, "initloop deployed", 100)
	daemontest.Eventually(t, "/readyz warns about the module that does not load", func() bool {
		_, body := a.Readyz(t)
		return strings.Contains(strings.Join(body.Warnings, "\n"), "policy")
	})
	l.waitPhase(t, "initloop deployed", 300)

	// serving reports whether the module of a step answers: by its outcome, or (for two
	// modules with the same outcome) by the kind of error it causes.
	step := func(name string, b []byte, from, to string, serving func() bool, n int) {
		t.Helper()
		accept.Store(map[string]bool{from: true, to: true})
		replace(b)
		l.setPhase(t, "switching to "+name, 1)
		daemontest.Eventually(t, name+" serving", serving)
		// The phase changes before the accepted outcomes narrow: a check still running on the
		// old module (a looping one runs to its deadline) spans the change and is not judged.
		l.phase.Store(name)
		accept.Store(map[string]bool{to: true})
		l.waitPhase(t, name, n)
	}
	answers := func(want string) func() bool {
		return func() bool { return policyOutcome(check(context.Background(), a.Client, anon(0, 0))) == want }
	}
	errorsOf := func(kind string) float64 {
		return a.Counter(t, "tokenagent_policy_errors_total", map[string]string{"kind": kind})
	}
	step("trap", trap, "v1", "policy_error", func() bool { return answers("policy_error")() && errorsOf("trap") > 0 }, 40)
	timeouts := errorsOf("timeout")
	// Each call of the looping module runs to its 300 ms deadline: a short phase.
	step("loop", loop, "policy_error", "policy_error", func() bool { return errorsOf("timeout") > timeouts }, 8)
	step("v2", v2, "policy_error", "v2", answers("v2"), 200)
	counts := l.finish(t)
	if t.Failed() {
		return
	}
	t.Logf("RESULT policy-hostile: %d checks; hostile modules (init loop, trap, infinite loop) failed closed, none allowed, no gRPC error; recovered on a good module",
		sum(counts))
}

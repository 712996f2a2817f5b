package faulttest

import (
	"context"
	"encoding/base64"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
)

// fileKeys is the key file of the binary tests: the docs site's Auth Token key and k1..k9.
func fileKeys() string {
	var b strings.Builder
	b.WriteString("sites:\n  docs:\n    authtoken:\n      - {key: \"" + base64.StdEncoding.EncodeToString(authKey) +
		"\", created: \"2026-01-01T00:00:00Z\"}\n    server-tokens:\n")
	for i := 1; i <= 9; i++ {
		k := "k" + strconv.Itoa(i)
		b.WriteString("      " + k + ": {secret: \"secret-" + k + "\"}\n")
	}
	return b.String()
}

// startBinary runs `tokenagent serve` on cfgYAML (with the key file above) as a child process
// (daemontest.Process), with the extra args.
func startBinary(t *testing.T, cfgYAML string, args ...string) *daemontest.Process {
	t.Helper()
	dir := t.TempDir()
	daemontest.WriteFile(t, filepath.Join(dir, "keys.yaml"), fileKeys())
	cfgPath := filepath.Join(dir, "tokenagent.yaml")
	daemontest.WriteFile(t, cfgPath, cfgYAML)
	return daemontest.StartProcess(t, cfgPath, nil, args...)
}

// TestSIGTERMUnderLoad sends SIGTERM to the built agent while a fixed number of checks are in
// flight, and accounts for every check the client started: each gets a CheckResponse, or a
// gRPC Unavailable because the agent no longer accepted it (its listener closed, or the
// connection's GOAWAY refused the stream) — none is lost mid-flight. The agent logs every
// decision (log.allow_sample: 1) with its id, and the ids it logged are exactly the ids the
// client received: no check was decided and then dropped. The process exits 0.
func TestSIGTERMUnderLoad(t *testing.T) {
	p := startBinary(t, `
keys: {source: file, file: keys.yaml}
log: {allow_sample: 1}
sites:
  - id: docs
    hosts: [docs.example.com]
    routes:
      - {path: "/private/*", require: user}
`, "--config-poll", "0")
	c := p.Client(t)
	const workers = 16
	var started, answered, refused atomic.Int64
	var mu sync.Mutex
	ids := map[string]bool{}
	var lost []string
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				var req *authv3.CheckRequest
				if i%2 == 0 {
					req = serverCheck("k1", "42")
				} else {
					req = authTokenCheck("7")
				}
				started.Add(1)
				resp, err := c.Check(context.Background(), req)
				switch {
				case err == nil && codes.Code(resp.GetStatus().GetCode()) == codes.OK:
					answered.Add(1)
					mu.Lock()
					ids[resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue()] = true
					mu.Unlock()
				case status.Code(err) == codes.Unavailable:
					refused.Add(1)
					return // the agent is gone: this worker is done
				default:
					mu.Lock()
					lost = append(lost, (result{err: err, resp: resp}).String())
					mu.Unlock()
					return
				}
			}
		}()
	}
	daemontest.Eventually(t, "2000 checks answered before SIGTERM", func() bool { return answered.Load() >= 2000 })
	atSignal := answered.Load()
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	var exitErr error
	select {
	case exitErr = <-p.Exited():
	case <-time.After(60 * time.Second):
		t.Fatal("the agent did not exit after SIGTERM")
	}
	if exitErr != nil {
		t.Errorf("exit after SIGTERM: %v, want status 0", exitErr)
	}
	for _, l := range lost {
		t.Errorf("a check neither answered nor refused: %s", l)
	}
	if s, a, r := started.Load(), answered.Load(), refused.Load(); s != a+r {
		t.Errorf("started %d checks, %d answered + %d refused = %d", s, a, r, a+r)
	}
	logged := map[string]bool{}
	for _, rec := range p.Logs("allowed") {
		id, _ := rec["decision_id"].(string)
		logged[id] = true
	}
	if len(logged) != len(ids) {
		t.Errorf("the agent logged %d decisions, the client received %d", len(logged), len(ids))
	}
	for id := range logged {
		if !ids[id] {
			t.Errorf("decision %s was made but its answer never reached the client", id)
		}
	}
	if t.Failed() {
		return
	}
	t.Logf("RESULT sigterm: %d checks started by %d concurrent clients, %d answered (%d of them after SIGTERM was sent), %d refused before being accepted (gRPC Unavailable), 0 lost; %d decisions logged = answered; exit status 0",
		started.Load(), workers, answered.Load(), answered.Load()-atSignal, refused.Load(), len(logged))
}

// TestSIGHUPReloadsUnderLoad reloads the built agent's config with SIGHUP while checks run,
// alternating two good configs (an anonymous request to /private/x is 401 under one and
// allowed under the other) and bad ones (invalid YAML, an invalid field). No check fails (no
// gRPC error, and a server token is allowed throughout); each good reload switches the
// decision, each bad one leaves the previous config deciding; the reload counters agree.
func TestSIGHUPReloadsUnderLoad(t *testing.T) {
	const strict = `
keys: {source: file, file: keys.yaml}
sites:
  - id: docs
    hosts: [docs.example.com]
    routes:
      - {path: "/private/*", require: user}
`
	const open = `
keys: {source: file, file: keys.yaml}
sites:
  - id: docs
    hosts: [docs.example.com]
`
	bad := []string{"sites: [\n  - id: docs\n", strict + "    authtoken_ttl: -5s\n", strings.Replace(strict, "require: user", "require: admin", 1)}
	p := startBinary(t, strict, "--config-poll", "0")
	c := p.Client(t)

	// The anonymous check's outcome names the config deciding: "strict" (401
	// authentication_required) or "open" (allowed).
	configOf := func(r result) string {
		switch {
		case r.err == nil && r.code == codes.OK:
			return "open"
		case r.err == nil && r.code == codes.Unauthenticated && r.reason == "authentication_required":
			return "strict"
		}
		return r.String()
	}
	var accept atomic.Value
	accept.Store(map[string]bool{"strict": true})
	anon := daemontest.CheckRequest("GET", "docs.example.com", "/private/x", nil)
	next := func(_, i int) *authv3.CheckRequest {
		if i%2 == 0 {
			return serverCheck("k1", "42")
		}
		return anon
	}
	judge := func(_ string, r result) string {
		if r.err != nil {
			return "check failed: " + r.String()
		}
		if daemontest.UpstreamHeader(r.resp, "x-auth-kind") == "server" {
			return ""
		}
		if o := configOf(r); !accept.Load().(map[string]bool)[o] {
			return "outcome " + o
		}
		return ""
	}
	l := startLoad(t, c, 4, next, judge)
	l.setPhase(t, "strict", 200)
	reload := func(cfg string) {
		t.Helper()
		daemontest.WriteFile(t, p.ConfigPath, cfg)
		if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	good, errs := 0, 0
	for round := 0; round < 3; round++ {
		for _, to := range []string{"open", "strict"} {
			from := map[string]string{"open": "strict", "strict": "open"}[to]
			accept.Store(map[string]bool{from: true, to: true})
			cfg := strict
			if to == "open" {
				cfg = open
			}
			reload(cfg)
			good++
			l.setPhase(t, "reloading to "+to, 1)
			daemontest.Eventually(t, "the reload to "+to+" decides", func() bool {
				return configOf(check(context.Background(), c, anon)) == to
			})
			// Phase first, then the narrower outcomes: a check still running under the old
			// config spans the change and is not judged.
			l.phase.Store(to)
			accept.Store(map[string]bool{to: true})
			l.waitPhase(t, to, 200)

			// A bad file: refused, the config just loaded keeps deciding.
			reload(bad[(2*round+len(to))%len(bad)])
			errs++
			daemontest.Eventually(t, "the bad config refused", func() bool {
				return p.Metric(t, "tokenagent_config_reload_errors_total") == float64(errs)
			})
			l.setPhase(t, to+" after a bad reload", 200)
		}
	}
	counts := l.finish(t)
	if n := p.Metric(t, "tokenagent_config_reloads_total"); n != float64(good) {
		t.Errorf("tokenagent_config_reloads_total = %v, want %d", n, good)
	}
	if t.Failed() {
		return
	}
	t.Logf("RESULT sighup: %d checks during %d good and %d bad reloads by SIGHUP; 0 failed; every good reload switched the decision, every bad one kept the previous config",
		sum(counts), good, errs)
}

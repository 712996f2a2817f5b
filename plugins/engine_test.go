package plugins_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/plugins"
	"github.com/tokenagent/tokenagent/plugins/plugintest"
)

// Deadlines in these tests: generous where a call must succeed (a loaded CI machine can stall a
// goroutine for milliseconds), short where a call must be stopped.
const (
	okDeadline   = 2 * time.Second
	stopDeadline = 20 * time.Millisecond
)

var bg = context.Background()

// logCapture is a slog.Handler that keeps the records, for tests on module logging.
type logCapture struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (h *logCapture) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *logCapture) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logCapture) WithGroup(string) slog.Handler      { return h }

// policyLogs returns the module log lines ("policy log" records) of policy.
func (h *logCapture) policyLogs(policy string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.recs {
		if r.Message != "policy log" {
			continue
		}
		var p, msg string
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "policy":
				p = a.Value.String()
			case "msg":
				msg = a.Value.String()
			}
			return true
		})
		if p == policy {
			out = append(out, msg)
		}
	}
	return out
}

func goGuest(t testing.TB) string { return plugintest.BuildGo(t, "testdata/goguest") }

func wat(t testing.TB, name string) string {
	return plugintest.BuildWAT(t, filepath.Join("testdata", name+".wat"))
}

func failureOf(err error) plugins.Failure {
	var pe *plugins.Error
	if errors.As(err, &pe) {
		return pe.Failure
	}
	return ""
}

// Every way a module can misbehave at call time gives an *Error of the right kind; the engine
// keeps serving, the module recovers (its instance is replaced) and other modules never notice.
// All of it runs concurrently.
func TestHostileModules(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := plugintest.NewEngine(t, plugins.EngineOptions{Registerer: reg})
	gg := goGuest(t)

	// A well-behaved module evaluated in a loop for the whole test: it must never fail.
	good := plugintest.Load(t, e, wat(t, "wat/allow_v1"), plugins.ModuleOptions{Name: "good", Deadline: okDeadline, MaxWait: time.Minute})
	stop := make(chan struct{})
	var goodCalls, goodErrs atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			out, err := good.Evaluate(bg, &plugins.Input{Method: "GET", Path: "/"})
			goodCalls.Add(1)
			if err != nil || !out.Allow {
				goodErrs.Add(1)
				t.Errorf("the good module failed while hostile ones ran: %v", err)
			}
		}
	}()

	tests := []struct {
		name        string
		module      string // WAT file under testdata, or "go" for the Go guest
		path        string // Go guest behaviour
		wantFailure plugins.Failure
		wantText    string
	}{
		{name: "infinite loop", module: "hostile/loop", wantFailure: plugins.FailureTimeout, wantText: "deadline of 20ms"},
		{name: "memory growth bomb", module: "hostile/membomb", wantFailure: plugins.FailureMemory, wantText: "limit of 16 pages"},
		{name: "trap", module: "hostile/trap", wantFailure: plugins.FailureTrap, wantText: "unreachable"},
		{name: "huge output", module: "hostile/huge", wantFailure: plugins.FailureOutputTooLarge, wantText: "2147483647 bytes"},
		{name: "output outside memory", module: "hostile/oob", wantFailure: plugins.FailureBadOutput, wantText: "outside the module's memory"},
		{name: "malformed output", module: "hostile/malformed", wantFailure: plugins.FailureBadOutput, wantText: "output layout version 1651663207"},
		{name: "empty output", module: "hostile/empty", wantFailure: plugins.FailureBadOutput, wantText: "empty output"},
		{name: "reserved header", module: "hostile/reserved", wantFailure: plugins.FailureBadOutput, wantText: "reserved for the agent"},
		{name: "log in a loop", module: "hostile/logloop", wantFailure: plugins.FailureTimeout},
		{name: "log outside memory", module: "hostile/logoob", wantFailure: plugins.FailureTrap, wantText: "outside the module's memory"},
		{name: "proc_exit", module: "hostile/exit", wantFailure: plugins.FailureExit, wantText: "code 3"},
		{name: "alloc outside memory", module: "hostile/allocbad", wantFailure: plugins.FailureBadOutput, wantText: "tokenagent_alloc"},
		{name: "Go panic", module: "go", path: "/panic", wantFailure: plugins.FailureTrap, wantText: "panic: boom: 7"},
		{name: "Go out of memory", module: "go", path: "/oom", wantFailure: plugins.FailureMemory, wantText: "out of memory"},
		{name: "Go busy loop", module: "go", path: "/loop", wantFailure: plugins.FailureTimeout},
		{name: "Go sleep", module: "go", path: "/sleep", wantFailure: plugins.FailureTimeout},
		{name: "Go log loop", module: "go", path: "/logloop", wantFailure: plugins.FailureTimeout},
		{name: "Go reserved header", module: "go", path: "/reserved", wantFailure: plugins.FailureBadOutput, wantText: "x-auth-user"},
	}
	t.Cleanup(func() {
		close(stop)
		wg.Wait()
		if goodCalls.Load() == 0 || goodErrs.Load() != 0 {
			t.Errorf("good module: %d calls, %d errors; want some calls and no errors", goodCalls.Load(), goodErrs.Load())
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path, memPages := gg, uint32(64)
			if tt.module != "go" {
				path, memPages = wat(t, tt.module), 16
			}
			name := strings.ReplaceAll(tt.name, " ", "-")
			deadline := okDeadline // a failure other than a timeout must not be mistaken for one
			if tt.wantFailure == plugins.FailureTimeout {
				deadline = stopDeadline
			}
			// MaxWait: with one WebAssembly slot on a 2-core machine, the subtests queue for it.
			m := plugintest.Load(t, e, path, plugins.ModuleOptions{Name: name, Deadline: deadline,
				MemoryLimitPages: memPages, PoolSize: 2, Prewarm: 1, MaxWait: time.Minute})
			for i := 0; i < 2; i++ { // twice: the replaced instance misbehaves the same way
				out, err := m.Evaluate(bg, &plugins.Input{User: "7", Method: "GET", Path: tt.path})
				if err == nil {
					t.Fatalf("call %d: Evaluate = %+v, want an error of kind %s", i, out, tt.wantFailure)
				}
				if got := failureOf(err); got != tt.wantFailure {
					t.Fatalf("call %d: error kind %q (%v), want %q", i, got, err, tt.wantFailure)
				}
				if !strings.Contains(err.Error(), tt.wantText) || !strings.Contains(err.Error(), name) {
					t.Errorf("call %d: error %q does not name the policy and %q", i, err, tt.wantText)
				}
				if out.Allow {
					t.Errorf("call %d: an error came with Allow", i)
				}
			}
			if got := metricValue(t, reg, "tokenagent_policy_errors_total", map[string]string{"policy": name, "kind": string(tt.wantFailure)}); got != 2 {
				t.Errorf("tokenagent_policy_errors_total{kind=%q} = %v, want 2", tt.wantFailure, got)
			}
			if tt.module == "go" {
				// Two failures in a row start a backoff: the module is refused at once, not called.
				if _, err := m.Evaluate(bg, &plugins.Input{User: "7", Method: "GET", Path: "/fine"}); failureOf(err) != plugins.FailureBackoff {
					t.Fatalf("right after two failures: %v, want kind backoff", err)
				}
				// Once the backoff ends, the same module serves other requests again.
				waitFor(t, "the module to serve again after its backoff", func() bool {
					out, err := m.Evaluate(bg, &plugins.Input{User: "7", Method: "GET", Path: "/fine"})
					if err != nil && failureOf(err) != plugins.FailureBackoff {
						t.Fatalf("after the backoff, a normal call failed: %v", err)
					}
					return err == nil && out.Allow
				})
			}
			if st := m.Status(); st.Instances > 2 {
				t.Errorf("Status().Instances = %d, over PoolSize 2", st.Instances)
			}
		})
	}
}

// metricValue returns the value of the counter or gauge name with labels in reg (0 if absent).
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metric
				}
			}
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return 0
}

// Modules that cannot work are refused at Load, with an error that names the file and what is
// wrong.
func TestLoadRejects(t *testing.T) {
	e := plugintest.NewEngine(t)
	notWasm := filepath.Join(t.TempDir(), "text.wasm")
	if err := os.WriteFile(notWasm, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		path     string
		opts     plugins.ModuleOptions
		wantABI  bool
		wantText []string
	}{
		{name: "missing ABI marker", path: wat(t, "hostile/nomarker"), wantABI: true,
			wantText: []string{"no tokenagent_abi_v1 export (the ABI marker)"}},
		{name: "missing exports", path: wat(t, "hostile/noexport"), wantABI: true,
			wantText: []string{"no tokenagent_evaluate export", `no exported memory named "memory"`}},
		{name: "wrong export type", path: wat(t, "hostile/badsig"), wantABI: true,
			wantText: []string{"export tokenagent_evaluate has type (i32) -> (i32), want (i32, i32) -> (i64)"}},
		{name: "WASI command", path: wat(t, "hostile/command"), wantABI: true, wantText: []string{"-buildmode=c-shared"}},
		{name: "unknown import", path: wat(t, "hostile/badimport"), wantABI: true, wantText: []string{"imports env.abort"}},
		{name: "memory over the limit", path: wat(t, "hostile/bigmem"), wantText: []string{"1000 pages, over the module's limit of 512"}},
		{name: "_initialize loops", path: wat(t, "hostile/initloop"), opts: plugins.ModuleOptions{InitTimeout: 50 * time.Millisecond},
			wantText: []string{"_initialize: timeout"}},
		{name: "_initialize traps", path: wat(t, "hostile/inittrap"), wantText: []string{"_initialize: trap", "unreachable"}},
		{name: "not WebAssembly", path: notWasm, wantText: []string{"compile:"}},
		{name: "missing file", path: filepath.Join(t.TempDir(), "nope.wasm"), wantText: []string{"no such file"}},
		{name: "limit over the engine's", path: wat(t, "wat/allow_v1"), opts: plugins.ModuleOptions{MemoryLimitPages: 5000},
			wantText: []string{"over the engine's ceiling of 4096"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := e.Load(bg, tt.path, tt.opts)
			if err == nil {
				_ = m.Close(bg)
				t.Fatal("Load succeeded")
			}
			if errors.Is(err, plugins.ErrABI) != tt.wantABI {
				t.Errorf("errors.Is(err, ErrABI) = %v, want %v (%v)", !tt.wantABI, tt.wantABI, err)
			}
			for _, want := range append(tt.wantText, tt.path) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
	// The engine still loads and serves after all that.
	m := plugintest.Load(t, e, wat(t, "wat/allow_v1"), plugins.ModuleOptions{})
	if out, err := m.Evaluate(bg, &plugins.Input{}); err != nil || !out.Allow {
		t.Fatalf("Evaluate after the failed loads = %+v, %v", out, err)
	}
}

// The input reaches a real Go guest field by field, as given (the agent removed the
// credentials before); the output comes back whole.
func TestGoGuestRoundTrip(t *testing.T) {
	e := plugintest.NewEngine(t)
	m := plugintest.Load(t, e, goGuest(t), plugins.ModuleOptions{Deadline: okDeadline})
	when := time.Date(2026, 11, 21, 9, 0, 0, 5, time.UTC)
	in := &plugins.Input{Site: "docs", Kind: "oauth", User: "=jane", ClientID: "app", Scopes: []string{"read", "write"},
		Method: "PUT", Path: "/@api/deki/pages/1", Query: "a=1", Host: "docs.example.com",
		Origin: "https://app.example.org", Time: when,
		Headers: [][2]string{{"accept", "*/*"}, {"x-forwarded-for", "10.0.0.1"}}}
	out, err := m.Evaluate(bg, in)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"x-site": "docs", "x-kind": "oauth", "x-user": "=jane", "x-client-id": "app", "x-scopes": "read write",
		"x-method": "PUT", "x-path": "/@api/deki/pages/1", "x-query": "a=1", "x-host": "docs.example.com",
		"x-origin": "https://app.example.org", "x-headers": "accept=*/*;x-forwarded-for=10.0.0.1",
		"x-time": "2026-11-21T09:00:00.000000005Z",
	}
	for k, v := range want {
		if out.Headers[k] != v {
			t.Errorf("header %s = %q, want %q", k, out.Headers[k], v)
		}
	}
	if !out.Allow || out.Status != 0 {
		t.Errorf("Allow, Status = %v, %d", out.Allow, out.Status)
	}

	// A denial with a status, a reason and a response header.
	out, err = m.Evaluate(bg, &plugins.Input{Path: "/deny"})
	if err != nil {
		t.Fatal(err)
	}
	if out.Allow || out.Status != 429 || out.Reason != "slow down" || out.ResponseHeaders["retry-after"] != "7" {
		t.Errorf("deny = %+v", out)
	}

	// Input.Time zero: the engine's clock.
	out, err = m.Evaluate(bg, &plugins.Input{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := time.Parse(time.RFC3339Nano, out.Headers["x-time"]); err != nil || time.Since(got) > time.Hour {
		t.Errorf("x-time for a zero Input.Time = %q, want about now", out.Headers["x-time"])
	}
}

// tokenagent.log reaches the engine's logger, attributed to the policy, and a module that logs
// in a loop is held to the rate limit.
func TestModuleLog(t *testing.T) {
	capture := &logCapture{}
	reg := prometheus.NewRegistry()
	e := plugintest.NewEngine(t, plugins.EngineOptions{Logger: slog.New(capture), Registerer: reg, LogRate: 1, LogBurst: 5})
	m := plugintest.Load(t, e, goGuest(t), plugins.ModuleOptions{Name: "chatty", Deadline: okDeadline})
	if _, err := m.Evaluate(bg, &plugins.Input{User: "42", Path: "/log"}); err != nil {
		t.Fatal(err)
	}
	if got := capture.policyLogs("chatty"); len(got) != 1 || got[0] != "hello from 42" {
		t.Fatalf("module log lines = %q, want [hello from 42]", got)
	}
	flood := plugintest.Load(t, e, wat(t, "hostile/logloop"), plugins.ModuleOptions{Name: "flood", Deadline: stopDeadline})
	for i := 0; i < 2; i++ { // two: a third would be refused by the backoff
		if _, err := flood.Evaluate(bg, &plugins.Input{}); failureOf(err) != plugins.FailureTimeout {
			t.Fatalf("logloop: %v, want a timeout", err)
		}
	}
	// 5 (burst) plus at most one a second for the time the test took.
	if n := len(capture.policyLogs("flood")); n < 1 || n > 5+10 {
		t.Errorf("flood logged %d lines, want 1..15", n)
	}
	dropped := metricValue(t, reg, "tokenagent_policy_log_lines_dropped_total", map[string]string{"policy": "flood"})
	if dropped < 100 {
		t.Errorf("dropped lines = %v, want many", dropped)
	}
}

// The pool starts with Prewarm instances, grows on demand and never beyond PoolSize, and
// concurrent calls all succeed.
func TestPoolGrowsToCap(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := plugintest.NewEngine(t, plugins.EngineOptions{Registerer: reg, MaxConcurrency: 3})
	m := plugintest.Load(t, e, goGuest(t), plugins.ModuleOptions{Name: "pool", Deadline: okDeadline, PoolSize: 3, Prewarm: 1})
	if got := m.Status().Instances; got != 1 {
		t.Fatalf("Instances after load = %d, want Prewarm 1", got)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				if out, err := m.Evaluate(bg, &plugins.Input{Method: "GET", Path: "/"}); err != nil || !out.Allow {
					t.Errorf("Evaluate = %+v, %v", out, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := m.Status().Instances; got < 1 || got > 3 {
		t.Errorf("Instances = %d, want 1..3", got)
	}
	made := metricValue(t, reg, "tokenagent_policy_instantiations_total", map[string]string{"policy": "pool", "outcome": "ok"})
	if made > 3 {
		t.Errorf("%v instances made for a pool of 3 with no failures", made)
	}
	allowed := metricValue(t, reg, "tokenagent_policy_evaluations_total", map[string]string{"policy": "pool", "outcome": "allow"})
	if allowed != 400 {
		t.Errorf("evaluations{outcome=allow} = %v, want 400", allowed)
	}
}

// A watched file replaced while calls run: no call fails, and the answers switch to the new
// module (and never back). A broken replacement leaves the last good module serving and is
// reported; fixing the file recovers.
func TestReloadUnderLoad(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := plugintest.NewEngine(t, plugins.EngineOptions{Registerer: reg, PollInterval: 10 * time.Millisecond})
	dir := t.TempDir()
	live := filepath.Join(dir, "site.wasm")
	v1, v2 := wat(t, "wat/allow_v1"), wat(t, "wat/allow_v2")
	install := func(src string) {
		t.Helper()
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		tmp := live + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, live); err != nil { // the way to deploy: atomic rename
			t.Fatal(err)
		}
	}
	install(v1)
	m := plugintest.Load(t, e, live, plugins.ModuleOptions{Name: "site", Deadline: okDeadline, Watch: true})
	hash1 := m.Status().Hash

	var sawV2 atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var calls atomic.Int64
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen := "1"
			for {
				select {
				case <-stop:
					return
				default:
				}
				out, err := m.Evaluate(bg, &plugins.Input{Method: "GET", Path: "/"})
				calls.Add(1)
				if err != nil {
					t.Errorf("Evaluate during reload: %v", err)
					return
				}
				v := out.Headers["x-policy-version"]
				if v < seen {
					t.Errorf("answer went back from version %s to %s", seen, v)
					return
				}
				seen = v
				if v == "2" {
					sawV2.Store(true)
				}
			}
		}()
	}
	waitFor(t, "the callers to run on version 1", func() bool { return calls.Load() >= 10 })
	install(v2)
	waitFor(t, "version 2 to serve", sawV2.Load)

	// A broken file: the watcher reports it and version 2 keeps serving.
	if err := os.WriteFile(live, []byte("\x00asm broken"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reload error", func() bool { return m.Status().ReloadError != "" })
	close(stop)
	wg.Wait()
	st := m.Status()
	if !strings.Contains(st.ReloadError, live) || !strings.Contains(st.ReloadError, "previous module keeps serving") {
		t.Errorf("ReloadError = %q", st.ReloadError)
	}
	if st.Hash == hash1 {
		t.Error("Status().Hash still names version 1")
	}
	if out, err := m.Evaluate(bg, &plugins.Input{}); err != nil || out.Headers["x-policy-version"] != "2" {
		t.Errorf("after a failed reload: %+v, %v; want version 2", out, err)
	}
	failing := func() float64 {
		return metricValue(t, reg, "tokenagent_policy_reload_failing", map[string]string{"policy": "site"})
	}
	if got := failing(); got != 1 {
		t.Errorf("reload_failing = %v, want 1", got)
	}

	// Fixing the file recovers.
	install(v1)
	waitFor(t, "the reload error to clear", func() bool { return m.Status().ReloadError == "" })
	if out, err := m.Evaluate(bg, &plugins.Input{}); err != nil || out.Headers["x-policy-version"] != "1" {
		t.Errorf("after fixing the file: %+v, %v; want version 1", out, err)
	}
	if got := failing(); got != 0 {
		t.Errorf("reload_failing = %v, want 0", got)
	}
	t.Logf("%d calls during the reloads", calls.Load())
}

// Reload without Watch: an ABI-breaking file is refused with ErrABI and reported in Status; an
// unchanged file is a no-op.
func TestReloadExplicit(t *testing.T) {
	e := plugintest.NewEngine(t)
	live := filepath.Join(t.TempDir(), "p.wasm")
	copyFile(t, wat(t, "wat/allow_v1"), live)
	m := plugintest.Load(t, e, live, plugins.ModuleOptions{})
	if err := m.Reload(bg); err != nil {
		t.Fatalf("Reload of an unchanged file: %v", err)
	}
	copyFile(t, wat(t, "hostile/nomarker"), live)
	err := m.Reload(bg)
	if !errors.Is(err, plugins.ErrABI) {
		t.Fatalf("Reload of a module without the marker: %v, want ErrABI", err)
	}
	if st := m.Status(); !strings.Contains(st.ReloadError, "tokenagent_abi_v1") || st.ReloadErrorAt.IsZero() {
		t.Errorf("Status = %+v", st)
	}
	if out, err := m.Evaluate(bg, &plugins.Input{}); err != nil || !out.Allow {
		t.Errorf("the previous module stopped serving: %+v, %v", out, err)
	}
	copyFile(t, wat(t, "wat/allow_v2"), live)
	if err := m.Reload(bg); err != nil {
		t.Fatal(err)
	}
	if st := m.Status(); st.ReloadError != "" {
		t.Errorf("ReloadError after a good reload = %q", st.ReloadError)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Compiled code lands in CacheDir, and a second engine (a restart) loads from it.
func TestCompilationCacheOnDisk(t *testing.T) {
	dir := t.TempDir()
	path := wat(t, "wat/allow_v1") // a Go module works the same, but takes seconds to compile with -race
	for i := 0; i < 2; i++ {
		e, err := plugins.NewEngine(bg, plugins.EngineOptions{CacheDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		m, err := e.Load(bg, path, plugins.ModuleOptions{Deadline: okDeadline})
		if err != nil {
			t.Fatal(err)
		}
		if out, err := m.Evaluate(bg, &plugins.Input{}); err != nil || !out.Allow {
			t.Fatalf("engine %d: %+v, %v", i, out, err)
		}
		if err := e.Close(bg); err != nil {
			t.Fatal(err)
		}
		var files int
		_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, _ error) error {
			if fi != nil && !fi.IsDir() {
				files++
			}
			return nil
		})
		if files == 0 {
			t.Fatalf("engine %d: nothing cached in %s", i, dir)
		}
	}
}

// Closed modules and engines, canceled callers and oversized inputs fail cleanly.
func TestEvaluateRefusals(t *testing.T) {
	e, err := plugins.NewEngine(bg, plugins.EngineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.Load(bg, wat(t, "wat/allow_v1"), plugins.ModuleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	big := &plugins.Input{Headers: [][2]string{{"x-big", strings.Repeat("x", plugins.MaxInputBytes)}}}
	if _, err := m.Evaluate(bg, big); failureOf(err) != plugins.FailureInputTooLarge {
		t.Errorf("oversized input: %v", err)
	}
	ctx, cancel := context.WithCancel(bg)
	cancel()
	if _, err := m.Evaluate(ctx, &plugins.Input{}); failureOf(err) != plugins.FailureCanceled {
		t.Errorf("canceled context: %v", err)
	}
	if out, err := m.Evaluate(bg, &plugins.Input{}); err != nil || !out.Allow {
		t.Errorf("after the refusals: %+v, %v", out, err)
	}
	if err := e.Close(bg); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Evaluate(bg, &plugins.Input{}); failureOf(err) != plugins.FailureClosed || !errors.Is(err, plugins.ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
	if !m.Status().Closed {
		t.Error("Status().Closed = false after the engine closed")
	}
	if _, err := e.Load(bg, wat(t, "wat/allow_v1"), plugins.ModuleOptions{}); !errors.Is(err, plugins.ErrClosed) {
		t.Errorf("Load after Close: %v", err)
	}
}

// waitFor polls cond until it holds, failing the test after a generous deadline (the machine
// may be busy: this waits for an event, it asserts no timing).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("gave up waiting for %s", what)
		}
	}
}

// A module renamed over the watched file is reloaded even when its size and modification time
// match the old one's (file times come from a coarse clock: two deployments a few
// milliseconds apart can carry the same time).
func TestReloadSeesSameSizeAndTime(t *testing.T) {
	e := plugintest.NewEngine(t, plugins.EngineOptions{PollInterval: 5 * time.Millisecond})
	dir := t.TempDir()
	live := filepath.Join(dir, "site.wasm")
	v1, v2 := wat(t, "wat/allow_v1"), wat(t, "wat/allow_v2")
	b1, err := os.ReadFile(v1)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := os.ReadFile(v2)
	if err != nil {
		t.Fatal(err)
	}
	if len(b1) != len(b2) {
		t.Skipf("the two test modules differ in size (%d, %d); the case needs equal sizes", len(b1), len(b2))
	}
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	put := func(b []byte) {
		tmp := live + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(tmp, when, when); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, live); err != nil {
			t.Fatal(err)
		}
	}
	put(b1)
	m := plugintest.Load(t, e, live, plugins.ModuleOptions{Name: "site", Deadline: okDeadline, Watch: true})
	put(b2)
	waitFor(t, "version 2 to serve", func() bool {
		out, err := m.Evaluate(bg, &plugins.Input{Method: "GET", Path: "/"})
		return err == nil && out.Headers["x-policy-version"] == "2"
	})
}

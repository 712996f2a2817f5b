package plugins_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/plugins"
	"github.com/tokenagent/tokenagent/plugins/opatest"
	"github.com/tokenagent/tokenagent/plugins/plugintest"
)

// The Rego policies of these tests, as OPA-Envoy users write them (SPEC §5a input).
const (
	regoBool = `package envoy.authz

import rego.v1

default allow := false

allow if input.attributes.request.http.method == "GET"

allow if {
	input.identity.kind == "server"
	"write" in input.identity.scopes
}
`
	regoObject = `package envoy.authz

import rego.v1

default result := {"allowed": false, "http_status": 401, "body": "sign in first", "headers": {"X-Login": "https://docs.example.com/login"}}

result := {"allowed": true, "headers": {"X-Tenant": data.tenants[input.identity.site].name, "x-segments": concat("/", input.parsed_path)}} if {
	input.identity.user != ""
	not input.parsed_query.debug
}

result := {"allowed": false, "http_status": 451, "body": "not here"} if input.parsed_query.debug
`
	regoTime = `package envoy.authz

import rego.v1

result := {"allowed": true, "headers": {"x-now": sprintf("%d", [time.now_ns()]), "x-sub": payload.sub}} if {
	[_, payload, _] := io.jwt.decode(input.attributes.request.http.headers["x-jwt"])
}

default result := false
`
	regoHTTPSend = `package envoy.authz

import rego.v1

allow if http.send({"method": "GET", "url": "http://127.0.0.1:1/"}).status_code == 200
`
	regoLoop = `package envoy.authz

import rego.v1

a := numbers.range(1, 4000)

allow if {
	some i in a
	some j in a
	i == j
	i == -1
}
`
)

var tenants = `{"tenants": {"docs": {"name": "Docs Inc."}, "api": {"name": "API Ltd."}}}`

// load loads a Rego bundle with a generous deadline: these tests are about decisions, and a
// busy machine can hold a call's thread for longer than a production deadline.
func load(t *testing.T, e *plugins.Engine, path, entrypoint string) *plugins.Module {
	t.Helper()
	return loadWith(t, e, path, entrypoint, 5*time.Second)
}

func loadWith(t *testing.T, e *plugins.Engine, path, entrypoint string, deadline time.Duration) *plugins.Module {
	t.Helper()
	return plugintest.Load(t, e, path, plugins.ModuleOptions{Name: "rego", Deadline: deadline, Entrypoint: entrypoint})
}

func get(method, path, query string) *plugins.Input {
	return &plugins.Input{Site: "docs", Kind: "anonymous", Method: method, Path: path, Query: query,
		Host: "docs.example.com", Scheme: "https", Time: time.Unix(1700000000, 123)}
}

// A boolean decision: true allows, false denies 403.
func TestOPABoolean(t *testing.T) {
	e := plugintest.NewEngine(t)
	m := load(t, e, opatest.Build(t, map[string]string{"policy.rego": regoBool}, "envoy/authz/allow"), "")
	for _, tc := range []struct {
		in    *plugins.Input
		allow bool
	}{
		{get("GET", "/", ""), true},
		{get("POST", "/pages", ""), false},
		{&plugins.Input{Site: "docs", Kind: "server", User: "42", Scopes: []string{"read", "write"}, Method: "POST", Path: "/pages"}, true},
		{&plugins.Input{Site: "docs", Kind: "server", User: "42", Scopes: []string{"read"}, Method: "POST", Path: "/pages"}, false},
	} {
		out, err := m.Evaluate(context.Background(), tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if out.Allow != tc.allow || (!out.Allow && out.Status != 403) {
			t.Errorf("%s %s as %s: %+v, want allow=%v", tc.in.Method, tc.in.Path, tc.in.Kind, out, tc.allow)
		}
	}
}

// An object decision: headers upstream when allowed, status, body and headers of a denial;
// data.json is the policy's data.
func TestOPAObjectAndData(t *testing.T) {
	e := plugintest.NewEngine(t)
	m := load(t, e, opatest.Build(t, map[string]string{"policy.rego": regoObject, "data.json": tenants}, "envoy/authz/result"), "")
	in := get("GET", "/a/b%20c", "x=1")
	in.User = "42"
	out, err := m.Evaluate(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if !out.Allow || out.Headers["x-tenant"] != "Docs Inc." || out.Headers["x-segments"] != "a/b c" {
		t.Fatalf("allowed decision: %+v", out)
	}
	out, err = m.Evaluate(context.Background(), get("GET", "/", ""))
	if err != nil {
		t.Fatal(err)
	}
	if out.Allow || out.Status != 401 || out.Reason != "sign in first" || out.ResponseHeaders["x-login"] != "https://docs.example.com/login" {
		t.Fatalf("default denial: %+v", out)
	}
	in = get("GET", "/", "debug=1")
	in.User = "42"
	if out, err = m.Evaluate(context.Background(), in); err != nil || out.Allow || out.Status != 451 {
		t.Fatalf("a denial with its own status: %+v %v", out, err)
	}
}

func jwt(t *testing.T, claims string) string {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc([]byte(claims)) + "." + enc([]byte{0xde, 0xad})
}

// time.now_ns is the evaluation's time and io.jwt.decode decodes without verifying: the two
// host built-ins SPEC §5a names.
func TestOPAHostBuiltins(t *testing.T) {
	e := plugintest.NewEngine(t)
	m := load(t, e, opatest.Build(t, map[string]string{"policy.rego": regoTime}, "envoy/authz/result"), "")
	in := get("GET", "/", "")
	in.Headers = [][2]string{{"x-jwt", jwt(t, `{"sub":"alice","exp":1700003600}`)}}
	out, err := m.Evaluate(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if !out.Allow || out.Headers["x-sub"] != "alice" || out.Headers["x-now"] != strconv.FormatInt(in.Time.UnixNano(), 10) {
		t.Fatalf("%+v", out)
	}
	in.Headers = [][2]string{{"x-jwt", "not-a-jwt"}} // io.jwt.decode undefined: the default
	if out, err = m.Evaluate(context.Background(), in); err != nil || out.Allow {
		t.Fatalf("a bad token: %+v %v", out, err)
	}
}

// print() in a module built with --wasm-include-print reaches the agent's debug log, one line
// per call (a string as it is, an undefined argument as <undefined>, other values as JSON), and
// never changes the decision; without the flag, opa build drops print calls.
func TestOPAPrint(t *testing.T) {
	const regoPrint = `package envoy.authz

import rego.v1

default allow := false

allow if {
	print("checking", input.attributes.request.http.method, input.identity.user, input.parsed_path, input.no_such_field)
	input.attributes.request.http.method == "GET"
}
`
	files := map[string]string{"policy.rego": regoPrint}
	for _, tc := range []struct {
		name  string
		flags []string
		lines bool
	}{
		{"with --wasm-include-print", []string{"--wasm-include-print"}, true},
		{"without", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncBuffer
			e := plugintest.NewEngine(t, plugins.EngineOptions{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			m := load(t, e, opatest.BuildFlags(t, files, tc.flags, "envoy/authz/allow"), "")
			for _, method := range []string{"GET", "POST"} {
				in := get(method, "/a/b", "")
				in.User = "42"
				out, err := m.Evaluate(context.Background(), in)
				if err != nil {
					t.Fatal(err)
				}
				if out.Allow != (method == "GET") {
					t.Errorf("%s: allow = %v: print changed the decision", method, out.Allow)
				}
			}
			got := logs.String()
			for _, method := range []string{"GET", "POST"} {
				want := `msg="checking ` + method + ` 42 [\"a\",\"b\"] <undefined>"`
				if strings.Contains(got, want) != tc.lines {
					t.Errorf("log line %s present = %v, want %v; the log:\n%s", want, !tc.lines, tc.lines, got)
				}
			}
			if tc.lines && !strings.Contains(got, "level=DEBUG msg=\"policy log\" policy=rego") {
				t.Errorf("print lines are not debug lines of the policy log:\n%s", got)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for the engine's concurrent log writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A policy that needs a built-in the host does not provide is refused at load, naming it.
func TestOPAUnsupportedBuiltin(t *testing.T) {
	e := plugintest.NewEngine(t)
	_, err := e.Load(context.Background(), opatest.Build(t, map[string]string{"policy.rego": regoHTTPSend}, "envoy/authz/allow"),
		plugins.ModuleOptions{Name: "send"})
	if err == nil || !strings.Contains(err.Error(), "http.send") || !strings.Contains(err.Error(), "does not provide") {
		t.Fatalf("load: %v, want a refusal naming http.send", err)
	}
}

// Entrypoints: the only one by default; several need a name (slashes or dots); an unknown one
// is refused naming the ones there are.
func TestOPAEntrypoints(t *testing.T) {
	e := plugintest.NewEngine(t)
	both := opatest.Build(t, map[string]string{"policy.rego": regoObject + "\nallow := result.allowed\n", "data.json": tenants},
		"envoy/authz/allow", "envoy/authz/result")
	if _, err := e.Load(context.Background(), both, plugins.ModuleOptions{Name: "two"}); err == nil ||
		!strings.Contains(err.Error(), "envoy/authz/allow, envoy/authz/result") {
		t.Fatalf("two entrypoints, none named: %v", err)
	}
	if _, err := e.Load(context.Background(), both, plugins.ModuleOptions{Name: "bad", Entrypoint: "envoy/authz/deny"}); err == nil ||
		!strings.Contains(err.Error(), `no entrypoint "envoy/authz/deny"`) {
		t.Fatalf("an unknown entrypoint: %v", err)
	}
	m := load(t, e, both, "data.envoy.authz.allow")
	in := get("GET", "/", "")
	in.User = "7"
	if out, err := m.Evaluate(context.Background(), in); err != nil || !out.Allow || len(out.Headers) != 0 {
		t.Fatalf("the boolean entrypoint: %+v %v", out, err)
	}
	wat := plugintest.BuildWAT(t, "testdata/wat/allow_v1.wat")
	if _, err := e.Load(context.Background(), wat, plugins.ModuleOptions{Name: "v1", Entrypoint: "x"}); err == nil {
		t.Fatal("an entrypoint for an ABI v1 module was accepted")
	}
}

// A policy that runs past its deadline fails closed (timeout), and a healthy neighbour keeps
// answering meanwhile.
func TestOPALoopingPolicy(t *testing.T) {
	e := plugintest.NewEngine(t)
	loop := loadWith(t, e, opatest.Build(t, map[string]string{"policy.rego": regoLoop}, "envoy/authz/allow"), "", 50*time.Millisecond)
	healthy := load(t, e, opatest.Build(t, map[string]string{"policy.rego": regoBool}, "envoy/authz/allow"), "")
	var wg sync.WaitGroup
	wg.Go(func() {
		_, err := loop.Evaluate(context.Background(), get("GET", "/", ""))
		var pe *plugins.Error
		if !errors.As(err, &pe) || (pe.Failure != plugins.FailureTimeout && pe.Failure != plugins.FailureMemory) {
			t.Errorf("the looping policy: %v, want a timeout", err)
		}
	})
	for range 20 {
		if out, err := healthy.Evaluate(context.Background(), get("GET", "/", "")); err != nil || !out.Allow {
			t.Errorf("the neighbour: %+v %v", out, err)
		}
	}
	wg.Wait()
}

// A new bundle written over the watched file is served without a restart.
func TestOPAHotReload(t *testing.T) {
	e := plugintest.NewEngine(t, plugins.EngineOptions{PollInterval: 5 * time.Millisecond})
	live := filepath.Join(t.TempDir(), "bundle.tar.gz")
	put := func(src string) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(live+".tmp", b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(live+".tmp", live); err != nil {
			t.Fatal(err)
		}
	}
	put(opatest.Build(t, map[string]string{"policy.rego": regoBool}, "envoy/authz/allow"))
	m := plugintest.Load(t, e, live, plugins.ModuleOptions{Name: "hot", Watch: true})
	post := get("POST", "/", "")
	if out, _ := m.Evaluate(context.Background(), post); out.Allow {
		t.Fatal("POST allowed by the first bundle")
	}
	put(opatest.Build(t, map[string]string{"policy.rego": "package envoy.authz\n\nallow := true\n"}, "envoy/authz/allow"))
	waitFor(t, "the new bundle to serve", func() bool {
		out, err := m.Evaluate(context.Background(), post)
		return err == nil && out.Allow
	})
}

// The same module without opa_eval (ABI 1.0 and 1.1 modules) goes through the evaluation
// context exports and decides the same: the export is renamed in a real module.
func TestOPAWithoutOneShotEval(t *testing.T) {
	e := plugintest.NewEngine(t)
	bundle := opatest.Build(t, map[string]string{"policy.rego": regoObject, "data.json": tenants}, "envoy/authz/result")
	wasm := fromBundle(t, bundle, "/policy.wasm")
	patched := bytes.ReplaceAll(wasm, []byte("\x08opa_eval"), []byte("\x08opa_evaZ"))
	if bytes.Equal(patched, wasm) {
		t.Fatal("no opa_eval export to rename")
	}
	withData := rebundle(t, patched, fromBundle(t, bundle, "/data.json"))
	m := load(t, e, withData, "")
	in := get("GET", "/x", "")
	in.User = "42"
	for range 3 { // several evaluations on one instance: the heap is reset each time
		out, err := m.Evaluate(context.Background(), in)
		if err != nil || !out.Allow || out.Headers["x-tenant"] != "Docs Inc." {
			t.Fatalf("through the evaluation context: %+v %v", out, err)
		}
	}
}

func fromBundle(t *testing.T, path, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not in the bundle: %v", name, err)
		}
		if filepath.Clean("/"+h.Name) == name {
			body, _ := io.ReadAll(tr)
			return body
		}
	}
}

// rebundle writes a bundle of policy.wasm and data.json.
func rebundle(t *testing.T, wasm, data []byte) string {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range map[string][]byte{"/policy.wasm": wasm, "/data.json": data} {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	zw.Close()
	p := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

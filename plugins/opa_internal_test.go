package plugins

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
)

// A hand-assembled module importing its memory (min 2, max 10) and exporting it, like OPA's:
//
//	(module (import "env" "memory" (memory 2 10)) (func (export "f") (result i32) (i32.const 7))
//	        (export "memory" (memory 0)))
var importsMemory = []byte{
	0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
	0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, // type: () -> i32
	0x02, 0x10, 0x01, 0x03, 'e', 'n', 'v', 0x06, 'm', 'e', 'm', 'o', 'r', 'y', 0x02, 0x01, 0x02, 0x0a, // import memory 2..10
	0x03, 0x02, 0x01, 0x00, // function 0: type 0
	0x07, 0x0e, 0x02, 0x01, 'f', 0x00, 0x00, 0x06, 'm', 'e', 'm', 'o', 'r', 'y', 0x02, 0x00, // exports
	0x0a, 0x06, 0x01, 0x04, 0x00, 0x41, 0x07, 0x0b, // code: i32.const 7
}

// The imported memory becomes a defined one with the same limits: the module compiles without
// any import and runs, twice at once (two instances, two memories).
func TestDefineImportedMemory(t *testing.T) {
	out, minPages, imported, err := defineImportedMemory(importsMemory)
	if err != nil || !imported || minPages != 2 {
		t.Fatalf("defineImportedMemory: %v, imported %v, min %d", err, imported, minPages)
	}
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	cm, err := r.CompileModule(ctx, out)
	if err != nil {
		t.Fatalf("the rewritten module does not compile: %v", err)
	}
	if len(cm.ImportedMemories()) != 0 || len(cm.ImportedFunctions()) != 0 {
		t.Fatal("imports left")
	}
	mem := cm.ExportedMemories()["memory"]
	if mem == nil || mem.Min() != 2 {
		t.Fatalf("exported memory %v", mem)
	}
	if max, ok := mem.Max(); !ok || max != 10 {
		t.Fatalf("max %d %v, want 10", max, ok)
	}
	for range 2 {
		m, err := r.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName(""))
		if err != nil {
			t.Fatal(err)
		}
		res, err := m.ExportedFunction("f").Call(ctx)
		if err != nil || res[0] != 7 {
			t.Fatalf("f() = %v, %v", res, err)
		}
	}
	// A module importing no memory is left as it is.
	same, _, imported, err := defineImportedMemory(out)
	if err != nil || imported || !bytes.Equal(same, out) {
		t.Fatalf("a module with its own memory: changed=%v imported=%v err=%v", !bytes.Equal(same, out), imported, err)
	}
	for _, bad := range [][]byte{nil, []byte("\x00asm"), importsMemory[:20], append(append([]byte{}, importsMemory[:8]...), 0x02, 0xff)} {
		if _, _, _, err := defineImportedMemory(bad); err == nil {
			t.Errorf("%x accepted", bad)
		}
	}
}

// FuzzDefineImportedMemory: any bytes are refused or rewritten into a module that still parses
// the same way; never a panic.
func FuzzDefineImportedMemory(f *testing.F) {
	f.Add(importsMemory)
	f.Fuzz(func(t *testing.T, b []byte) {
		out, _, imported, err := defineImportedMemory(b)
		if err != nil {
			return
		}
		if imported {
			if _, _, again, err := defineImportedMemory(out); err != nil || again {
				t.Fatalf("the rewritten module still imports a memory (%v)", err)
			}
		}
	})
}

func tarGz(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write([]byte(body))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func TestReadBundle(t *testing.T) {
	b, err := readBundle(tarGz(t, map[string]string{
		"/policy.wasm":          "\x00asm",
		"/data.json":            `{"a": {"x": 1}, "n": 12345678901234567890}`,
		"/a/y/data.json":        `{"z": true}`,
		"/deep/list/data.json":  `[1, 2]`,
		"/policy.rego":          "package x",
		"/.manifest":            `{"wasm": [{"entrypoint": "x/allow", "module": "/policy.wasm"}, {"entrypoint": "x/result", "module": "/policy.wasm"}]}`,
		"/.signatures.json":     "{}",
		"/ignored/other.wasmxx": "",
	}))
	if err != nil {
		t.Fatal(err)
	}
	var data map[string]any
	d := json.NewDecoder(bytes.NewReader(b.data))
	d.UseNumber()
	if err := d.Decode(&data); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(data)
	if string(got) != `{"a":{"x":1,"y":{"z":true}},"deep":{"list":[1,2]},"n":12345678901234567890}` || string(b.wasm) != "\x00asm" {
		t.Fatalf("data %s, wasm %q", got, b.wasm)
	}
	for name, files := range map[string]map[string]string{
		"no policy":          {"/data.json": "{}"},
		"two modules":        {"/a.wasm": "x", "/b.wasm": "y", "/.manifest": `{"wasm":[{"module":"/a.wasm"},{"module":"/b.wasm"}]}`},
		"data not an object": {"/policy.wasm": "x", "/data.json": "[1]"},
		"conflicting data":   {"/policy.wasm": "x", "/data.json": `{"a": 1}`, "/a/data.json": `{"b": 2}`},
		"bad json":           {"/policy.wasm": "x", "/data.json": "{"},
	} {
		if _, err := readBundle(tarGz(t, files)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := readBundle([]byte("not gzip")); err == nil {
		t.Error("not gzip: accepted")
	}
}

// The decision rules of SPEC §5a, and the refusals.
func TestDecodeOPAResult(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Output
		err  string
	}{
		{`[]`, Output{Status: 403, Reason: "the policy's decision is undefined"}, ""},
		{`[{"result": true}]`, Output{Allow: true}, ""},
		{`[{"result": false}]`, Output{Status: 403}, ""},
		{`[{"result": {"allowed": true, "headers": {"X-A": "1", "x-b": ["2", "3"]}}}]`, Output{Allow: true, Headers: map[string]string{"x-a": "1", "x-b": "2, 3"}}, ""},
		{`[{"result": {"allowed": false, "http_status": 429, "body": "slow down", "headers": {"retry-after": "5"}}}]`,
			Output{Status: 429, Reason: "slow down", ResponseHeaders: map[string]string{"retry-after": "5"}}, ""},
		{`[{"result": {"allowed": false, "body": "` + strings.Repeat("é", 200) + `"}}]`, Output{Status: 403, Reason: strings.Repeat("é", 128)}, ""},
		{`[{"result": {"allowed": true, "headers": {"x-auth-user": "1"}}}]`, Output{}, "x-auth-"},
		{`[{"result": {"allowed": true, "headers": {"X_Auth_User": "1"}}}]`, Output{}, "x-auth-"},
		{`[{"result": {"allowed": true, "headers": {"host": "evil"}}}]`, Output{}, "reserved"},
		{`[{"result": {"allowed": true, "headers": {"x-a": "a\nb"}}}]`, Output{}, "control"},
		{`[{"result": {"allowed": true, "headers": {"x-a": 1}}}]`, Output{}, "string"},
		{`[{"result": {"allowed": false, "http_status": 200}}]`, Output{}, "400..599"},
		{`[{"result": {"headers": {}}}]`, Output{}, "allowed"},
		{`[{"result": "yes"}]`, Output{}, "neither"},
		{`{}`, Output{}, "array"},
	} {
		got, err := decodeOPAResult([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v, want an error about %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !equalOutput(got, tc.want) {
			t.Errorf("%s:\n got  %+v %v\n want %+v", tc.in, got, err, tc.want)
		}
	}
}

func equalOutput(a, b Output) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// FuzzDecodeOPAResult: any result a module returns is a decision or an error, never a panic,
// and an allowed decision never sets an x-auth-* header.
func FuzzDecodeOPAResult(f *testing.F) {
	f.Add([]byte(`[{"result": {"allowed": true, "headers": {"x-a": ["1"]}}}]`))
	f.Add([]byte(`[{"result": true}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := decodeOPAResult(b)
		if err != nil {
			return
		}
		for name := range out.Headers {
			if strings.HasPrefix(strings.ReplaceAll(strings.ToLower(name), "_", "-"), "x-auth-") {
				t.Fatalf("header %q allowed", name)
			}
		}
		if !out.Allow && (out.Status < 400 || out.Status > 599) {
			t.Fatalf("a denial with status %d", out.Status)
		}
	})
}

// TestInternalPrint: one line per combination of operand values, <undefined> for an empty set,
// strings as they are and other values as JSON, bounded in lines and length, always defined.
func TestInternalPrint(t *testing.T) {
	long := strings.Repeat("x", 2*maxLogBytes)
	many := make([]any, 40)
	for i := range many {
		many[i] = float64(i)
	}
	tests := []struct {
		name     string
		operands any
		want     []string
	}{
		{"strings and values", []any{[]any{"user"}, []any{"42"}, []any{[]any{"a", "b"}}, []any{map[string]any{"k": true}}}, []string{`user 42 ["a","b"] {"k":true}`}},
		{"undefined", []any{[]any{"x"}, []any{}}, []string{"x <undefined>"}},
		{"cross product", []any{[]any{"a", "b"}, []any{1.0, 2.0}}, []string{"a 1", "a 2", "b 1", "b 2"}},
		{"no operands", []any{}, []string{""}},
		{"not an array", "x", nil},
		{"control characters", []any{[]any{"a\nb"}}, []string{"a\uFFFDb"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := &opaInstance{}
			res, err := internalPrint(o, []any{tc.operands})
			if err != nil || res != true {
				t.Fatalf("internalPrint = %v, %v; want true (always defined)", res, err)
			}
			if !slices.Equal(o.printed, tc.want) {
				t.Errorf("lines = %q, want %q", o.printed, tc.want)
			}
		})
	}
	o := &opaInstance{}
	_, _ = internalPrint(o, []any{[]any{many, many}})
	if len(o.printed) != maxPrintLines {
		t.Errorf("a 40×40 cross product made %d lines, want the bound %d", len(o.printed), maxPrintLines)
	}
	o = &opaInstance{}
	_, _ = internalPrint(o, []any{[]any{[]any{long}}})
	if len(o.printed) != 1 || len(o.printed[0]) > maxLogBytes+3 {
		t.Errorf("a long line is not cut: %d bytes", len(o.printed[0]))
	}
}

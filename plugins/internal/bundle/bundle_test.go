package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"testing"
)

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

func TestRead(t *testing.T) {
	b, err := Read(tarGz(t, map[string]string{
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
	d := json.NewDecoder(bytes.NewReader(b.Data))
	d.UseNumber()
	if err := d.Decode(&data); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(data)
	if string(got) != `{"a":{"x":1,"y":{"z":true}},"deep":{"list":[1,2]},"n":12345678901234567890}` || string(b.Wasm) != "\x00asm" {
		t.Fatalf("data %s, wasm %q", got, b.Wasm)
	}
	for name, files := range map[string]map[string]string{
		"no policy":          {"/data.json": "{}"},
		"two modules":        {"/a.wasm": "x", "/b.Wasm": "y", "/.manifest": `{"wasm":[{"module":"/a.wasm"},{"module":"/b.Wasm"}]}`},
		"data not an object": {"/policy.wasm": "x", "/data.json": "[1]"},
		"conflicting data":   {"/policy.wasm": "x", "/data.json": `{"a": 1}`, "/a/data.json": `{"b": 2}`},
		"bad json":           {"/policy.wasm": "x", "/data.json": "{"},
	} {
		if _, err := Read(tarGz(t, files)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Read([]byte("not gzip")); err == nil {
		t.Error("not gzip: accepted")
	}
}

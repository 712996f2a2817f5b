// Package bundle reads what the policy engine takes from an OPA bundle (`opa build -t wasm`,
// a .tar.gz): its one WebAssembly module and its data document, within size limits.
package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// Limits of an OPA bundle (SPEC §5a): the archive is client-independent but still only read up
// to these sizes, so a wrong file cannot exhaust memory.
const (
	maxBundleBytes   = 64 << 20 // all files, uncompressed
	maxBundleEntries = 10000
)

// Bundle is what the host takes from an `opa build -t wasm` bundle.
type Bundle struct {
	// Wasm is the policy module.
	Wasm []byte
	// Data is the bundle's data document as one JSON object ("{}" when it has none): /data.json
	// and every data.json below it, each at its directory's path.
	Data []byte
}

// IsGzip reports whether b starts like a gzip stream (a bundle .tar.gz).
func IsGzip(b []byte) bool { return len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b }

// Read reads a bundle: its policy (the one WebAssembly module the manifest names, or
// /policy.wasm) and its data. Other files (Rego sources, signatures) are ignored.
func Read(b []byte) (*Bundle, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	tr := tar.NewReader(zr)
	files := map[string][]byte{}
	var total int64
	for n := 0; ; n++ {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("bundle: %w", err)
		}
		if n >= maxBundleEntries {
			return nil, fmt.Errorf("bundle: more than %d files", maxBundleEntries)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := path.Clean("/" + h.Name)
		base := path.Base(name)
		if base != "policy.wasm" && base != "data.json" && base != ".manifest" && !strings.HasSuffix(base, ".wasm") {
			continue
		}
		if h.Size < 0 || total+h.Size > maxBundleBytes {
			return nil, fmt.Errorf("bundle: over %d MiB uncompressed", maxBundleBytes>>20)
		}
		body, err := io.ReadAll(io.LimitReader(tr, h.Size+1))
		if err != nil {
			return nil, fmt.Errorf("bundle: %s: %w", name, err)
		}
		if int64(len(body)) != h.Size {
			return nil, fmt.Errorf("bundle: %s: size does not match its header", name)
		}
		total += h.Size
		files[name] = body
	}

	module := "/policy.wasm"
	if m, ok := files["/.manifest"]; ok {
		var man struct {
			Wasm []struct {
				Module string `json:"module"`
			} `json:"wasm"`
		}
		if err := json.Unmarshal(m, &man); err != nil {
			return nil, fmt.Errorf("bundle: .manifest: %w", err)
		}
		seen := map[string]bool{}
		for _, w := range man.Wasm {
			seen[path.Clean("/"+w.Module)] = true
		}
		if len(seen) > 1 {
			return nil, fmt.Errorf("bundle: .manifest names %d WebAssembly modules; the host runs one (build with one module)", len(seen))
		}
		for m := range seen {
			module = m
		}
	}
	wasm, ok := files[module]
	if !ok {
		return nil, fmt.Errorf("bundle: no %s in it (build it with opa build -t wasm)", module)
	}
	data, err := mergeData(files)
	if err != nil {
		return nil, err
	}
	return &Bundle{Wasm: wasm, Data: data}, nil
}

// mergeData builds the data document from the bundle's data.json files, each placed at its
// directory's path (/a/b/data.json is data.a.b), as OPA does.
func mergeData(files map[string][]byte) ([]byte, error) {
	root := map[string]any{}
	for name, body := range files {
		if path.Base(name) != "data.json" {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("bundle: %s: %w", name, err)
		}
		dir := strings.Trim(path.Dir(name), "/")
		if dir == "" {
			obj, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("bundle: %s is not a JSON object", name)
			}
			if err := mergeInto(root, obj, name); err != nil {
				return nil, err
			}
			continue
		}
		node := root
		parts := strings.Split(dir, "/")
		for _, p := range parts[:len(parts)-1] {
			next, ok := node[p].(map[string]any)
			if !ok {
				if _, taken := node[p]; taken {
					return nil, fmt.Errorf("bundle: %s: data.%s is not an object", name, strings.ReplaceAll(dir, "/", "."))
				}
				next = map[string]any{}
				node[p] = next
			}
			node = next
		}
		last := parts[len(parts)-1]
		old, taken := node[last]
		dst, isObj := old.(map[string]any)
		obj, ok := v.(map[string]any)
		switch {
		case taken && (!isObj || !ok):
			return nil, fmt.Errorf("bundle: %s: data.%s is given twice", name, strings.ReplaceAll(dir, "/", "."))
		case taken:
			if err := mergeInto(dst, obj, name); err != nil {
				return nil, err
			}
		default:
			node[last] = v
		}
	}
	return json.Marshal(root)
}

// mergeInto copies src's keys into dst, merging objects, refusing a conflict of other values.
func mergeInto(dst, src map[string]any, where string) error {
	for k, v := range src {
		if old, ok := dst[k]; ok {
			a, aok := old.(map[string]any)
			b, bok := v.(map[string]any)
			if !aok || !bok {
				return fmt.Errorf("bundle: %s: data key %q is given twice", where, k)
			}
			if err := mergeInto(a, b, where); err != nil {
				return err
			}
			continue
		}
		dst[k] = v
	}
	return nil
}

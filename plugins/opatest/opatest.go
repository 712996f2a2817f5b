// Package opatest compiles Rego to OPA WebAssembly bundles for tests, and evaluates the same
// Rego with OPA itself, with the real `opa` command line (OPA 1.22.4, built from its Go module by
// policies/opabin/build.sh into the user's cache, like the Vault binary).
package opatest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/tokenagent/tokenagent/plugins/plugintest"
)

// Version is the OPA release the tests use.
const Version = "1.22.4"

// BinaryPath is where the binary is: $TOKENAGENT_OPA_BIN, or opa-<Version> in
// ~/.cache/tokenagent.
func BinaryPath() string {
	if p := os.Getenv("TOKENAGENT_OPA_BIN"); p != "" {
		return p
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "tokenagent", "opa-"+Version)
}

// Binary returns the opa binary, or an error saying how to build it.
func Binary() (string, error) {
	p := BinaryPath()
	if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("no opa binary at %s: run policies/opabin/build.sh (.ci/test does)", p)
	}
	return p, nil
}

// Build writes files (name → Rego source, or data.json) into a directory and runs
// `opa build -t wasm -e <entrypoint>...` on it; it returns the bundle's path, cached by content.
func Build(tb testing.TB, files map[string]string, entrypoints ...string) string {
	tb.Helper()
	return BuildFlags(tb, files, nil, entrypoints...)
}

// BuildFlags is Build with more flags for `opa build` (for example --wasm-include-print).
func BuildFlags(tb testing.TB, files map[string]string, flags []string, entrypoints ...string) string {
	tb.Helper()
	bin, err := Binary()
	if err != nil {
		tb.Fatal(err)
	}
	key := hashOf(files, append(append([]string(nil), flags...), entrypoints...))
	path, err := plugintest.CachedBuild(filepath.Join("opa", key+".tar.gz"), func(tmp string) error {
		dir, err := os.MkdirTemp("", "opatest-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if err := write(dir, files); err != nil {
			return err
		}
		args := append([]string{"build", "-t", "wasm", "-o", tmp}, flags...)
		for _, e := range entrypoints {
			args = append(args, "-e", e)
		}
		args = append(args, ".")
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("opa %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("opatest: %v", err)
	}
	return path
}

// Eval evaluates query (e.g. "data.envoy.authz.allow") over files with input, with
// `opa eval --format json`, and returns the result set as OPA prints it: [{"result": …}] or []
// (undefined).
func Eval(tb testing.TB, files map[string]string, input any, query string) json.RawMessage {
	tb.Helper()
	bin, err := Binary()
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	if err := write(dir, files); err != nil {
		tb.Fatal(err)
	}
	in, err := json.Marshal(input)
	if err != nil {
		tb.Fatal(err)
	}
	inPath := filepath.Join(tb.TempDir(), "input.json")
	if err := os.WriteFile(inPath, in, 0o600); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "eval", "--format", "json", "--data", dir, "--input", inPath, query)
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		tb.Fatalf("opa eval %s: %v\n%s", query, err, ee.Stderr)
	} else if err != nil {
		tb.Fatal(err)
	}
	var doc struct {
		Result []struct {
			Expressions []struct {
				Value json.RawMessage `json:"value"`
			} `json:"expressions"`
		} `json:"result"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		tb.Fatalf("opa eval output %s: %v", out, err)
	}
	if len(doc.Result) == 0 {
		return json.RawMessage("[]")
	}
	v := doc.Result[0].Expressions[0].Value
	return json.RawMessage(`[{"result":` + string(v) + `}]`)
}

func write(dir string, files map[string]string) error {
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func hashOf(files map[string]string, entrypoints []string) string {
	h := sha256.New()
	fmt.Fprintf(h, "opa %s\n", Version)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(h, "%s %d\n%s\n", n, len(files[n]), files[n])
	}
	fmt.Fprintf(h, "entrypoints %q\n", entrypoints)
	return hex.EncodeToString(h.Sum(nil))[:32]
}

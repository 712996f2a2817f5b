// Package filetest builds real key stores from YAML text for tests and benchmarks: the keys
// file is written to a temporary directory and read by the real file source, so tests go
// through the same decoding and caching as the agent.
package filetest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file"
)

// Write writes a keys file with contents keysYAML into a test directory and returns its path.
func Write(tb testing.TB, keysYAML string) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "keys.yaml")
	if err := os.WriteFile(p, []byte(keysYAML), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// Store returns a Store over a file source holding keysYAML, closed when the test ends.
func Store(tb testing.TB, keysYAML string, opts vault.StoreOptions) *vault.Store {
	tb.Helper()
	src, err := file.Open(Write(tb, keysYAML))
	if err != nil {
		tb.Fatalf("keys file: %v", err)
	}
	s, err := vault.NewStore(src, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

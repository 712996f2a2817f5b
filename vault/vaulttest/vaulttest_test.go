package vaulttest

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestMissingBinaryNamesTheFix: without a binary, the error says where it looked and how to
// build one (tests fail with it; they are never skipped).
func TestMissingBinaryNamesTheFix(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-vault-here")
	t.Setenv(EnvBinary, missing)
	if got := BinaryPath(); got != missing {
		t.Fatalf("BinaryPath = %q, want %q", got, missing)
	}
	_, err := New()
	if err == nil {
		t.Fatal("New started a server without a binary")
	}
	for _, want := range []string{missing, "vault/devserver/build.sh", EnvBinary} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestDefaultBinaryPath: without the variable, the binary is looked for in the user's cache.
func TestDefaultBinaryPath(t *testing.T) {
	t.Setenv(EnvBinary, "")
	t.Setenv("HOME", "/home/someone")
	if got, want := BinaryPath(), "/home/someone/.cache/tokenagent/vault-"+Version; got != want {
		t.Errorf("BinaryPath = %q, want %q", got, want)
	}
}

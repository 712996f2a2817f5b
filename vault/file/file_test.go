package file

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/vault"
)

func TestParseErrorsNameTheField(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"unknown top-level field", "sites: {}\nsitez: {}\n", "sitez"},
		{"unknown section", "sites: {docs: {server-token: {}}}\n", "sites.docs.server-token"},
		{"authtoken not a list", "sites: {docs: {authtoken: {key: x}}}\n", "sites.docs.authtoken"},
		{"generation not a map", "sites: {docs: {authtoken: [x]}}\n", "sites.docs.authtoken[0]"},
		{"bad created time", "sites: {docs: {authtoken: [{key: x, created: yesterday}]}}\n", "sites.docs.authtoken[0].created"},
		{"single record not a map", "sites: {docs: {legacy: [1]}}\n", "sites.docs.legacy"},
		{"named record not a map", "sites: {docs: {server-tokens: {k1: x}}}\n", "sites.docs.server-tokens.k1"},
		{"not YAML", "sites: [", "keys file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse("keys.yaml", []byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v does not name %q", err, tc.want)
			}
		})
	}
}

func TestSourceReadsAndReloads(t *testing.T) {
	p := filepath.Join(t.TempDir(), "keys.yaml")
	write := func(s string) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`sites:
  docs:
    authtoken:
      - {key: a, created: "2026-11-20T00:00:00Z"}
      - {key: b, created: "2026-11-01T00:00:00Z"}
    server-tokens: {k2: {secret: two}, k1: {secret: one}}
`)
	src, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	src.checkGap = 0 // look at the file on every read
	ctx := context.Background()
	raw, err := src.Read(ctx, "sites/docs/server-tokens/k1")
	if err != nil || raw.Data["secret"] != "one" {
		t.Fatalf("read = %+v, %v", raw, err)
	}
	names, _ := src.List(ctx, "sites/docs/server-tokens")
	if strings.Join(names, ",") != "k1,k2" {
		t.Fatalf("list = %v, want sorted names", names)
	}
	gens, err := src.Versions(ctx, "sites/docs/authtoken", time.Time{})
	if err != nil || len(gens) != 2 || gens[0].Version != 2 || !gens[1].Replaced.Equal(gens[0].Created) {
		t.Fatalf("versions = %+v, %v", gens, err)
	}
	if _, err := src.Read(ctx, "sites/docs/oauth"); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("absent record: %v", err)
	}

	// A change on disk is picked up; a broken file keeps the last good contents and says why.
	write("sites:\n  docs:\n    server-tokens: {k1: {secret: uno}}\n")
	bump(t, p)
	if raw, _ := src.Read(ctx, "sites/docs/server-tokens/k1"); raw.Data["secret"] != "uno" {
		t.Fatalf("after a change: %v", raw.Data)
	}
	write("sites: [broken")
	bump(t, p)
	if raw, _ := src.Read(ctx, "sites/docs/server-tokens/k1"); raw.Data["secret"] != "uno" {
		t.Fatalf("a broken file replaced the good contents: %v", raw.Data)
	}
	if err := src.Ready(); err == nil || !strings.Contains(err.Error(), "keys file") {
		t.Fatalf("Ready after a broken file = %v", err)
	}
}

// bump moves the file's modification time, so a rewrite within the same clock tick is seen.
func bump(t *testing.T, p string) {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	next := st.ModTime().Add(time.Second)
	if err := os.Chtimes(p, next, next); err != nil {
		t.Fatal(err)
	}
}

package filestamp_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/vault/filestamp"
)

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A stamp changes with the size, the modification time, and the file's identity: a file
// renamed over the old one is a change even with the same size and time.
func TestStamp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if s := filestamp.Of(p); s.Exists() || s != (filestamp.Stamp{}) {
		t.Fatalf("a missing file: %+v", s)
	}
	write(t, p, "one")
	a := filestamp.Of(p)
	if !a.Exists() || filestamp.Of(p) != a {
		t.Fatal("an unchanged file changed stamp")
	}
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		change func()
	}{
		{"size", func() { write(t, p, "three") }},
		{"time", func() { write(t, p, "four!"); _ = os.Chtimes(p, when, when) }},
		{"renamed over, same size and time", func() {
			q := filepath.Join(dir, "g")
			write(t, q, "five!")
			if err := os.Chtimes(q, when, when); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(q, p); err != nil {
				t.Fatal(err)
			}
		}},
		{"deleted", func() { _ = os.Remove(p) }},
	} {
		before := filestamp.Of(p)
		tc.change()
		if filestamp.Of(p) == before {
			t.Errorf("%s: the stamp did not change", tc.name)
		}
	}
	// FromInfo of an open file agrees with Of.
	write(t, p, "six")
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if filestamp.FromInfo(fi) != filestamp.Of(p) {
		t.Fatal("FromInfo and Of disagree")
	}
}

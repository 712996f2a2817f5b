package plugins_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/plugins"
	"github.com/tokenagent/tokenagent/plugins/plugintest"
)

// registry is a Registry for a test: short retry and retirement periods, compiled code cached,
// closed when the test ends.
func registry(t *testing.T) *plugins.Registry {
	t.Helper()
	r := plugins.NewRegistry(plugins.RegistryOptions{
		Engine:      plugins.EngineOptions{CacheDir: filepath.Join(plugintest.CacheDir(), "wazero"), Logger: slog.New(slog.DiscardHandler)},
		LoadRetry:   20 * time.Millisecond,
		RetireGrace: 20 * time.Millisecond,
	})
	t.Cleanup(func() { _ = r.Close(context.Background()) })
	return r
}

// eventually polls cond until it holds, failing the test after a generous deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 30s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func allows(t *testing.T, m *plugins.Module) bool {
	t.Helper()
	out, err := m.Evaluate(context.Background(), &plugins.Input{Site: "docs", Kind: "anonymous", Method: "GET", Path: "/"})
	return err == nil && out.Allow
}

// TestRegistryLoadsOnce: one Entry per key, loaded before Entry returns and shared by every
// config that names it; another deadline or entrypoint is another module.
func TestRegistryLoadsOnce(t *testing.T) {
	r := registry(t)
	path := plugintest.BuildWAT(t, "testdata/wat/allow_v1.wat")
	ctx := context.Background()
	key := plugins.ModuleKey{Path: path, Deadline: time.Second}
	e := r.Entry(ctx, key, "docs")
	if e.Module() == nil || e.Err() != nil || e.Key() != key {
		t.Fatalf("entry: module %v, err %v, key %+v", e.Module(), e.Err(), e.Key())
	}
	if !allows(t, e.Module()) {
		t.Fatal("the module does not allow")
	}
	if again := r.Entry(ctx, key, "other"); again != e {
		t.Fatal("a second Entry for the same key loaded the module again")
	}
	other := r.Entry(ctx, plugins.ModuleKey{Path: path, Deadline: 2 * time.Second}, "docs")
	if other == e || other.Module() == nil || other.Module() == e.Module() {
		t.Fatal("another deadline shares the module")
	}
}

// TestRegistryRetriesUntilLoaded: a module that fails to load has an entry without a module and
// with the error (fail closed), and is tried again until its file is fixed.
func TestRegistryRetriesUntilLoaded(t *testing.T) {
	r := registry(t)
	good, err := os.ReadFile(plugintest.BuildWAT(t, "testdata/wat/allow_v1.wat"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "policy.wasm")
	if err := os.WriteFile(path, []byte("not wasm"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := r.Entry(context.Background(), plugins.ModuleKey{Path: path, Deadline: time.Second}, "docs")
	if e.Module() != nil || e.Err() == nil {
		t.Fatalf("a bad file: module %v, err %v", e.Module(), e.Err())
	}
	if err := os.WriteFile(path, good, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the fixed module loaded by a retry", func() bool { return e.Module() != nil })
	if e.Err() != nil || !allows(t, e.Module()) {
		t.Fatalf("after the retry: err %v", e.Err())
	}
}

// TestRegistryKeepOnly: after a reload, a module no config uses is closed once RetireGrace has
// passed (calls started before then finish on it); the kept one serves on.
func TestRegistryKeepOnly(t *testing.T) {
	r := registry(t)
	ctx := context.Background()
	path := plugintest.BuildWAT(t, "testdata/wat/allow_v1.wat")
	keep := plugins.ModuleKey{Path: path, Deadline: time.Second}
	drop := plugins.ModuleKey{Path: path, Deadline: 3 * time.Second}
	kept, dropped := r.Entry(ctx, keep, "a").Module(), r.Entry(ctx, drop, "b").Module()
	r.KeepOnly(map[plugins.ModuleKey]bool{keep: true})
	eventually(t, "the dropped module closed", func() bool {
		_, err := dropped.Evaluate(ctx, &plugins.Input{Site: "b", Kind: "anonymous", Method: "GET", Path: "/"})
		return errors.Is(err, plugins.ErrClosed)
	})
	if !allows(t, kept) {
		t.Fatal("the kept module stopped serving")
	}
	if again := r.Entry(ctx, drop, "b"); again.Module() == nil || again.Module() == dropped {
		t.Fatal("the dropped key is not loaded afresh when a config names it again")
	}
}

// TestRegistryClose: Close closes every module and stops retries; Entry returns nil after it.
func TestRegistryClose(t *testing.T) {
	r := registry(t)
	ctx := context.Background()
	m := r.Entry(ctx, plugins.ModuleKey{Path: plugintest.BuildWAT(t, "testdata/wat/allow_v1.wat"), Deadline: time.Second}, "a").Module()
	bad := r.Entry(ctx, plugins.ModuleKey{Path: filepath.Join(t.TempDir(), "missing.wasm")}, "b")
	if bad.Module() != nil {
		t.Fatal("a missing file loaded")
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Evaluate(ctx, &plugins.Input{Site: "a", Kind: "anonymous", Method: "GET", Path: "/"}); !errors.Is(err, plugins.ErrClosed) {
		t.Fatalf("a module after Close: %v", err)
	}
	if e := r.Entry(ctx, plugins.ModuleKey{Path: "x.wasm"}, "c"); e != nil {
		t.Fatal("Entry after Close returned an entry")
	}
	if err := r.Close(ctx); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
}

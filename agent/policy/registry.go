// Package policy keeps the sites' WebAssembly policy modules (SPEC §5) for the life of the
// process: a Registry loads each module once, on the package plugins engine it starts on first
// use, and hands the same module to every config that names it, so a config reload keeps
// compiled code and warm instances.
//
//	r := policy.NewRegistry(policy.Options{CacheDir: dir, Registerer: reg})
//	defer r.Close(ctx)
//	e := r.Entry(ctx, policy.Key{Path: "docs.wasm", Deadline: 5 * time.Millisecond}, "docs")
//	if m := e.Module(); m != nil { out, err := m.Evaluate(ctx, &in) }
//
// # Notes
//
//   - Safe for concurrent use. NewRegistry starts nothing; Close stops every goroutine the
//     registry started (load retries, retirements) and closes every module and the engine.
//   - A module that fails to load is retried every LoadRetry until it loads; until then its
//     Entry has no Module (the agent denies with policy_error, fail closed, and is not ready).
//     A loaded module that changes on disk is recompiled in the background and swapped in
//     (plugins.Module); a bad new file leaves the old module serving and shows as a warning.
package policy

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/plugins"
	"github.com/tokenagent/tokenagent/vault/blocking"
)

// RetireGrace is how long a module no longer used by the current config is kept after a
// reload, so checks that started under the old config finish on it.
const RetireGrace = 30 * time.Second

// LoadRetry is how often a module that failed to load is tried again.
const LoadRetry = 5 * time.Second

// Options configure a Registry.
type Options struct {
	// CacheDir keeps compiled modules on disk across restarts (empty: in memory only).
	CacheDir string
	// Registerer receives the engine's collectors when it starts (nil: not registered).
	Registerer prometheus.Registerer
	// Logger receives load failures and the engine's logs (default slog.Default()).
	Logger *slog.Logger
}

// Key names one loaded module: a file, the deadline it runs with and, for an OPA bundle, the
// entrypoint it evaluates.
type Key struct {
	Path     string
	Deadline time.Duration
	// Entrypoint is the rule an OPA bundle evaluates (site setting policy_entrypoint).
	Entrypoint string
}

// Registry holds the loaded modules, by Key.
type Registry struct {
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	engine  *plugins.Engine
	entries map[Key]*Entry
	closed  bool
	done    chan struct{}
	bg      sync.WaitGroup
}

// Entry is one module of the registry: loaded, or failing to load.
type Entry struct {
	key  Key
	name string // the first site using it: the module's name in metrics and logs

	mu  sync.Mutex
	mod *plugins.Module
	err error
}

// NewRegistry returns an empty registry; the engine starts when a first module is loaded.
func NewRegistry(opts Options) *Registry {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Registry{opts: opts, log: opts.Logger, entries: map[Key]*Entry{}, done: make(chan struct{})}
}

// Close closes every module and the engine, and waits for the registry's goroutines.
func (r *Registry) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	close(r.done)
	entries, engine := r.entries, r.engine
	r.entries = nil
	r.mu.Unlock()
	r.bg.Wait()
	for _, e := range entries {
		if m := e.Module(); m != nil {
			_ = m.Close(ctx)
		}
	}
	if engine != nil {
		return engine.Close(ctx)
	}
	return nil
}

// Entry returns the entry for key, loading the module the first time (synchronously, so a
// config's modules are ready when its agent starts serving); name labels it in metrics and
// logs. It returns nil once the registry is closed.
func (r *Registry) Entry(ctx context.Context, key Key, name string) *Entry {
	r.mu.Lock()
	if e, ok := r.entries[key]; ok || r.closed {
		r.mu.Unlock()
		return e
	}
	e := &Entry{key: key, name: name}
	r.entries[key] = e
	engine, err := r.engineLocked()
	r.mu.Unlock()
	if err == nil {
		err = e.load(ctx, engine)
	} else {
		e.setErr(err)
	}
	if err != nil {
		r.log.Error("policy module failed to load; its sites deny with policy_error until it loads",
			"policy", key.Path, "site", name, "error", err.Error())
		r.goBackground(func() { r.retry(e) })
	}
	return e
}

// engineLocked starts the engine on first use. r.mu must be held.
func (r *Registry) engineLocked() (*plugins.Engine, error) {
	if r.engine != nil {
		return r.engine, nil
	}
	e, err := plugins.NewEngine(context.Background(), plugins.EngineOptions{
		CacheDir: r.opts.CacheDir, Registerer: r.opts.Registerer, Logger: r.log,
		BeforeWait: blocking.Ahead}) // a check about to wait hands its connection on
	if err != nil {
		return nil, fmt.Errorf("policy engine: %w", err)
	}
	r.engine = e
	return e, nil
}

// KeepOnly closes, after RetireGrace, every module whose key keep does not hold: after a
// config reload, the modules only the replaced config used. Checks that started under the old
// config finish on them meanwhile.
func (r *Registry) KeepOnly(keep map[Key]bool) {
	r.mu.Lock()
	var drop []*Entry
	for k, e := range r.entries {
		if !keep[k] {
			drop = append(drop, e)
			delete(r.entries, k)
		}
	}
	r.mu.Unlock()
	if len(drop) == 0 {
		return
	}
	r.goBackground(func() {
		t := time.NewTimer(RetireGrace)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.done:
		}
		for _, e := range drop {
			if m := e.Module(); m != nil {
				_ = m.Close(context.Background())
			}
		}
	})
}

// goBackground runs fn in a goroutine that Close waits for; nothing once closed.
func (r *Registry) goBackground(fn func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.bg.Add(1)
	go func() {
		defer r.bg.Done()
		fn()
	}()
}

// retry loads e again every LoadRetry until it loads or the registry closes.
func (r *Registry) retry(e *Entry) {
	t := time.NewTicker(LoadRetry)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
		}
		r.mu.Lock()
		engine, err := r.engineLocked()
		r.mu.Unlock()
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err = e.load(ctx, engine)
		cancel()
		if err == nil {
			r.log.Info("policy module loaded", "policy", e.key.Path)
			return
		}
	}
}

func (e *Entry) load(ctx context.Context, engine *plugins.Engine) error {
	m, err := engine.Load(ctx, e.key.Path, plugins.ModuleOptions{Name: e.name, Deadline: e.key.Deadline, Watch: true,
		Entrypoint: e.key.Entrypoint})
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mod, e.err = m, err
	return err
}

func (e *Entry) setErr(err error) {
	e.mu.Lock()
	e.err = err
	e.mu.Unlock()
}

// Key is the entry's key.
func (e *Entry) Key() Key { return e.key }

// Module is the loaded module, or nil while it fails to load.
func (e *Entry) Module() *plugins.Module {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.mod
}

// Err is the last load failure (nil once loaded).
func (e *Entry) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

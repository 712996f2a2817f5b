package plugins

// A Registry keeps the sites' policy modules (SPEC §5) for the life of the process: it loads
// each module once, on an Engine it starts on first use, and hands the same module to every
// config that names it, so a config reload keeps compiled code and warm instances. With the
// Module's own watch and reload, it is the whole life of a module: load, retry while it fails,
// reload when its file changes, retire when no config uses it, close.

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Defaults of RegistryOptions.
const (
	// DefaultRetireGrace is how long a module no longer used by the current config is kept
	// after a reload, so checks that started under the old config finish on it.
	DefaultRetireGrace = 30 * time.Second
	// DefaultLoadRetry is how often a module that failed to load is tried again.
	DefaultLoadRetry = 5 * time.Second
)

// RegistryOptions configure a Registry.
type RegistryOptions struct {
	// Engine configures the engine the registry starts with its first module (its Logger also
	// receives the registry's load failures; default slog.Default()).
	Engine EngineOptions
	// LoadRetry is how often a module that failed to load is tried again (default
	// DefaultLoadRetry).
	LoadRetry time.Duration
	// RetireGrace is how long KeepOnly keeps a module no config uses any more (default
	// DefaultRetireGrace).
	RetireGrace time.Duration
}

// ModuleKey names one loaded module: a file, the deadline it runs with and, for an OPA bundle,
// the entrypoint it evaluates.
type ModuleKey struct {
	Path     string
	Deadline time.Duration
	// Entrypoint is the rule an OPA bundle evaluates (site setting policy_entrypoint).
	Entrypoint string
}

// Registry holds the loaded modules, by ModuleKey. Build it with NewRegistry.
//
//	r := plugins.NewRegistry(plugins.RegistryOptions{Engine: plugins.EngineOptions{CacheDir: dir}})
//	defer r.Close(ctx)
//	e := r.Entry(ctx, plugins.ModuleKey{Path: "docs.wasm", Deadline: 5 * time.Millisecond}, "docs")
//	if m := e.Module(); m != nil { out, err := m.Evaluate(ctx, &in) }
//
// Safe for concurrent use. NewRegistry starts nothing; Close stops every goroutine the registry
// started (load retries, retirements) and closes every module and the engine. A module that
// fails to load is retried every LoadRetry until it loads; until then its Entry has no Module
// (the agent denies with policy_error, fail closed, and is not ready). A loaded module that
// changes on disk is recompiled in the background and swapped in (Module.Reload); a bad new
// file leaves the old module serving and shows in Module.Status.
type Registry struct {
	opts RegistryOptions
	log  *slog.Logger

	mu      sync.Mutex
	engine  *Engine
	entries map[ModuleKey]*Entry
	closed  bool
	done    chan struct{}
	bg      sync.WaitGroup
}

// Entry is one module of the registry: loaded, or failing to load.
type Entry struct {
	key  ModuleKey
	name string // the first site using it: the module's name in metrics and logs

	mu  sync.Mutex
	mod *Module
	err error
}

// NewRegistry returns an empty registry; the engine starts when a first module is loaded.
func NewRegistry(opts RegistryOptions) *Registry {
	if opts.Engine.Logger == nil {
		opts.Engine.Logger = slog.Default()
	}
	if opts.LoadRetry <= 0 {
		opts.LoadRetry = DefaultLoadRetry
	}
	if opts.RetireGrace <= 0 {
		opts.RetireGrace = DefaultRetireGrace
	}
	return &Registry{opts: opts, log: opts.Engine.Logger, entries: map[ModuleKey]*Entry{}, done: make(chan struct{})}
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
func (r *Registry) Entry(ctx context.Context, key ModuleKey, name string) *Entry {
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
func (r *Registry) engineLocked() (*Engine, error) {
	if r.engine != nil {
		return r.engine, nil
	}
	e, err := NewEngine(context.Background(), r.opts.Engine)
	if err != nil {
		return nil, fmt.Errorf("policy engine: %w", err)
	}
	r.engine = e
	return e, nil
}

// KeepOnly closes, after RetireGrace, every module whose key keep does not hold: after a
// config reload, the modules only the replaced config used. Checks that started under the old
// config finish on them meanwhile.
func (r *Registry) KeepOnly(keep map[ModuleKey]bool) {
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
		t := time.NewTimer(r.opts.RetireGrace)
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
	t := time.NewTicker(r.opts.LoadRetry)
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

func (e *Entry) load(ctx context.Context, engine *Engine) error {
	m, err := engine.Load(ctx, e.key.Path, ModuleOptions{Name: e.name, Deadline: e.key.Deadline, Watch: true,
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
func (e *Entry) Key() ModuleKey { return e.key }

// Module is the loaded module, or nil while it fails to load.
func (e *Entry) Module() *Module {
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

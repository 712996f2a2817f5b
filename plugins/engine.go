package plugins

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/tokenagent/tokenagent/plugins/internal/output"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// EngineOptions configure an Engine. The zero value of each field takes its default.
type EngineOptions struct {
	// CacheDir, when set, keeps compiled modules on disk there, so a restart (or a second
	// engine) loads a module it has compiled before without compiling it again. The directory is
	// created if missing. Empty: compiled code is cached in memory only.
	CacheDir string
	// MemoryLimitPages is the ceiling, in 64 KiB pages, for any module's memory (default 4096,
	// 256 MiB). A module that declares a larger maximum does not load. Each module has its own
	// lower limit, ModuleOptions.MemoryLimitPages.
	MemoryLimitPages uint32
	// PollInterval is how often a watched module file is checked for changes (default 1 s).
	PollInterval time.Duration
	// LogRate and LogBurst limit the lines each module may log through tokenagent.log: LogRate
	// lines a second on average (default 10), bursts of up to LogBurst (default 20). Lines over
	// the limit are dropped and counted.
	LogRate  float64
	LogBurst int
	// MaxConcurrency is how many calls (and instantiations) may run WebAssembly at once across
	// all modules (default GOMAXPROCS-1, at least 1). Compiled WebAssembly cannot be preempted
	// by the Go scheduler: if every P ran a looping module, the goroutines that enforce the
	// deadlines could not run (nor could the rest of the agent), so at least one P is left free.
	// A call waits for a slot within ModuleOptions.MaxWait.
	MaxConcurrency int
	// Registerer receives the engine's metrics (nil: metrics are kept but not registered).
	Registerer prometheus.Registerer
	// Logger receives module log lines, reloads and failures (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock used for Input.Time when it is zero (default time.Now).
	Now func() time.Time
	// BeforeWait, when set, is called on the caller's goroutine, with the caller's context,
	// just before a call waits (for a free instance, an engine slot, or a new instance to be
	// made) or runs a module whose recent calls took longer than SlowCall. The agent hands a
	// check's connection to another goroutine there (vault/blocking), so a slow policy does
	// not hold the checks behind it.
	BeforeWait func(ctx context.Context)
}

// SlowCall is how long a module's calls take, on a moving average, before EngineOptions.
// BeforeWait is called ahead of each of its calls.
const SlowCall = 250 * time.Microsecond

// beforeWait calls EngineOptions.BeforeWait.
func (e *Engine) beforeWait(ctx context.Context) {
	if e.opts.BeforeWait != nil {
		e.opts.BeforeWait(ctx)
	}
}

// Engine runs WebAssembly policy modules: one wazero runtime for all of them, with a
// compilation cache, WASI without filesystem, network or environment, and the host function
// tokenagent.log. Load a module with Load; evaluate requests with Module.Evaluate.
//
//	e, err := plugins.NewEngine(ctx, plugins.EngineOptions{CacheDir: "/var/cache/tokenagent"})
//	if err != nil { ... }
//	defer e.Close(ctx)
//	m, err := e.Load(ctx, "policies/docs.wasm", plugins.ModuleOptions{Name: "docs", Watch: true})
//
// # Notes
//
//   - Safe for concurrent use. Close closes every module loaded through the engine.
type Engine struct {
	rt      wazero.Runtime
	cache   wazero.CompilationCache
	opts    EngineOptions
	log     *slog.Logger
	metrics *metrics
	modCfg  wazero.ModuleConfig
	slots   chan struct{} // one per call running WebAssembly (MaxConcurrency)

	// instances maps a wazero module instance to its *instance, for the host function.
	instances sync.Map

	// compiling holds a lock per module hash being compiled, so concurrent loads of one binary
	// compile it once (the later ones then find it in wazero's in-memory cache).
	compilingMu sync.Mutex
	compiling   map[string]*compileLock

	mu      sync.Mutex
	modules map[*Module]struct{}
	closed  bool
	bg      sync.WaitGroup // background refills
}

// NewEngine starts a runtime. It fails when the cache directory cannot be used or the metrics
// cannot be registered.
func NewEngine(ctx context.Context, opts EngineOptions) (*Engine, error) {
	if opts.MemoryLimitPages == 0 {
		opts.MemoryLimitPages = 4096
	}
	if opts.MemoryLimitPages > 65536 {
		return nil, fmt.Errorf("plugins: EngineOptions.MemoryLimitPages %d is over 65536 (4 GiB)", opts.MemoryLimitPages)
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.LogRate <= 0 {
		opts.LogRate = 10
	}
	if opts.LogBurst <= 0 {
		opts.LogBurst = 20
	}
	if opts.MaxConcurrency <= 0 {
		opts.MaxConcurrency = max(1, runtime.GOMAXPROCS(0)-1)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("plugins: register metrics: %w", err)
	}
	var cache wazero.CompilationCache
	if opts.CacheDir != "" {
		if err := os.MkdirAll(opts.CacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("plugins: compilation cache: %w", err)
		}
		if cache, err = wazero.NewCompilationCacheWithDir(opts.CacheDir); err != nil {
			return nil, fmt.Errorf("plugins: compilation cache in %s: %w", opts.CacheDir, err)
		}
	} else {
		cache = wazero.NewCompilationCache()
	}
	cfg := wazero.NewRuntimeConfig().
		WithCompilationCache(cache).
		WithCloseOnContextDone(true).
		WithMemoryLimitPages(opts.MemoryLimitPages)
	e := &Engine{
		rt:        wazero.NewRuntimeWithConfig(ctx, cfg),
		cache:     cache,
		opts:      opts,
		log:       opts.Logger,
		metrics:   m,
		modules:   map[*Module]struct{}{},
		compiling: map[string]*compileLock{},
		slots:     make(chan struct{}, opts.MaxConcurrency),
		// No FS, no args, no environment; stdin empty. Real clocks (a policy may read the time);
		// sleeping is a no-op so a module never blocks in the host; random from crypto/rand.
		modCfg: wazero.NewModuleConfig().
			WithName("").
			WithStartFunctions().
			WithSysWalltime().
			WithSysNanotime().
			WithRandSource(rand.Reader),
	}
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, e.rt); err != nil {
		_ = e.rt.Close(ctx)
		return nil, fmt.Errorf("plugins: instantiate WASI: %w", err)
	}
	_, err = e.rt.NewHostModuleBuilder(hostModule).
		NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(e.hostLog), []api.ValueType{api.ValueTypeI32, api.ValueTypeI32, api.ValueTypeI32}, nil).
		WithParameterNames("level", "ptr", "len").
		Export(hostLogFunc).
		Instantiate(ctx)
	if err != nil {
		_ = e.rt.Close(ctx)
		return nil, fmt.Errorf("plugins: instantiate host module: %w", err)
	}
	if err := e.instantiateOPAEnv(ctx); err != nil {
		_ = e.rt.Close(ctx)
		return nil, fmt.Errorf("plugins: instantiate the OPA host module: %w", err)
	}
	return e, nil
}

// Close closes every module loaded through e (stopping their watchers), then the runtime and
// the in-memory part of the compilation cache. Evaluations still running fail with FailureClosed.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	mods := make([]*Module, 0, len(e.modules))
	for m := range e.modules {
		mods = append(mods, m)
	}
	e.mu.Unlock()
	for _, m := range mods {
		m.close(false)
	}
	e.bg.Wait()
	return errors.Join(e.rt.Close(ctx), e.cache.Close(ctx))
}

// acquireSlot waits for one of the MaxConcurrency slots, up to maxWait or the end of ctx.
func (e *Engine) acquireSlot(ctx context.Context, maxWait time.Duration) error {
	select {
	case e.slots <- struct{}{}:
		return nil
	default:
	}
	e.beforeWait(ctx)
	t := time.NewTimer(maxWait)
	defer t.Stop()
	select {
	case e.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for a free slot: %w", ctx.Err())
	case <-t.C:
		return fmt.Errorf("all %d WebAssembly slots of the engine stayed busy for %v (EngineOptions.MaxConcurrency)",
			cap(e.slots), maxWait)
	}
}

func (e *Engine) releaseSlot() { <-e.slots }

func (e *Engine) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

type compileLock struct {
	sync.Mutex
	users int
}

// compile compiles bin (whose hash is hash) with workers compilation goroutines, one compile
// per hash at a time.
func (e *Engine) compile(ctx context.Context, bin []byte, hash string, workers int) (wazero.CompiledModule, error) {
	e.compilingMu.Lock()
	l := e.compiling[hash]
	if l == nil {
		l = &compileLock{}
		e.compiling[hash] = l
	}
	l.users++
	e.compilingMu.Unlock()
	l.Lock()
	defer func() {
		l.Unlock()
		e.compilingMu.Lock()
		if l.users--; l.users == 0 {
			delete(e.compiling, hash)
		}
		e.compilingMu.Unlock()
	}()
	return e.rt.CompileModule(experimental.WithCompilationWorkers(ctx, workers), bin)
}

// goBackground runs fn in a goroutine that Close waits for; false when the engine is closed.
func (e *Engine) goBackground(fn func()) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false
	}
	e.bg.Add(1)
	go func() {
		defer e.bg.Done()
		fn()
	}()
	return true
}

func (e *Engine) track(m *Module) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	e.modules[m] = struct{}{}
	return nil
}

func (e *Engine) untrack(m *Module) {
	e.mu.Lock()
	delete(e.modules, m)
	e.mu.Unlock()
}

// hostLog implements tokenagent.log(level i32, ptr i32, len i32): a module's log line, rate
// limited per module. A message outside the module's memory traps the call.
func (e *Engine) hostLog(ctx context.Context, mod api.Module, stack []uint64) {
	level, ptr, n := int32(uint32(stack[0])), uint32(stack[1]), uint32(stack[2])
	v, ok := e.instances.Load(mod)
	if !ok {
		return // not one of ours (cannot happen: only our instances import it)
	}
	m := v.(*instance).ver.mod
	cut := n > output.MaxLogBytes
	b, ok := mod.Memory().Read(ptr, min(n, output.MaxLogBytes))
	if !ok {
		panic(fmt.Errorf("tokenagent.log: message [%d, %d+%d) is outside the module's memory (%d bytes)",
			ptr, ptr, n, mod.Memory().Size()))
	}
	msg := output.Sanitize(b)
	if cut {
		msg += "..."
	}
	lvl := slog.LevelInfo
	switch {
	case level <= int32(slog.LevelDebug):
		lvl = slog.LevelDebug
	case level >= int32(slog.LevelError):
		lvl = slog.LevelError
	case level >= int32(slog.LevelWarn):
		lvl = slog.LevelWarn
	}
	e.policyLine(ctx, m, lvl, msg)
}

// policyLine logs one line a module wrote (tokenagent.log, OPA's opa_println and print()),
// rate limited per module (Options.LogRate, LogBurst): lines over the limit are dropped and
// counted, and the next line logged says how many were.
func (e *Engine) policyLine(ctx context.Context, m *Module, lvl slog.Level, msg string) {
	allowed, dropped := m.logLimit.Allow(time.Now())
	if !allowed {
		m.mm.logDropped.Inc()
		return
	}
	attrs := []slog.Attr{slog.String("policy", m.name), slog.String("msg", msg)}
	if dropped > 0 {
		attrs = append(attrs, slog.Int("dropped_before", dropped))
	}
	e.log.LogAttrs(ctx, lvl, "policy log", attrs...)
}

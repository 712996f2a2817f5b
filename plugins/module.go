package plugins

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenagent/tokenagent/plugins/internal/limits"
	"github.com/tokenagent/tokenagent/vault/filestamp"
)

// ModuleOptions configure one loaded module. The zero value of each field takes its default.
type ModuleOptions struct {
	// Name labels the module in metrics, logs and errors (default: the file name without
	// ".wasm"). The agent uses the site id.
	Name string
	// Deadline bounds one call into the module (default 5 ms). A call that runs longer is
	// stopped, fails with FailureTimeout and its instance is replaced.
	Deadline time.Duration
	// MemoryLimitPages caps each instance's memory in 64 KiB pages (default 512, 32 MiB; at most
	// EngineOptions.MemoryLimitPages). A module that starts with more does not load; growing past
	// it fails (memory.grow returns -1).
	MemoryLimitPages uint32
	// PoolSize is the most instances kept for the module, and so the most calls of it that run
	// at once (default EngineOptions.MaxConcurrency-1, at least 1: with two engine slots or
	// more, one module never holds them all). The pool grows on demand up to it; a call that
	// finds every instance busy waits for one, without holding an engine slot.
	PoolSize int
	// Prewarm is how many instances are made at load and kept ready after a failure replaced
	// one (default min(2, PoolSize)).
	Prewarm int
	// MaxOutputBytes caps the length of one output (default 64 KiB).
	MaxOutputBytes int
	// MaxWait bounds how long a call waits for a free instance when PoolSize are busy
	// (default 1 s; the caller's context may end it sooner).
	MaxWait time.Duration
	// InitTimeout bounds making one instance, the module's _initialize included (default 2 s).
	// Outside a call (pre-warming at Load and Reload, replacing a broken instance) it is at
	// most MaxWait/2 as well, so a module whose initialisation hangs never holds an engine slot
	// long enough to fail the calls of other modules waiting for it.
	InitTimeout time.Duration
	// Watch polls the file every EngineOptions.PollInterval and swaps in a changed module.
	Watch bool
	// Entrypoint names the rule an OPA module evaluates ("envoy/authz/allow"; "data." and
	// dots are accepted too); empty: the module's only entrypoint. Only for OPA modules.
	Entrypoint string
}

// Module is a loaded policy module: the compiled module of the file's current content and a
// pool of ready instances. Evaluate it from any number of goroutines.
//
//	out, err := m.Evaluate(ctx, &plugins.Input{Site: "docs", Kind: "anonymous", Method: "GET", Path: "/"})
//	if err != nil {
//		// deny: policy_error
//	}
//
// # Notes
//
//   - Safe for concurrent use. Each call takes an instance from the pool for its duration.
//   - A reload (Watch, or Reload) swaps the compiled module atomically: calls already running
//     finish on the old one, which is closed when its last call returns.
type Module struct {
	e    *Engine
	path string
	name string
	opts ModuleOptions
	mm   moduleMetrics
	brk  *limits.Breaker // refuses the module's calls for a while when it keeps failing
	// backoffErr is the error of a call refused by brk, made once: refusing costs nothing.
	backoffErr *Error
	logLimit   *limits.LogLimit // the module's own log lines (tokenagent.log)
	errLimit   *limits.LogLimit // the host's log lines about the module's failures

	cur atomic.Pointer[version]
	// avgCall is a moving average of the module's call durations (ns), for SlowCall.
	avgCall atomic.Int64

	reloadMu sync.Mutex // one reload at a time
	statMu   sync.Mutex
	seen     filestamp.Stamp // the file's stamp when last looked at
	missing  bool            // the watcher could not stat the file
	lastErr  string
	lastErrT time.Time

	closeOnce sync.Once
	stop      chan struct{}
	watchDone chan struct{}
}

// ModuleStatus describes a module for health reports (/readyz).
type ModuleStatus struct {
	// Name and Path are the module's name and file.
	Name, Path string
	// Hash is the hex SHA-256 of the module binary serving now.
	Hash string
	// LoadedAt is when the serving module was loaded.
	LoadedAt time.Time
	// Instances is the number of live instances of the serving module.
	Instances int
	// ReloadError is the last failure to load a changed file, or "" when the file on disk is the
	// one serving (or the last reload succeeded). While it is set the previous module serves.
	ReloadError string
	// ReloadErrorAt is when ReloadError happened.
	ReloadErrorAt time.Time
	// Closed reports that the module was closed.
	Closed bool
}

// Load compiles the module in the file at path, checks that it implements ABI v1, and makes
// ModuleOptions.Prewarm instances (running each one's _initialize). It fails, naming the
// problem, when the file cannot be read or compiled, does not implement ABI v1 (wrapping
// ErrABI), or an instance cannot be made.
func (e *Engine) Load(ctx context.Context, path string, opts ModuleOptions) (*Module, error) {
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("plugins: load %s: %w", path, ErrClosed)
	}
	if opts.Name == "" {
		opts.Name = strings.TrimSuffix(filepath.Base(path), ".wasm")
	}
	if opts.Deadline <= 0 {
		opts.Deadline = 5 * time.Millisecond
	}
	if opts.MemoryLimitPages == 0 {
		opts.MemoryLimitPages = min(512, e.opts.MemoryLimitPages)
	}
	if opts.MemoryLimitPages > e.opts.MemoryLimitPages {
		return nil, fmt.Errorf("plugins: load %s: MemoryLimitPages %d is over the engine's ceiling of %d",
			path, opts.MemoryLimitPages, e.opts.MemoryLimitPages)
	}
	if opts.PoolSize <= 0 {
		// No more can run at once; and with two slots or more, one module alone can never
		// hold them all (isolation between modules).
		opts.PoolSize = max(1, e.opts.MaxConcurrency-1)
	}
	if opts.Prewarm <= 0 {
		opts.Prewarm = min(2, opts.PoolSize)
	}
	opts.Prewarm = min(opts.Prewarm, opts.PoolSize)
	if opts.MaxOutputBytes <= 0 {
		opts.MaxOutputBytes = 64 << 10
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = time.Second
	}
	if opts.InitTimeout <= 0 {
		opts.InitTimeout = 2 * time.Second
	}
	m := &Module{
		e:    e,
		path: path,
		name: opts.Name,
		opts: opts,
		mm:   e.metrics.forPolicy(opts.Name),
		brk:  limits.NewBreaker(),
		backoffErr: &Error{Policy: opts.Name, Failure: FailureBackoff,
			Err: errors.New("the module failed its recent calls and is refused for a short backoff")},
		logLimit: limits.NewLogLimit(e.opts.LogRate, e.opts.LogBurst),
		errLimit: limits.NewLogLimit(1, 10),
		stop:     make(chan struct{}),
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("plugins: load %s: %w", path, err)
	}
	v, err := m.build(ctx, runtime.GOMAXPROCS(0))
	if err != nil {
		return nil, fmt.Errorf("plugins: load %s: %w", path, err)
	}
	m.seen = filestamp.FromInfo(fi)
	m.cur.Store(v)
	if err := e.track(m); err != nil {
		v.retire()
		return nil, fmt.Errorf("plugins: load %s: %w", path, err)
	}
	m.mm.instances.Set(float64(v.liveCount()))
	e.metrics.reloadFailing.WithLabelValues(m.name).Set(0)
	e.log.Info("policy loaded", "policy", m.name, "path", path, "hash", v.hash[:12])
	if opts.Watch {
		m.watchDone = make(chan struct{})
		go m.watch()
	}
	return m, nil
}

// build reads, compiles, checks and pre-warms the file's current content.
func (m *Module) build(ctx context.Context, workers int) (*version, error) {
	bin, err := os.ReadFile(m.path)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(bin)
	return m.e.newVersion(ctx, m, bin, hex.EncodeToString(sum[:]), workers)
}

// Reload loads the file again if its content changed, and swaps the new module in once it is
// compiled, checked and pre-warmed. On failure the serving module stays, and the error is
// returned, logged, counted and kept in Status until a later reload succeeds. A watched module
// calls Reload by itself; call it directly for an explicit reload (e.g. on SIGHUP).
func (m *Module) Reload(ctx context.Context) error {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	old := m.cur.Load()
	if old == nil {
		return fmt.Errorf("plugins: reload %s: %w", m.path, ErrClosed)
	}
	if fi, err := os.Stat(m.path); err == nil {
		m.statMu.Lock()
		m.seen = filestamp.FromInfo(fi)
		m.statMu.Unlock()
	}
	bin, err := os.ReadFile(m.path)
	if err == nil {
		sum := sha256.Sum256(bin)
		hash := hex.EncodeToString(sum[:])
		if hash == old.hash {
			m.setReloadErr(nil)
			return nil
		}
		// Compile with half the CPUs: the old module is serving meanwhile.
		var v *version
		if v, err = m.e.newVersion(ctx, m, bin, hash, max(1, runtime.GOMAXPROCS(0)/2)); err == nil {
			if !m.cur.CompareAndSwap(old, v) { // closed meanwhile
				v.retire()
				return fmt.Errorf("plugins: reload %s: %w", m.path, ErrClosed)
			}
			old.retire()
			m.mm.instances.Set(float64(v.liveCount()))
			m.e.metrics.reloads.WithLabelValues(m.name, "ok").Inc()
			m.setReloadErr(nil)
			m.e.log.Info("policy reloaded", "policy", m.name, "path", m.path, "hash", hash[:12], "previous", old.hash[:12])
			return nil
		}
	}
	err = fmt.Errorf("plugins: reload %s: %w (the previous module keeps serving)", m.path, err)
	m.e.metrics.reloads.WithLabelValues(m.name, "error").Inc()
	m.setReloadErr(err)
	m.e.log.Error("policy reload failed", "policy", m.name, "path", m.path, "err", err)
	return err
}

func (m *Module) setReloadErr(err error) {
	m.statMu.Lock()
	defer m.statMu.Unlock()
	if err == nil {
		m.lastErr, m.lastErrT = "", time.Time{}
		m.e.metrics.reloadFailing.WithLabelValues(m.name).Set(0)
		return
	}
	m.lastErr, m.lastErrT = err.Error(), time.Now()
	m.e.metrics.reloadFailing.WithLabelValues(m.name).Set(1)
}

// watch polls the file and reloads it when it changes (size, time or identity: see
// vault/filestamp). A file that failed to load is not tried again until it changes again.
func (m *Module) watch() {
	defer close(m.watchDone)
	t := time.NewTicker(m.e.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		fi, err := os.Stat(m.path)
		m.statMu.Lock()
		changed := err == nil && (filestamp.FromInfo(fi) != m.seen || m.missing)
		reported := m.missing
		m.missing = err != nil
		m.statMu.Unlock()
		if err != nil {
			// A deleted or renamed file does not unload the module; report it once.
			if !reported {
				m.setReloadErr(fmt.Errorf("plugins: watch %s: %w (the loaded module keeps serving)", m.path, err))
				m.e.log.Warn("policy file unreadable", "policy", m.name, "path", m.path, "err", err)
			}
			continue
		}
		if changed {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			_ = m.Reload(ctx) // reported by Reload
			cancel()
		}
	}
}

// Close stops the watcher and closes the module; calls running finish first.
func (m *Module) Close(context.Context) error {
	m.close(true)
	return nil
}

func (m *Module) close(untrack bool) {
	m.closeOnce.Do(func() {
		close(m.stop)
		if m.watchDone != nil {
			<-m.watchDone
		}
		m.reloadMu.Lock()
		v := m.cur.Swap(nil)
		m.reloadMu.Unlock()
		if v != nil {
			v.retire()
		}
		m.mm.instances.Set(0)
		if untrack {
			m.e.untrack(m)
		}
	})
}

// Status reports the module's state.
func (m *Module) Status() ModuleStatus {
	s := ModuleStatus{Name: m.name, Path: m.path}
	if v := m.cur.Load(); v != nil {
		s.Hash, s.LoadedAt, s.Instances = v.hash, v.loadedAt, v.liveCount()
	} else {
		s.Closed = true
	}
	m.statMu.Lock()
	s.ReloadError, s.ReloadErrorAt = m.lastErr, m.lastErrT
	m.statMu.Unlock()
	return s
}

// Name returns the module's name (ModuleOptions.Name).
func (m *Module) Name() string { return m.name }

// Evaluate runs the policy on in and returns its decision. Any error (of type *Error) means the
// caller must deny with policy_error: fail closed. An error from the module's side (timeout,
// trap, exit, bad output) also throws its instance away; a fresh one replaces it.
//
// Evaluate waits for a free instance when all are busy (ModuleOptions.MaxWait, or until ctx
// ends), and may make a new instance when the pool is below PoolSize (a few milliseconds,
// once). The call into the module is bounded by ModuleOptions.Deadline.
func (m *Module) Evaluate(ctx context.Context, in *Input) (Output, error) {
	start := time.Now()
	out, err := m.evaluate(ctx, in)
	m.mm.duration.Observe(time.Since(start).Seconds())
	switch {
	case err != nil:
		m.mm.fail.Inc()
		kind := FailureTrap
		var pe *Error
		if errors.As(err, &pe) {
			kind = pe.Failure
		}
		m.e.metrics.errors.WithLabelValues(m.name, string(kind)).Inc()
		if kind != FailureCanceled && kind != FailureClosed && kind != FailureBackoff {
			// Rate-limited: a module failing every call must not flood the log (the metric counts
			// every failure).
			if ok, suppressed := m.errLimit.Allow(time.Now()); ok {
				m.e.log.Warn("policy error", "policy", m.name, "kind", string(kind), "err", err, "suppressed_before", suppressed)
			}
		}
	case out.Allow:
		m.mm.allow.Inc()
	default:
		m.mm.deny.Inc()
	}
	return out, err
}

func (m *Module) evaluate(ctx context.Context, in *Input) (Output, error) {
	if err := ctx.Err(); err != nil {
		return Output{}, m.errorf(FailureCanceled, "the caller's context ended before the call: %w", err)
	}
	v := m.acquire()
	if v == nil {
		return Output{}, m.errorf(FailureClosed, "%w", ErrClosed)
	}
	defer v.release()
	size := inputSize(in)
	if size > MaxInputBytes {
		return Output{}, m.errorf(FailureInputTooLarge, "the input record would be %d bytes, over %d", size, MaxInputBytes)
	}
	if !m.brk.Allow(time.Now()) {
		return Output{}, m.backoffErr
	}
	// An instance first, then an engine slot: waiting for this module's instances never keeps
	// a slot from the other modules.
	inst, reserved, err := v.get(ctx)
	if err != nil {
		m.brk.Release()
		return Output{}, err
	}
	if reserved && m.brk.Refusing(time.Now()) {
		// The module started a backoff while this call waited: do not make it an instance.
		v.unreserve()
		return Output{}, m.backoffErr
	}
	if err := m.e.acquireSlot(ctx, m.opts.MaxWait); err != nil {
		if reserved {
			v.unreserve()
		} else {
			v.put(inst)
		}
		m.brk.Release()
		kind := FailureBusy
		if ctx.Err() != nil {
			kind = FailureCanceled
		}
		return Output{}, m.errorf(kind, "%w", err)
	}
	start := time.Now()
	if reserved {
		if inst, err = v.instantiate(ctx); err != nil {
			m.e.releaseSlot()
			v.unreserve()
			m.failed(start, ctx.Err() == nil)
			return Output{}, m.errorf(FailureInstantiate, "%w", err)
		}
		v.setGauge()
	}
	now := in.Time
	if now.IsZero() {
		now = m.e.opts.Now()
	}
	if time.Duration(m.avgCall.Load()) > SlowCall {
		m.e.beforeWait(ctx)
	}
	callStart := time.Now()
	out, err := inst.call(ctx, in, size, now)
	m.noteCall(time.Since(callStart))
	m.e.releaseSlot()
	if err != nil {
		v.discard(inst)
		var pe *Error
		counts := !errors.As(err, &pe) || pe.Failure != FailureCanceled
		m.failed(start, counts)
		return Output{}, err
	}
	m.brk.Success()
	v.put(inst)
	return out, nil
}

// noteCall folds one call's duration into the moving average (weight 1/8).
func (m *Module) noteCall(d time.Duration) {
	old := m.avgCall.Load()
	m.avgCall.Store(old + (int64(d)-old)/8)
}

// failed records a failure that took the engine's time since start; counts is false when the
// caller gave up rather than the module failing. A backoff that starts is logged.
func (m *Module) failed(start time.Time, counts bool) {
	now := time.Now()
	if backoff := m.brk.Failure(now, now.Sub(start), counts); backoff > 0 {
		m.mm.backoffs.Inc()
		if ok, _ := m.errLimit.Allow(now); ok {
			m.e.log.Warn("policy module keeps failing; its calls are refused for a backoff (policy_error)",
				"policy", m.name, "backoff", backoff.Round(time.Millisecond).String())
		}
	}
}

// acquire returns the serving version with a call counted on it, or nil once closed.
func (m *Module) acquire() *version {
	for {
		v := m.cur.Load()
		if v == nil {
			return nil
		}
		v.inflight.Add(1)
		if !v.retired.Load() {
			return v
		}
		v.release() // swapped meanwhile: take the new one
	}
}

func (m *Module) errorf(kind Failure, format string, args ...any) *Error {
	return &Error{Policy: m.name, Failure: kind, Err: fmt.Errorf(format, args...)}
}

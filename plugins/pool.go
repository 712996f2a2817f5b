package plugins

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"

	"github.com/tokenagent/tokenagent/plugins/internal/bundle"
	"github.com/tokenagent/tokenagent/plugins/internal/limits"
	"github.com/tokenagent/tokenagent/plugins/internal/opa"
	"github.com/tokenagent/tokenagent/plugins/internal/wasmbin"
)

// version is one compiled content of a module file and its pool of instances. A reload makes a
// new version and retires the old one, which closes once its last call has returned.
type version struct {
	mod      *Module
	compiled wazero.CompiledModule
	hash     string
	loadedAt time.Time

	idle chan *instance // ready instances; capacity PoolSize

	mu    sync.Mutex
	live  int           // instances made and not yet thrown away (idle, busy or being made)
	freed chan struct{} // closed (and replaced) when live goes down

	inflight  atomic.Int64 // calls and refills holding the version open
	retired   atomic.Bool
	closeOnce sync.Once

	opa *opaModule // nil for an ABI v1 module (opa.go)
}

// instance is one instantiated module with the state the host keeps for it. It serves one call
// at a time.
type instance struct {
	ver    *version
	mod    api.Module
	mem    api.Memory
	alloc  api.Function
	eval   api.Function
	inPtr  uint32 // the input region tokenagent_alloc returned
	inCap  uint32 // its size
	stack  [8]uint64
	memory *limits.Memory
	output headWriter   // what the module wrote to stdout/stderr during the current call
	opa    *opaInstance // an OPA module's host state (opa.go); nil for ABI v1
}

// newVersion compiles bin — an ABI v1 module, an OPA module, or an OPA bundle (.tar.gz) —, checks
// the ABI its exports choose and makes the pre-warmed instances.
func (e *Engine) newVersion(ctx context.Context, m *Module, bin []byte, hash string, workers int) (*version, error) {
	var om *opaModule
	if bundle.IsGzip(bin) {
		b, err := bundle.Read(bin)
		if err != nil {
			return nil, err
		}
		bin, om = b.Wasm, &opaModule{data: b.Data}
	}
	bin, memMin, importedMem, err := wasmbin.DefineImportedMemory(bin)
	if err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	cm, err := e.compile(ctx, bin, hash, workers)
	if err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	switch {
	case opa.Is(cm):
		if om == nil {
			om = &opaModule{data: []byte("{}")}
		}
		_, om.fast = cm.ExportedFunctions()[opa.Eval]
		err = checkOPA(cm, memMin, m.opts.MemoryLimitPages)
	case om != nil:
		err = fmt.Errorf("%w: the bundle's policy.wasm is not an OPA module (no opa_malloc export)", ErrABI)
	case importedMem:
		err = fmt.Errorf("%w: imports its memory (an ABI v1 module defines and exports its own)", ErrABI)
	case m.opts.Entrypoint != "":
		err = fmt.Errorf("an entrypoint (%q) is for OPA modules; this is an ABI v1 module", m.opts.Entrypoint)
	default:
		err = checkABI(cm, m.opts.MemoryLimitPages)
	}
	if err != nil {
		_ = cm.Close(ctx)
		return nil, err
	}
	v := &version{
		opa:      om,
		mod:      m,
		compiled: cm,
		hash:     hash,
		loadedAt: time.Now(),
		idle:     make(chan *instance, m.opts.PoolSize),
		freed:    make(chan struct{}),
	}
	for i := 0; i < m.opts.Prewarm; i++ {
		inst, err := v.instantiateInSlot(ctx)
		if err != nil {
			v.retire()
			return nil, err
		}
		v.live++
		v.idle <- inst
	}
	return v, nil
}

// checkABI reports every way cm falls short of ABI v1 (ABI.md "Exports" and "Imports").
func checkABI(cm wazero.CompiledModule, memLimit uint32) error {
	var problems []string
	fns := cm.ExportedFunctions()
	i32, i64 := api.ValueTypeI32, api.ValueTypeI64
	sig := func(name string, params, results []api.ValueType) {
		f, ok := fns[name]
		switch {
		case !ok && name == exportMarker:
			problems = append(problems, "no "+exportMarker+" export (the ABI marker)")
		case !ok:
			problems = append(problems, "no "+name+" export")
		case !sameTypes(f.ParamTypes(), params) || !sameTypes(f.ResultTypes(), results):
			problems = append(problems, fmt.Sprintf("export %s has type %s, want %s", name,
				typeString(f.ParamTypes(), f.ResultTypes()), typeString(params, results)))
		}
	}
	sig(exportMarker, nil, nil)
	sig(exportAlloc, []api.ValueType{i32}, []api.ValueType{i32})
	sig(exportEvaluate, []api.ValueType{i32, i32}, []api.ValueType{i64})
	if f, ok := fns[exportInit]; ok {
		if len(f.ParamTypes()) != 0 || len(f.ResultTypes()) != 0 {
			problems = append(problems, fmt.Sprintf("export %s has type %s, want () -> ()", exportInit,
				typeString(f.ParamTypes(), f.ResultTypes())))
		}
	} else if _, ok := fns["_start"]; ok {
		problems = append(problems, "it is a WASI command (exports _start), not a reactor: build with -buildmode=c-shared")
	}
	mem, ok := cm.ExportedMemories()[exportMemory]
	if !ok {
		problems = append(problems, "no exported memory named \"memory\"")
	}
	for _, f := range cm.ImportedFunctions() {
		mod, name, _ := f.Import()
		switch {
		case mod == "wasi_snapshot_preview1":
		case mod == hostModule && name == hostLogFunc:
			if !sameTypes(f.ParamTypes(), []api.ValueType{i32, i32, i32}) || len(f.ResultTypes()) != 0 {
				problems = append(problems, fmt.Sprintf("import %s.%s has type %s, want (i32, i32, i32) -> ()",
					mod, name, typeString(f.ParamTypes(), f.ResultTypes())))
			}
		default:
			problems = append(problems, fmt.Sprintf("imports %s.%s, which the host does not provide (only wasi_snapshot_preview1 and %s.%s)",
				mod, name, hostModule, hostLogFunc))
		}
	}
	for _, im := range cm.ImportedMemories() {
		mod, name, _ := im.Import()
		problems = append(problems, fmt.Sprintf("imports memory %s.%s (a module defines and exports its own)", mod, name))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrABI, strings.Join(problems, "; "))
	}
	if mem.Min() > memLimit {
		return fmt.Errorf("memory starts at %d pages, over the module's limit of %d pages (MemoryLimitPages)", mem.Min(), memLimit)
	}
	return nil
}

func sameTypes(a, b []api.ValueType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func typeString(params, results []api.ValueType) string {
	names := func(ts []api.ValueType) string {
		s := make([]string, len(ts))
		for i, t := range ts {
			s[i] = api.ValueTypeName(t)
		}
		return "(" + strings.Join(s, ", ") + ")"
	}
	return names(params) + " -> " + names(results)
}

// instantiateInSlot is instantiate for callers that do not hold an engine slot: pre-warming
// a version (Load, Reload) and replacing broken instances, outside any call. It holds the slot
// for at most half a call's MaxWait (and at most InitTimeout): a module whose _initialize
// hangs must not keep the slot until the calls of the modules serving meanwhile give up
// waiting for it (with GOMAXPROCS 2 the engine has one slot).
func (v *version) instantiateInSlot(ctx context.Context) (*instance, error) {
	e := v.mod.e
	if err := e.acquireSlot(ctx, v.mod.opts.InitTimeout); err != nil {
		return nil, fmt.Errorf("instantiate: %w", err)
	}
	defer e.releaseSlot()
	return v.instantiateWithin(ctx, min(v.mod.opts.InitTimeout, v.mod.opts.MaxWait/2))
}

// instantiate makes one instance and runs its _initialize, within InitTimeout. The caller holds
// an engine slot.
func (v *version) instantiate(ctx context.Context) (*instance, error) {
	return v.instantiateWithin(ctx, v.mod.opts.InitTimeout)
}

// instantiateWithin is instantiate bounded by timeout.
func (v *version) instantiateWithin(ctx context.Context, timeout time.Duration) (*instance, error) {
	m := v.mod
	e := m.e
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	inst := &instance{ver: v, memory: &limits.Memory{Limit: uint64(m.opts.MemoryLimitPages) << 16}}
	cfg := e.modCfg.WithStdout(&inst.output).WithStderr(&inst.output)
	mod, err := e.rt.InstantiateModule(experimental.WithMemoryAllocator(ctx, inst.memory.Allocator()), v.compiled, cfg)
	if err != nil {
		m.mm.instErr.Inc()
		return nil, fmt.Errorf("instantiate: %w", err)
	}
	inst.mod = mod
	inst.mem = mod.Memory()
	e.instances.Store(mod, inst)
	if v.opa != nil {
		if err := v.setupOPA(ctx, inst); err != nil {
			kind, msg := inst.describe(parent, err, timeout)
			inst.close()
			m.mm.instErr.Inc()
			if errors.Is(err, ErrABI) || kind == FailureTrap {
				return nil, fmt.Errorf("OPA module: %w", err)
			}
			return nil, fmt.Errorf("OPA module: %s: %s", kind, msg)
		}
		m.mm.instOK.Inc()
		return inst, nil
	}
	inst.alloc = mod.ExportedFunction(exportAlloc)
	inst.eval = mod.ExportedFunction(exportEvaluate)
	if f := mod.ExportedFunction(exportInit); f != nil {
		if err := f.CallWithStack(ctx, nil); err != nil {
			kind, msg := inst.describe(parent, err, timeout)
			inst.close()
			m.mm.instErr.Inc()
			return nil, fmt.Errorf("%s: %s: %s", exportInit, kind, msg)
		}
	}
	m.mm.instOK.Inc()
	return inst, nil
}

func (inst *instance) close() {
	inst.ver.mod.e.instances.Delete(inst.mod)
	_ = inst.mod.Close(context.Background())
}

// get takes a ready instance, or reserves room for a new one when the pool is below PoolSize
// (inst nil, reserved true: the caller makes it with instantiate inside an engine slot, or
// gives the room back with unreserve), or waits for an instance to come back or room to be
// freed. It never holds an engine slot: a call waits for its own module's instances without
// keeping another module's calls from running.
func (v *version) get(ctx context.Context) (inst *instance, reserved bool, err error) {
	m := v.mod
	var timer *time.Timer
	for {
		select {
		case inst := <-v.idle:
			return inst, false, nil
		default:
		}
		v.mu.Lock()
		if v.live < m.opts.PoolSize {
			v.live++
			v.mu.Unlock()
			m.e.beforeWait(ctx) // a new instance is made: milliseconds
			return nil, true, nil
		}
		freed := v.freed
		v.mu.Unlock()
		if timer == nil {
			m.e.beforeWait(ctx)
			timer = time.NewTimer(m.opts.MaxWait)
			defer timer.Stop()
		}
		select {
		case inst := <-v.idle:
			return inst, false, nil
		case <-freed: // an instance was thrown away: look again
		case <-ctx.Done():
			return nil, false, m.errorf(FailureCanceled, "waiting for a free instance: %w", ctx.Err())
		case <-timer.C:
			return nil, false, m.errorf(FailureBusy, "all %d instances stayed busy for %v", m.opts.PoolSize, m.opts.MaxWait)
		}
	}
}

// dropLocked counts one instance (or reserved room) less and wakes the calls waiting in get.
// v.mu must be held.
func (v *version) dropLocked() {
	v.live--
	close(v.freed)
	v.freed = make(chan struct{})
}

// unreserve gives back room reserved by get that was not used.
func (v *version) unreserve() {
	v.mu.Lock()
	v.dropLocked()
	v.mu.Unlock()
	v.setGauge()
}

// put returns a healthy instance to the pool.
func (v *version) put(inst *instance) {
	select {
	case v.idle <- inst:
	default: // cannot happen: the channel holds PoolSize
		v.discard(inst)
	}
}

// discard throws a failed instance away and, if the pool fell below Prewarm and the module is
// not refused (breaker), makes new ones in the background.
func (v *version) discard(inst *instance) {
	inst.close()
	v.mu.Lock()
	v.dropLocked()
	refill := v.live < v.mod.opts.Prewarm && !v.retired.Load()
	v.mu.Unlock()
	v.setGauge()
	if refill && !v.mod.brk.Refusing(time.Now()) {
		v.inflight.Add(1) // released by refill
		if !v.mod.e.goBackground(v.refill) {
			v.release()
		}
	}
}

// refill makes instances until the pool holds Prewarm again. Each one's engine time is charged
// to the module's failure budget: replacing broken instances is the cost of its failures.
func (v *version) refill() {
	defer v.release()
	for !v.retired.Load() {
		v.mu.Lock()
		if v.live >= v.mod.opts.Prewarm {
			v.mu.Unlock()
			return
		}
		v.live++
		v.mu.Unlock()
		start := time.Now()
		inst, err := v.instantiateInSlot(context.Background())
		v.mod.brk.Charge(time.Now(), time.Since(start))
		if err != nil {
			v.mu.Lock()
			v.dropLocked()
			v.mu.Unlock()
			v.mod.e.log.Error("policy instance could not be replaced", "policy", v.mod.name, "err", err)
			return
		}
		v.setGauge()
		v.put(inst)
	}
}

func (v *version) liveCount() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.live
}

func (v *version) setGauge() {
	if v.mod.cur.Load() == v {
		v.mod.mm.instances.Set(float64(v.liveCount()))
	}
}

// retire marks v as no longer serving; it closes when its last call returns.
func (v *version) retire() {
	v.retired.Store(true)
	if v.inflight.Load() == 0 {
		v.closeOnce.Do(v.closeAll)
	}
}

func (v *version) release() {
	if v.inflight.Add(-1) == 0 && v.retired.Load() {
		v.closeOnce.Do(v.closeAll)
	}
}

func (v *version) closeAll() {
	for {
		select {
		case inst := <-v.idle:
			inst.close()
		default:
			_ = v.compiled.Close(context.Background())
			return
		}
	}
}

// call evaluates one input on the instance. Any error means the instance must be thrown away.
func (inst *instance) call(ctx context.Context, in *Input, size int, now time.Time) (Output, error) {
	if inst.opa != nil {
		return inst.callOPA(ctx, in, now)
	}
	m := inst.ver.mod
	if uint32(size) > inst.inCap {
		want := min(uint32(size+4095)&^4095, MaxInputBytes)
		inst.stack[0] = uint64(want)
		if err := inst.invoke(ctx, inst.alloc); err != nil {
			return Output{}, err
		}
		ptr := uint32(inst.stack[0])
		if ptr == 0 || uint64(ptr)+uint64(want) > uint64(inst.mem.Size()) {
			return Output{}, m.errorf(FailureBadOutput, "%s(%d) returned %d: the region is not inside the module's memory (%d bytes)",
				exportAlloc, want, ptr, inst.mem.Size())
		}
		inst.inPtr, inst.inCap = ptr, want
	}
	buf, ok := inst.mem.Read(inst.inPtr, uint32(size))
	if !ok { // memory does not shrink, so this cannot happen
		return Output{}, m.errorf(FailureBadOutput, "the input region moved outside the module's memory")
	}
	encodeInput(buf, in, now)
	inst.stack[0], inst.stack[1] = uint64(inst.inPtr), uint64(size)
	if err := inst.invoke(ctx, inst.eval); err != nil {
		return Output{}, err
	}
	ptr, n := uint32(inst.stack[0]>>32), uint32(inst.stack[0])
	if n > uint32(m.opts.MaxOutputBytes) {
		return Output{}, m.errorf(FailureOutputTooLarge, "output is %d bytes, over the limit of %d", n, m.opts.MaxOutputBytes)
	}
	b, ok := inst.mem.Read(ptr, n)
	if !ok {
		return Output{}, m.errorf(FailureBadOutput, "output [%d, %d+%d) is outside the module's memory (%d bytes)",
			ptr, ptr, n, inst.mem.Size())
	}
	out, err := decodeOutput(b)
	if err != nil {
		return Output{}, m.errorf(FailureBadOutput, "%w", err)
	}
	return out, nil
}

// invoke calls f with inst.stack as parameters and results, within the module's Deadline.
func (inst *instance) invoke(ctx context.Context, f api.Function) error {
	deadline := inst.ver.mod.opts.Deadline
	inst.output.reset()
	inst.memory.Refused = false
	cctx, cancel := context.WithTimeout(ctx, deadline)
	err := f.CallWithStack(cctx, inst.stack[:])
	cancel()
	if err == nil {
		return nil
	}
	kind, msg := inst.describe(ctx, err, deadline)
	return &Error{Policy: inst.ver.mod.name, Failure: kind, Err: errors.New(msg)}
}

// describe classifies a failed call. ctx is the caller's context (not the one with the
// deadline), so a timeout is told apart from the caller giving up.
func (inst *instance) describe(ctx context.Context, err error, deadline time.Duration) (Failure, string) {
	var exit *sys.ExitError
	isExit := errors.As(err, &exit)
	switch {
	case isExit && (exit.ExitCode() == sys.ExitCodeDeadlineExceeded || exit.ExitCode() == sys.ExitCodeContextCanceled):
		if cerr := ctx.Err(); cerr != nil {
			return FailureCanceled, "the caller's context ended during the call: " + cerr.Error()
		}
		return FailureTimeout, fmt.Sprintf("the call ran past its deadline of %v and was stopped", deadline)
	case isExit && inst.ver.mod.e.isClosed():
		return FailureClosed, "the engine was closed during the call"
	case inst.memory.Refused:
		return FailureMemory, fmt.Sprintf("memory reached its limit of %d pages (%d MiB): %s%s",
			inst.memory.Limit>>16, inst.memory.Limit>>20, firstLine(err), inst.output.suffix())
	case isExit:
		return FailureExit, fmt.Sprintf("the module exited with code %d%s", exit.ExitCode(), inst.output.suffix())
	default:
		return FailureTrap, firstLine(err) + inst.output.suffix()
	}
}

// firstLine returns the error's first line (wazero appends a wasm stack trace).
func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// headWriter keeps the first bytes a module writes to stdout and stderr during one call (a Go
// guest's panic message comes first), for error messages.
type headWriter struct{ b []byte }

const headMax = 1024

func (w *headWriter) Write(p []byte) (int, error) {
	if room := headMax - len(w.b); room > 0 {
		w.b = append(w.b, p[:min(len(p), room)]...)
	}
	return len(p), nil
}

func (w *headWriter) reset() { w.b = w.b[:0] }

func (w *headWriter) suffix() string {
	s := strings.TrimSpace(string(w.b))
	if s == "" {
		return ""
	}
	return fmt.Sprintf("; the module wrote: %q", s)
}

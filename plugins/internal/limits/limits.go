package limits

import (
	"sync"
	"time"

	"github.com/tetratelabs/wazero/experimental"
	"golang.org/x/time/rate"
)

// Memory backs one instance's linear memory and refuses to grow past Limit bytes, so
// memory.grow returns -1 there (a Go guest then dies with "out of memory"). It is wazero's
// experimental allocator hook: the runtime-wide WithMemoryLimitPages is the engine's ceiling,
// this is the per-module limit under it.
type Memory struct {
	// Limit is the most bytes the memory may hold.
	Limit uint64
	// Refused reports that a grow was refused since the caller last reset it (the call that
	// failed ran out of memory).
	Refused bool

	buf []byte
}

// Allocator is the allocator to instantiate the instance with
// (experimental.WithMemoryAllocator).
func (m *Memory) Allocator() experimental.MemoryAllocator {
	return experimental.MemoryAllocatorFunc(func(_, _ uint64) experimental.LinearMemory { return m })
}

// Reallocate implements experimental.LinearMemory.
func (m *Memory) Reallocate(size uint64) []byte {
	if size > m.Limit {
		m.Refused = true
		return nil
	}
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size]
		return m.buf
	}
	c := min(max(size, 2*uint64(cap(m.buf))), m.Limit)
	nb := make([]byte, size, c)
	copy(nb, m.buf)
	m.buf = nb
	return nb
}

// Free implements experimental.LinearMemory.
func (m *Memory) Free() { m.buf = nil }

// LogLimit limits a module's log lines to a rate, and counts the lines it refused.
type LogLimit struct {
	l *rate.Limiter

	mu      sync.Mutex
	dropped int
}

// NewLogLimit allows perSecond lines a second, in bursts of up to burst.
func NewLogLimit(perSecond float64, burst int) *LogLimit {
	return &LogLimit{l: rate.NewLimiter(rate.Limit(perSecond), burst)}
}

// Allow takes a line at now. When it does, it also returns how many lines were refused since
// the last one allowed.
func (l *LogLimit) Allow(now time.Time) (ok bool, droppedBefore int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.l.AllowN(now, 1) {
		l.dropped++
		return false, 0
	}
	d := l.dropped
	l.dropped = 0
	return true, d
}

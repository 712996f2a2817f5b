// Package limits holds the per-module limits of the policy engine (package plugins): the
// breaker that isolates a failing module, the memory that refuses to grow past a module's
// limit, and the rate limit of a module's log lines.
package limits

import (
	"sync"
	"sync/atomic"
	"time"
)

// Isolation between modules (SPEC §5: one site's policy cannot slow another's).
//
// Compiled WebAssembly cannot be preempted, so the engine runs at most MaxConcurrency calls at
// once and every module's calls share those slots. A module that loops until its deadline or
// fails on every call would take the slots, and the replacement instances it needs, away from
// healthy modules. A breaker per module bounds that cost:
//
//   - Consecutive failures: after breakerThreshold module-side failures in a row (timeout,
//     trap, exit, memory, bad output, a failed instantiation) the module is refused for a
//     backoff of backoffBase, doubled for each further failure, at most backoffMax. While refused,
//     a call fails at once (plugins.FailureBackoff: policy_error): no WebAssembly runs and no instance
//     is made. After the backoff one call at a time probes the module; a success ends it.
//   - Failure budget: every failed call and every replacement instance is charged its engine
//     time against a budget of budgetBurst that refills at budgetRate. A module that spent its
//     budget is refused the same way until it refills. This bounds the engine time any module
//     can waste on failing calls, whatever mix of good and bad requests it gets, to budgetRate
//     (0.5 % of one slot).
const (
	breakerThreshold = 2
	backoffBase      = 50 * time.Millisecond
	backoffMax       = 5 * time.Second
	budgetBurst      = 100 * time.Millisecond
	budgetRate       = 0.005 // seconds of failing engine time per second
)

// Breaker is a module's failure accounting. The fast path (a healthy module) is two atomic
// loads per call. The zero value is not ready: use NewBreaker.
type Breaker struct {
	open        atomic.Bool  // calls must ask allow under the lock
	consecutive atomic.Int32 // module-side failures in a row

	mu      sync.Mutex
	until   time.Time     // the backoff ends
	probing bool          // a probe call is running
	budget  time.Duration // Failure budget left (negative: spent)
	last    time.Time     // when budget was last refilled
}

// NewBreaker returns the breaker of a module that has not failed, with its whole budget.
func NewBreaker() *Breaker { return &Breaker{budget: budgetBurst} }

// Allow reports whether a call may run at now: the module is not refused, or its backoff is
// over and no other call is probing it.
func (b *Breaker) Allow(now time.Time) bool {
	if !b.open.Load() {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.refusingLocked(now) || b.probing {
		return false
	}
	b.probing = true
	return true
}

// Release ends a probe that did not run (no instance or slot was had in time).
func (b *Breaker) Release() {
	if !b.open.Load() {
		return
	}
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}

// Success records a call that returned a valid output.
func (b *Breaker) Success() {
	if !b.open.Load() && b.consecutive.Load() == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.consecutive.Store(0)
	b.probing = false
	b.until = time.Time{}
	if b.budget >= 0 {
		b.open.Store(false)
	}
}

// failure records a failed call or instantiation that took took of engine time; counts is
// false for failures that are not the module's (the caller gave up). It returns the backoff
// that starts now (0 when none does).
func (b *Breaker) Failure(now time.Time, took time.Duration, counts bool) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	b.budget -= took
	b.probing = false
	var backoff time.Duration
	if counts {
		n := b.consecutive.Add(1)
		if n >= breakerThreshold {
			backoff = backoffMax
			if shift := n - breakerThreshold; shift < 16 {
				backoff = min(backoffBase<<shift, backoffMax)
			}
			b.until = now.Add(backoff)
		}
	}
	if backoff > 0 || b.budget < 0 {
		b.open.Store(true)
		if b.budget < 0 {
			backoff = max(backoff, time.Duration(float64(-b.budget)/budgetRate))
		}
	}
	return backoff
}

// Charge takes took of engine time spent on the module's behalf outside a call (making a
// replacement instance) from its budget.
func (b *Breaker) Charge(now time.Time, took time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	b.budget -= took
	if b.budget < 0 {
		b.open.Store(true)
	}
}

// refill adds the budget earned since the last refill. b.mu must be held.
func (b *Breaker) refill(now time.Time) {
	if !b.last.IsZero() && now.After(b.last) {
		b.budget = min(budgetBurst, b.budget+time.Duration(float64(now.Sub(b.last))*budgetRate))
	}
	b.last = now
}

// Refusing reports whether the module is refused right now (for metrics and status).
func (b *Breaker) Refusing(now time.Time) bool {
	if !b.open.Load() {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.refusingLocked(now)
}

// refusingLocked reports whether the backoff or a spent budget refuses calls at now. b.mu
// must be held.
func (b *Breaker) refusingLocked(now time.Time) bool {
	b.refill(now)
	return now.Before(b.until) || b.budget < 0
}

package limits

import (
	"testing"
	"time"
)

func TestBreaker(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	b := NewBreaker()
	if !b.Allow(t0) || b.Refusing(t0) {
		t.Fatal("a new breaker refuses")
	}
	// One failure is not enough; the threshold's opens it for backoffBase.
	if d := b.Failure(t0, time.Millisecond, true); d != 0 {
		t.Fatalf("first failure: backoff %v", d)
	}
	if d := b.Failure(t0, time.Millisecond, true); d != backoffBase {
		t.Fatalf("second failure: backoff %v, want %v", d, backoffBase)
	}
	if b.Allow(t0.Add(backoffBase / 2)) {
		t.Fatal("allowed during the backoff")
	}
	// After the backoff one probe at a time.
	after := t0.Add(backoffBase)
	if !b.Allow(after) || b.Allow(after) {
		t.Fatal("want exactly one probe after the backoff")
	}
	// The probe fails: the backoff doubles.
	if d := b.Failure(after, time.Millisecond, true); d != 2*backoffBase {
		t.Fatalf("failed probe: backoff %v, want %v", d, 2*backoffBase)
	}
	// A probe that never ran releases its place; a successful one closes the breaker.
	later := after.Add(2 * backoffBase)
	if !b.Allow(later) {
		t.Fatal("no probe after the second backoff")
	}
	b.Release()
	if !b.Allow(later) {
		t.Fatal("a released probe kept its place")
	}
	b.Success()
	for i := range 2 { // no probe any more: every call allowed
		if !b.Allow(later) {
			t.Fatalf("call %d refused after a success", i)
		}
	}
	if b.Refusing(later) {
		t.Fatal("still refusing after a success")
	}
	// Failures the module is not to blame for (counts false) open nothing, but spending the
	// whole budget does, until it refills at budgetRate.
	if d := b.Failure(later, budgetBurst+time.Millisecond, false); d <= 0 || !b.Refusing(later) {
		t.Fatalf("budget spent: backoff %v, refusing %v", d, b.Refusing(later))
	}
	refilled := later.Add(time.Duration(float64(budgetBurst) / budgetRate))
	if b.Refusing(refilled) {
		t.Fatal("still refusing once the budget refilled")
	}
	// Charges outside calls (replacement instances) spend the budget too.
	c := NewBreaker()
	c.Charge(t0, budgetBurst+time.Millisecond)
	if !c.Refusing(t0) {
		t.Fatal("a charge over the budget did not open the breaker")
	}
}

func TestMemory(t *testing.T) {
	m := &Memory{Limit: 3 << 16}
	if b := m.Reallocate(1 << 16); len(b) != 1<<16 || m.Refused {
		t.Fatalf("a grow under the limit: %d bytes, refused %v", len(b), m.Refused)
	}
	if b := m.Reallocate(4 << 16); b != nil || !m.Refused {
		t.Fatalf("a grow over the limit: %d bytes, refused %v", len(b), m.Refused)
	}
	if b := m.Reallocate(3 << 16); len(b) != 3<<16 || cap(b) > 3<<16 {
		t.Fatalf("a grow to the limit: len %d cap %d", len(b), cap(b))
	}
	m.Free()
}

func TestLogLimit(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	l := NewLogLimit(1, 2)
	for i := range 2 {
		if ok, _ := l.Allow(t0); !ok {
			t.Fatalf("line %d of the burst refused", i)
		}
	}
	for range 3 {
		if ok, _ := l.Allow(t0); ok {
			t.Fatal("a line over the burst allowed")
		}
	}
	if ok, dropped := l.Allow(t0.Add(time.Second)); !ok || dropped != 3 {
		t.Fatalf("a second later: allowed %v, dropped %d, want true, 3", ok, dropped)
	}
}

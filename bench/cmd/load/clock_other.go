//go:build !linux

package main

import "time"

// realClock is the wall clock; off Linux, SleepUntil is the runtime's timer, which may wake up
// to a millisecond late and so add to open-loop latencies.
type realClock struct{}

func newRealClock() realClock { return realClock{} }

func (realClock) Now() time.Time { return time.Now() }

func (realClock) SleepUntil(t time.Time) {
	if d := time.Until(t); d > 0 {
		time.Sleep(d)
	}
}

package proctest

import (
	"errors"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestStopKillReady(t *testing.T) {
	tests := []struct {
		name   string
		script string
		stop   func(p *Process)
	}{
		// A server that exits on SIGTERM.
		{"stop", "exec sleep 60", func(p *Process) { p.Stop(30 * time.Second) }},
		// One that ignores SIGTERM: Stop sends SIGKILL after the grace.
		{"stop ignored", "trap '' TERM; while :; do sleep 1; done", func(p *Process) { p.Stop(100 * time.Millisecond) }},
		// A crash.
		{"kill", "trap '' TERM; while :; do sleep 1; done", func(p *Process) { p.Kill(); p.Kill() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var exited atomic.Bool
			p, err := Start(exec.Command("sh", "-c", tc.script), func() { exited.Store(true) })
			if err != nil {
				t.Fatal(err)
			}
			calls := 0
			err = p.WaitReady(30*time.Second, func() error {
				if calls++; calls < 3 {
					return errors.New("not yet")
				}
				return nil
			})
			if err != nil || calls != 3 {
				t.Fatalf("WaitReady = %v after %d calls, want ready at the third", err, calls)
			}
			tc.stop(p)
			select {
			case <-p.Exited():
			default:
				t.Fatal("returned before the process exited")
			}
			if !exited.Load() {
				t.Error("onExit did not run before Exited closed")
			}
		})
	}
}

func TestWaitReadyExitAndTimeout(t *testing.T) {
	p, err := Start(exec.Command("sh", "-c", "exit 3"), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = p.WaitReady(30*time.Second, func() error { return errors.New("never") })
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "never") {
		t.Fatalf("a process that exits: %v", err)
	}
	q, err := Start(exec.Command("sleep", "60"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Kill()
	err = q.WaitReady(50*time.Millisecond, func() error { return errors.New("still starting") })
	if err == nil || !strings.Contains(err.Error(), "not ready after") {
		t.Fatalf("a process never ready: %v", err)
	}
	if _, err := Start(exec.Command("/nonexistent/binary"), nil); err == nil {
		t.Fatal("started a missing binary")
	}
}

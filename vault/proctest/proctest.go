// Package proctest runs the real servers tests depend on (Vault's dev server, redis-server) as
// child processes: started so they die with the test process, polled until ready with a
// deadline, stopped with SIGTERM (then SIGKILL) or killed like a crash, and always waited for.
// It is the one copy of that code for vault/vaulttest and agent/fleet/redistest.
//
//	p, err := proctest.Start(exec.Command(bin, args...), nil)
//	if err != nil { ... }
//	defer p.Stop(10 * time.Second)
//	if err := p.WaitReady(30*time.Second, func() error { _, err := net.Dial("tcp", addr); return err }); err != nil { ... }
//
// A Process is safe for concurrent use; Stop and Kill may be called more than once.
package proctest

import (
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Process is a running child process.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	once sync.Once
}

// Start starts cmd with SIGKILL as its parent-death signal (it never outlives the test
// process) and waits for it in the background; onExit, when not nil, runs once it has exited
// (to close its log file, for example). cmd's SysProcAttr, if set, is kept.
func Start(cmd *exec.Cmd, onExit func()) (*Process, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("proctest: starting %s: %w", cmd.Path, err)
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		if onExit != nil {
			onExit()
		}
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited is closed once the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.done }

// WaitReady calls ready every 10 ms until it returns nil, and fails when the process exits
// first or timeout passes (the last error of ready says why).
func (p *Process) WaitReady(timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		err := ready()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("proctest: %s exited before it was ready (last check: %w)", p.cmd.Path, err)
		case <-t.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("proctest: %s not ready after %s: %w", p.cmd.Path, timeout, err)
		}
	}
}

// Stop sends SIGTERM and waits for the exit, up to grace; then it sends SIGKILL and waits.
func (p *Process) Stop(grace time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.Kill()
	}
}

// Kill sends SIGKILL (a crash: no shutdown work) and waits for the exit.
func (p *Process) Kill() {
	p.once.Do(func() { _ = p.cmd.Process.Signal(syscall.SIGKILL) })
	<-p.done
}

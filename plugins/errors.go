package plugins

import (
	"errors"
	"fmt"
)

// ErrorKind classifies an evaluation error. It is the `kind` label of the
// tokenagent_policy_errors_total metric. Every kind means the same to the agent: deny with
// policy_error (fail closed).
type ErrorKind string

// The kinds of evaluation error.
const (
	// KindTimeout: the call ran past ModuleOptions.Deadline; the instance was closed.
	KindTimeout ErrorKind = "timeout"
	// KindCanceled: the caller's context ended during the call.
	KindCanceled ErrorKind = "canceled"
	// KindTrap: the module trapped (unreachable, out-of-bounds access, stack overflow, ...).
	KindTrap ErrorKind = "trap"
	// KindExit: the module exited (proc_exit; a Go guest's panic or fatal error ends this way).
	KindExit ErrorKind = "exit"
	// KindMemory: the call failed after the module's memory reached its limit
	// (ModuleOptions.MemoryLimitPages).
	KindMemory ErrorKind = "memory"
	// KindBadOutput: the output broke a rule of ABI.md (layout, pointer out of memory, a
	// reserved header, ...).
	KindBadOutput ErrorKind = "bad_output"
	// KindOutputTooLarge: the output was longer than ModuleOptions.MaxOutputBytes.
	KindOutputTooLarge ErrorKind = "output_too_large"
	// KindInputTooLarge: the request's input record would exceed MaxInputBytes (the module was
	// not called).
	KindInputTooLarge ErrorKind = "input_too_large"
	// KindBusy: every instance stayed busy for ModuleOptions.MaxWait.
	KindBusy ErrorKind = "busy"
	// KindInstantiate: a new instance could not be made.
	KindInstantiate ErrorKind = "instantiate"
	// KindBackoff: the module failed its recent calls and is refused for a short backoff (it
	// was not called; see ModuleOptions and the package documentation on isolation).
	KindBackoff ErrorKind = "backoff"
	// KindClosed: the module or its engine is closed.
	KindClosed ErrorKind = "closed"
)

// Error is the error Evaluate returns. Callers deny with policy_error whatever the kind; the
// kind is for metrics and logs.
type Error struct {
	// Policy is the module's name (ModuleOptions.Name).
	Policy string
	// Kind classifies the failure.
	Kind ErrorKind
	// Err is the underlying error.
	Err error
}

func (e *Error) Error() string {
	return fmt.Sprintf("policy %q: %s: %v", e.Policy, e.Kind, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrABI is wrapped by the errors Load and Reload return for a module that does not implement
// ABI v1: a missing marker or export, an export of the wrong type, or an import the host does
// not provide.
var ErrABI = errors.New("not a tokenagent ABI v1 module")

// ErrClosed is wrapped by the errors of calls on a closed Engine or Module.
var ErrClosed = errors.New("plugins: closed")

package plugins

import (
	"errors"
	"fmt"
)

// Failure classifies an evaluation error: what went wrong, not which credential (token.Kind)
// or module. It is the `kind` label of the tokenagent_policy_errors_total metric. Every kind means the same to the agent: deny with
// policy_error (fail closed).
type Failure string

// The failures of an evaluation.
const (
	// FailureTimeout: the call ran past ModuleOptions.Deadline; the instance was closed.
	FailureTimeout Failure = "timeout"
	// FailureCanceled: the caller's context ended during the call.
	FailureCanceled Failure = "canceled"
	// FailureTrap: the module trapped (unreachable, out-of-bounds access, stack overflow, ...).
	FailureTrap Failure = "trap"
	// FailureExit: the module exited (proc_exit; a Go guest's panic or fatal error ends this way).
	FailureExit Failure = "exit"
	// FailureMemory: the call failed after the module's memory reached its limit
	// (ModuleOptions.MemoryLimitPages).
	FailureMemory Failure = "memory"
	// FailureBadOutput: the output broke a rule of ABI.md (layout, pointer out of memory, a
	// reserved header, ...).
	FailureBadOutput Failure = "bad_output"
	// FailureOutputTooLarge: the output was longer than ModuleOptions.MaxOutputBytes.
	FailureOutputTooLarge Failure = "output_too_large"
	// FailureInputTooLarge: the request's input record would exceed MaxInputBytes (the module was
	// not called).
	FailureInputTooLarge Failure = "input_too_large"
	// FailureBusy: every instance stayed busy for ModuleOptions.MaxWait.
	FailureBusy Failure = "busy"
	// FailureInstantiate: a new instance could not be made.
	FailureInstantiate Failure = "instantiate"
	// FailureBackoff: the module failed its recent calls and is refused for a short backoff (it
	// was not called; see ModuleOptions and the package documentation on isolation).
	FailureBackoff Failure = "backoff"
	// FailureClosed: the module or its engine is closed.
	FailureClosed Failure = "closed"
)

// Error is the error Evaluate returns. Callers deny with policy_error whatever the failure; it
// is for metrics and logs.
type Error struct {
	// Policy is the module's name (ModuleOptions.Name).
	Policy string
	// Failure classifies it.
	Failure Failure
	// Err is the underlying error.
	Err error
}

func (e *Error) Error() string {
	return fmt.Sprintf("policy %q: %s: %v", e.Policy, e.Failure, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrABI is wrapped by the errors Load and Reload return for a module that does not implement
// ABI v1: a missing marker or export, an export of the wrong type, or an import the host does
// not provide.
var ErrABI = errors.New("not a tokenagent ABI v1 module")

// ErrClosed is wrapped by the errors of calls on a closed Engine or Module.
var ErrClosed = errors.New("plugins: closed")

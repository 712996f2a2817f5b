// Package blocking lets code that is about to wait say so to whoever runs it.
//
// The Check transport answers a check on its connection's own goroutine, inline, because a
// check usually needs nothing but memory and CPU. When a check must wait — a key-source read,
// a JWKS fetch, the shared replay store, a slow policy — the transport wants to know before
// the wait starts, so it can hand the connection to a new goroutine and let the other checks
// on it go on. The code that waits calls Ahead with the check's context; the transport put a
// hook there.
//
//	ctx = blocking.With(ctx, func() { /* hand the connection on */ })
//	...
//	blocking.Ahead(ctx) // in the key store, just before it reads the source
//
// # Notes
//
//   - Ahead costs one context lookup and does nothing when no hook is set, so any code may
//     call it, and calling it where no wait follows only costs the runner a hand-off.
//   - A hook must be safe to call from any goroutine, more than once.
//   - The package imports nothing of tokenagent: the key layer, the verifiers and the policy
//     host may all call it, and the arrows still point one way.
package blocking

import "context"

// Hook is told that the work it runs is about to wait.
type Hook interface {
	// Ahead is called just before the wait; it must be safe to call from any goroutine and
	// more than once.
	Ahead()
}

// HookKey is the context key of the hook: a context whose Value(HookKey{}) is a Hook has one.
// With makes such a context; a runner with a context type of its own may answer the key
// itself and save the allocation.
type HookKey struct{}

// funcHook is a func used as a Hook.
type funcHook func()

func (f funcHook) Ahead() { f() }

// With returns a copy of ctx that carries hook: Ahead on it (or on a context derived from
// it) calls hook.
func With(ctx context.Context, hook func()) context.Context {
	return context.WithValue(ctx, HookKey{}, Hook(funcHook(hook)))
}

// Ahead tells the hook of ctx, if there is one, that the caller is about to wait.
func Ahead(ctx context.Context) {
	if ctx == nil {
		return
	}
	if h, ok := ctx.Value(HookKey{}).(Hook); ok && h != nil {
		h.Ahead()
	}
}

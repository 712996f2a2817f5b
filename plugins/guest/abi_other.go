//go:build !wasip1

package guest

// Log sends msg to the agent's log at level. Outside WebAssembly (a policy's native unit tests)
// it does nothing.
func Log(level Level, msg string) {}

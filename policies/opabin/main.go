// Command opabin is OPA 1.22.4's own command line, built from its Go module, for tokenagent's
// tests: they compile Rego to WebAssembly bundles with `opa build -t wasm` and evaluate the same
// Rego with `opa eval` (the differential test). build.sh builds it once into the user's cache;
// nothing of it is linked into tokenagent.
package main

import (
	"errors"
	"os"

	"github.com/open-policy-agent/opa/cmd"
)

func main() {
	if err := cmd.RootCommand.Execute(); err != nil {
		if e, ok := errors.AsType[*cmd.ExitError](err); ok {
			os.Exit(e.Exit)
		}
		os.Exit(1)
	}
}

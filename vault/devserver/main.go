// Command devserver is a HashiCorp Vault binary built from Vault's own Go module, used only by
// tokenagent's integration tests to run a real `vault server -dev` on 127.0.0.1.
//
// It lives in its own Go module so that the project's `go test ./...` never builds it; see
// vault/devserver/build.sh, which caches the binary under $HOME/.cache/tokenagent/.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() { os.Exit(command.Run(os.Args[1:])) }

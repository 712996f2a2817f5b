// Command tokenagent is the per-node auth sidecar: an Envoy ext_authz v3 gRPC server (and an
// HTTP front for nginx, Traefik and Envoy's HTTP ext_authz) that verifies MindTouch / CXone
// Expert tokens with keys from Vault (or an embedded key file).
//
//	tokenagent serve --config FILE [--grpc-addr ADDR] [--http-addr ADDR] [--authz-http-addr ADDR] [--pprof]
//	tokenagent mint authtoken|server --config FILE --site ID --user USER ...
//	tokenagent check --addr ADDR --host HOST --path PATH [-H 'name: value']...
//	tokenagent revoke --config FILE --site ID (--user U | --client C | --token-file F) [--before T]
//	tokenagent revocations --config FILE --site ID
//	tokenagent version
//
// Every command prints a manual page with --help (or `tokenagent help COMMAND`).
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks an error already explained; exit code 2.
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(args[1:], stderr)
	case "mint":
		err = cmdMint(args[1:], stdout, stderr)
	case "check":
		var code int
		code, err = cmdCheck(args[1:], stdout, stderr)
		if err != nil && !errors.Is(err, errUsage) && !errors.Is(err, pflag.ErrHelp) {
			// An agent not reached is exit 2, apart from a denial's 1.
			fmt.Fprintf(stderr, "tokenagent: %v\n", err)
			return code
		}
		if err == nil {
			return code
		}
	case "revoke":
		err = cmdRevoke(args[1:], stdout, stderr)
	case "revocations":
		err = cmdRevocations(args[1:], stdout, stderr)
	case "version", "--version":
		err = cmdVersion(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		if len(args) > 1 && args[0] == "help" {
			// `tokenagent help COMMAND` prints the page on stdout, for a pager.
			return run([]string{args[1], "--help"}, stdout, stdout)
		}
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "tokenagent: unknown command %q (want serve, mint, check, revoke, revocations or version)\n", args[0])
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, pflag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintf(stderr, "tokenagent: %v\n", err)
	return 1
}

package main

// The pages and flag handling every command shares.

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"

	"github.com/spf13/pflag"
)

const usage = `tokenagent — an Envoy ext_authz sidecar for MindTouch / CXone Expert tokens

Usage:
  tokenagent serve   --config FILE [--grpc-addr ADDR] [--http-addr ADDR] [--authz-http-addr ADDR] [flags]
  tokenagent mint    authtoken|server --config FILE --site ID --user USER [flags]
  tokenagent check   --addr ADDR --host HOST [--path PATH] [-H 'name: value']... [flags]
  tokenagent revoke  --config FILE --site ID (--user U | --client C | --token-file F) [--before T]
  tokenagent revocations --config FILE --site ID
  tokenagent version

Commands:
  serve     run the agent (gRPC ext_authz, HTTP front, /healthz, /readyz, /metrics)
  mint      print a token of a kind for a site
  check     ask a running agent about one request, as Envoy would
  revoke    end credentials early at every agent of the fleet (a user, a client, a token)
  revocations  list a site's revocation entries
  version   print the version

Run 'tokenagent COMMAND --help' (or 'tokenagent help COMMAND') for a command's manual page.
`

// helpPage is a command's manual page; the FLAGS section comes from its flag set.
type helpPage struct {
	name, synopsis, description, exitStatus, environment, examples, extra string
}

// vaultEnvironment is the ENVIRONMENT section of the commands that read the key source.
const vaultEnvironment = `VAULT_ADDR        Vault's address, when keys.vault.address is empty.
VAULT_TOKEN       the Vault token of auth method token, when keys.vault.auth.token_file is empty.
VAULT_NAMESPACE   the Vault Enterprise namespace, when keys.vault.namespace is empty.
VAULT_CACERT, VAULT_CAPATH, VAULT_CLIENT_CERT, VAULT_CLIENT_KEY, VAULT_SKIP_VERIFY
                  TLS to Vault, as for the vault CLI.
None of them is read with keys.source: file.`

// write prints the page with the flag set's flags.
func (h helpPage) write(w io.Writer, fs *pflag.FlagSet) {
	section := func(title, body string) {
		if body == "" {
			return
		}
		fmt.Fprintf(w, "%s\n", title)
		for _, line := range strings.Split(strings.TrimRight(body, "\n"), "\n") {
			if line == "" {
				fmt.Fprintln(w)
				continue
			}
			fmt.Fprintf(w, "    %s\n", line)
		}
		fmt.Fprintln(w)
	}
	section("NAME", h.name)
	section("SYNOPSIS", h.synopsis)
	section("DESCRIPTION", h.description)
	if fs != nil && fs.HasFlags() {
		fmt.Fprintf(w, "FLAGS\n%s\n", fs.FlagUsagesWrapped(100))
	}
	section("EXIT STATUS", h.exitStatus)
	section("ENVIRONMENT", h.environment)
	if h.extra != "" {
		fmt.Fprint(w, strings.TrimRight(h.extra, "\n")+"\n\n")
	}
	section("EXAMPLES", h.examples)
}

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}

// newFlags returns a flag set that reports its own errors in one line and prints page for
// --help.
func newFlags(name string, page helpPage, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	fs.Usage = func() { page.write(fs.Output(), fs) }
	return fs
}

func parseFlags(fs *pflag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(io.Discard) // one line on error, full usage only for --help
	err := fs.Parse(args)
	if errors.Is(err, pflag.ErrHelp) {
		fs.SetOutput(stderr)
		fs.Usage()
		return err
	}
	if err != nil {
		fmt.Fprintf(stderr, "tokenagent %s: %v (see --help)\n", fs.Name(), err)
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tokenagent %s: unexpected argument %q (see --help)\n", fs.Name(), fs.Arg(0))
		return errUsage
	}
	return nil
}

func newLogger(level string, w io.Writer) *slog.Logger {
	var l slog.Level
	switch level {
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

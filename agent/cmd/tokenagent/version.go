package main

import (
	"fmt"
	"io"
	"runtime"
)

var versionHelp = helpPage{
	name:     "tokenagent version — print the version",
	synopsis: "tokenagent version",
	description: `Prints the build's version (set at build time, else the module version), the Go version, and the
platform. The same version is in the metric tokenagent_build_info{version,go_version}.`,
	exitStatus:  "0   always.",
	environment: "version reads no environment variables (VAULT_ADDR, VAULT_TOKEN and VAULT_NAMESPACE matter to\nserve and mint only).",
	examples: `Example 1:
    tokenagent version`,
}

func cmdVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", versionHelp, stderr)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "tokenagent %s (%s, %s/%s)\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}

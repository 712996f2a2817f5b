// Command opa-envoy is OPA-Envoy v1.14.1-envoy (github.com/open-policy-agent/opa-envoy-plugin),
// built from its own main package's two lines so that bench/opaenvoy/compare.sh can run it
// side by side with tokenagent. Not part of tokenagent.
package main

import (
	"os"

	"github.com/open-policy-agent/opa-envoy-plugin/plugin"
	"github.com/open-policy-agent/opa/cmd"
	"github.com/open-policy-agent/opa/v1/runtime"
)

func main() {
	runtime.RegisterPlugin("envoy.ext_authz.grpc", plugin.Factory{})
	runtime.RegisterPlugin(plugin.PluginName, plugin.Factory{})
	if err := cmd.RootCommand.Execute(); err != nil {
		os.Exit(1)
	}
}

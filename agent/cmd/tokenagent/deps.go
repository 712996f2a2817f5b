//go:build tools

// This file pins modules that packages of tokenagent import while they are being built, so
// that `go mod tidy` keeps them in go.mod. It is never compiled.
package main

import (
	_ "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	_ "github.com/go-jose/go-jose/v4"
	_ "github.com/hashicorp/vault/api"
	_ "github.com/hashicorp/vault/api/auth/approle"
	_ "github.com/hashicorp/vault/api/auth/kubernetes"
	_ "github.com/spf13/pflag"
	_ "github.com/tetratelabs/wazero"
	_ "google.golang.org/grpc"
)

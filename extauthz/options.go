package extauthz

import (
	"runtime"

	"google.golang.org/grpc"
	// gzip-compressed CheckRequests are read by both transports, whatever else the binary
	// links (gRPC-Go serves gzip only when this package is imported; the transport always).
	_ "google.golang.org/grpc/encoding/gzip"
)

// ServerOptions are the gRPC server options the agent serves ext_authz with:
//
//	gs := grpc.NewServer(extauthz.ServerOptions()...)
//
// # Notes
//
//   - Stream workers: by default grpc-go starts a new goroutine for every call, and a check's
//     call chain (gRPC, decoding, the agent, a verifier, crypto) outgrows a new goroutine's stack,
//     so each call also paid for growing and copying its stack (about a seventh of the agent's CPU
//     under load, measured with bench/cmd/load and pprof). A pool of 8 workers per CPU, whose
//     stacks have already grown, runs most calls instead; a call that finds every worker busy
//     still gets its own goroutine.
//   - Codec: the Check RPC's messages are read and written in the wire format directly
//     (package extauthz/internal/wire), every other message (health, reflection) with
//     protobuf. Register needs it.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.NumStreamWorkers(uint32(8 * runtime.GOMAXPROCS(0))),
		grpc.ForceServerCodecV2(newCodec()),
	}
}

package extauthz

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/extauthz/internal/h2"
	"github.com/tokenagent/tokenagent/extauthz/internal/wire"
)

// Transport serves the Check RPC and the gRPC health check over tokenagent's own HTTP/2
// server (package extauthz/internal/h2): one goroutine per connection reads the frames and
// answers a check inline, writing the answer into a buffer flushed just before the next read
// that would block. A check that must wait (a key-source read, a JWKS fetch, the shared replay
// store, the exchange, a slow policy) keeps its goroutine and hands the connection to a new
// one, so the other checks on the connection go on. Every other method (reflection, health
// Watch, anything registered on the gRPC-Go server given as Fallback) is served by gRPC-Go on
// the same connection, stream by stream.
//
//	ext := extauthz.NewServer(agent)
//	gs := grpc.NewServer(extauthz.ServerOptions()...) // reflection, health Watch
//	ext.Register(gs)
//	t := ext.NewTransport(extauthz.TransportOptions{Fallback: gs})
//	go t.Serve(listener)
//	...
//	t.Shutdown(ctx) // GOAWAY, in-flight checks answered
//
// # Notes
//
//   - What gRPC-Go's server does for Envoy, it does too: TLS and mutual TLS (ALPN h2),
//     grpc-timeout as the check's deadline, a 4 MiB message limit, gzip requests,
//     grpc-status and percent-encoded grpc-message trailers, GOAWAY drain on Shutdown,
//     keepalive PINGs answered, flow control both ways.
//   - It is held to h2spec and to gRPC-Go's answers on the same frames (the package's tests),
//     and bounds what a peer can make it do (TransportLimits).
type Transport struct {
	srv *h2.Server
}

// TransportOptions configure a Transport.
type TransportOptions struct {
	// TLS serves TLS (mutual TLS when it asks for client certificates); nil: plaintext h2c.
	// Its certificates may change between handshakes (GetConfigForClient).
	TLS *tls.Config
	// Fallback serves every method the transport does not answer itself (gRPC reflection,
	// health Watch, …) on the same connections; nil: those calls are UNIMPLEMENTED.
	Fallback *grpc.Server
	// Limits bound what one connection may make the server do; zero fields take defaults.
	Limits TransportLimits
	// Logger receives connection problems (floods, protocol errors) and recovered panics
	// (default: the Server's logger).
	Logger *slog.Logger
	// Registerer registers the transport's metrics (tokenagent_transport_*); nil: none.
	Registerer prometheus.Registerer
}

// TransportLimits bound one connection; zero fields take the defaults in brackets.
type TransportLimits struct {
	// MaxConcurrentStreams is SETTINGS_MAX_CONCURRENT_STREAMS [1024].
	MaxConcurrentStreams uint32
	// MaxRecvMsgSize is the largest CheckRequest [4 MiB, as gRPC-Go].
	MaxRecvMsgSize int
	// MaxHeaderListSize is SETTINGS_MAX_HEADER_LIST_SIZE [64 KiB].
	MaxHeaderListSize uint32
	// WriteTimeout ends a connection whose peer stops reading [10 s].
	WriteTimeout time.Duration
}

// NewTransport returns a transport answering with s. It starts nothing until Serve.
func (s *Server) NewTransport(opts TransportOptions) *Transport {
	log := opts.Logger
	if log == nil {
		log = s.logger()
	}
	h2opts := h2.Options{
		Unary: map[string]h2.UnaryFunc{
			checkMethod:  s.checkUnary,
			healthMethod: s.healthUnary,
		},
		TLS:    opts.TLS,
		Logger: log,
		Limits: h2.Limits{
			MaxConcurrentStreams: opts.Limits.MaxConcurrentStreams,
			MaxRecvMsgSize:       opts.Limits.MaxRecvMsgSize,
			MaxHeaderListSize:    opts.Limits.MaxHeaderListSize,
			WriteTimeout:         opts.Limits.WriteTimeout,
		},
	}
	if opts.Fallback != nil {
		h2opts.Fallback = opts.Fallback
	}
	if opts.Registerer != nil {
		h2opts.Metrics = h2.NewMetrics(opts.Registerer)
	}
	return &Transport{srv: h2.New(h2opts)}
}

// Serve serves l until Shutdown or Close; it returns h2.ErrServerClosed then, or l's error.
func (t *Transport) Serve(l net.Listener) error { return t.srv.Serve(l) }

// Shutdown drains: no new connection, GOAWAY on every open one (after a PING round trip, so
// no check the peer already sent is lost), in-flight checks answered, then the connections
// close. When ctx ends first, what is left is closed and ctx's error returned.
func (t *Transport) Shutdown(ctx context.Context) error { return t.srv.Shutdown(ctx) }

// Close closes every listener and connection at once.
func (t *Transport) Close() { t.srv.Close() }

// ErrTransportClosed is what Serve returns after Shutdown or Close.
var ErrTransportClosed = h2.ErrServerClosed

// healthMethod is the gRPC health check's full name.
const healthMethod = "/grpc.health.v1.Health/Check"

// unaryCall is what one check on the transport needs besides the agent's own work: the
// decoded attributes (their headers map reused), the agent's request and the answer's fields.
// The Server pools them: once Check returns nothing keeps a reference to them (the agent
// reads the request's headers during Check only).
type unaryCall struct {
	http wire.HTTP
	req  agent.Request
	resp wire.Response
	md   [8]wire.Header
}

// checkUnary is the Check RPC for the transport: the request read from the wire, the answer
// written to it, as checkWire does for gRPC-Go.
func (s *Server) checkUnary(ctx context.Context, msg []byte, dst []byte) ([]byte, h2.Status) {
	call, _ := s.calls.Get().(*unaryCall)
	if call == nil {
		call = &unaryCall{}
	}
	defer s.calls.Put(call)
	if err := wire.DecodeCheckRequest(msg, &call.http); err != nil {
		return dst, h2.Status{Code: uint32(codes.Internal), Message: "grpc: failed to unmarshal the CheckRequest: " + err.Error()}
	}
	if err := fillRequest(&call.http, &call.req); err != nil {
		return dst, statusOf(err)
	}
	d, err := s.decide(ctx, &call.req)
	if err != nil {
		return dst, statusOf(err)
	}
	r := &call.resp
	r.Metadata = call.md[:0]
	toWire(d, r)
	if err := r.Valid(); err != nil { // what proto.Marshal would refuse
		s.logger().Error("check answer not encodable; failing closed", "error", err.Error())
		return dst, h2.Status{Code: uint32(codes.Internal), Message: "internal error"}
	}
	out := wire.AppendCheckResponse(dst, r)
	*r = wire.Response{} // no reference to the decision is kept
	call.req = agent.Request{}
	return out, h2.Status{}
}

// healthUnary is grpc.health.v1.Health/Check, answered by the same health server gRPC-Go
// serves (Shutdown turns it NOT_SERVING for both).
func (s *Server) healthUnary(ctx context.Context, msg []byte, dst []byte) ([]byte, h2.Status) {
	var in healthpb.HealthCheckRequest
	if err := proto.Unmarshal(msg, &in); err != nil {
		return dst, h2.Status{Code: uint32(codes.Internal), Message: "grpc: failed to unmarshal the received message: " + err.Error()}
	}
	out, err := s.health.Check(ctx, &in)
	if err != nil {
		return dst, statusOf(err)
	}
	b, err := proto.MarshalOptions{}.MarshalAppend(dst, out)
	if err != nil {
		return dst, h2.Status{Code: uint32(codes.Internal), Message: err.Error()}
	}
	return b, h2.Status{}
}

// statusOf is the gRPC status of err.
func statusOf(err error) h2.Status {
	st := status.Convert(err)
	return h2.Status{Code: uint32(st.Code()), Message: st.Message()}
}

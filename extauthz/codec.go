package extauthz

import (
	"context"
	"sync"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/tokenagent/tokenagent/extauthz/internal/wire"
)

// The Check RPC as the server runs it: the request read from the wire into wire.HTTP and the
// answer written to the wire from the Decision (package wire), by a gRPC codec that hands
// every other message (health, reflection) to the protobuf codec. The generated
// authv3.CheckRequest and CheckResponse are never built.

// wireRequest is a Check request, read by the codec.
type wireRequest struct{ http wire.HTTP }

// wireResponse is a Check answer, written by the codec; its buffer returns to the server's
// pool once gRPC has sent it.
type wireResponse struct {
	b    *[]byte
	pool *bytesPool
}

// codec is the server's gRPC codec: the wire reader and writer for the Check RPC's messages,
// protobuf for any other.
type codec struct{ proto encoding.CodecV2 }

// codecName is the content-subtype it serves: gRPC's default ("proto"), what Envoy sends.
const codecName = "proto"

func newCodec() codec { return codec{proto: encoding.GetCodecV2(codecName)} }

func (codec) Name() string { return codecName }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*wireResponse); ok {
		return mem.BufferSlice{mem.NewBuffer(r.b, r.pool)}, nil
	}
	return c.proto.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*wireRequest)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	var b []byte
	if len(data) == 1 {
		b = data[0].ReadOnlyData() // the decoder copies what it keeps
	} else {
		b = data.Materialize()
	}
	if err := wire.DecodeCheckRequest(b, &r.http); err != nil {
		return status.Error(codes.Internal, "grpc: failed to unmarshal the CheckRequest: "+err.Error())
	}
	return nil
}

// bytesPool recycles the answers' buffers (a mem.BufferPool: gRPC returns a buffer once the
// answer is written).
type bytesPool struct{ p sync.Pool }

func (b *bytesPool) Get(n int) *[]byte {
	if v, ok := b.p.Get().(*[]byte); ok && cap(*v) >= n {
		*v = (*v)[:n]
		return v
	}
	s := make([]byte, n, max(n, 1024))
	return &s
}

func (b *bytesPool) Put(s *[]byte) {
	if cap(*s) <= 64<<10 { // an answer with a large body is not kept
		b.p.Put(s)
	}
}

// checkMethod is the Check RPC's full name, for interceptors.
const checkMethod = "/envoy.service.auth.v3.Authorization/Check"

// wireChecker is what the Check handler needs of the service (grpc checks it at
// registration).
type wireChecker interface {
	checkWire(ctx context.Context, in *wireRequest) (*wireResponse, error)
}

// serviceDesc is envoy.service.auth.v3.Authorization with the wire handler; its Metadata names
// the generated file, so reflection describes the real service.
var serviceDesc = grpc.ServiceDesc{
	ServiceName: authv3.Authorization_ServiceDesc.ServiceName,
	HandlerType: (*wireChecker)(nil),
	Methods: []grpc.MethodDesc{{MethodName: "Check", Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
		in := new(wireRequest)
		if err := dec(in); err != nil {
			return nil, err
		}
		if icpt == nil {
			return srv.(wireChecker).checkWire(ctx, in)
		}
		return icpt(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: checkMethod}, func(ctx context.Context, req any) (any, error) {
			return srv.(wireChecker).checkWire(ctx, req.(*wireRequest))
		})
	}}},
	Metadata: authv3.Authorization_ServiceDesc.Metadata,
}

// checkWire decides one request read from the wire and writes the answer. A panic while
// deciding is recovered, logged and answered with a gRPC Internal error: Envoy
// (failure_mode_allow: false) then denies the request, so a bug fails closed without taking the
// agent down.
func (s *Server) checkWire(ctx context.Context, in *wireRequest) (*wireResponse, error) {
	req, err := requestFrom(&in.http)
	if err != nil {
		return nil, err
	}
	d, err := s.decide(ctx, req)
	if err != nil {
		return nil, err
	}
	var r wire.Response
	var md [8]wire.Header
	r.Metadata = md[:0]
	toWire(d, &r)
	if err := r.Valid(); err != nil { // what proto.Marshal would refuse
		s.logger().Error("check answer not encodable; failing closed", "error", err.Error())
		return nil, status.Error(codes.Internal, "internal error")
	}
	b := s.responses.Get(0)
	*b = wire.AppendCheckResponse((*b)[:0], &r)
	return &wireResponse{b: b, pool: &s.responses}, nil
}

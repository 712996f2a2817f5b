package extauthz

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/extauthz/internal/h2/h2test"
	"github.com/tokenagent/tokenagent/vault"
)

// The transport against gRPC-Go's server: the same CheckRequests, from gRPC-Go's client and as
// raw frame sequences, answered by both over real loopback connections, must come back the
// same (the decision id, random per answer, aside).

// servers runs the same Server (over the fuzz agent) behind both transports; it returns their
// addresses by name.
func servers(t *testing.T, s *Server) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, name := range []string{"tokenagent", "grpc-go"} {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		gs := grpc.NewServer(ServerOptions()...)
		s.Register(gs)
		if name == "grpc-go" {
			go func() { _ = gs.Serve(lis) }()
			t.Cleanup(gs.Stop)
		} else {
			tr := s.NewTransport(TransportOptions{Fallback: gs})
			go func() { _ = tr.Serve(lis) }()
			t.Cleanup(tr.Close)
		}
		out[name] = lis.Addr().String()
	}
	return out
}

// withoutDecisionID clears the decision id, which differs between any two answers.
func withoutDecisionID(r *authv3.CheckResponse) *authv3.CheckResponse {
	r = proto.Clone(r).(*authv3.CheckResponse)
	delete(r.GetDynamicMetadata().GetFields(), "decision_id")
	//lint:ignore SA1019 the deprecated field is compared too: an answer that set it would differ
	delete(r.GetOkResponse().GetDynamicMetadata().GetFields(), "decision_id")
	return r
}

// differentialRequests are CheckRequests of every outcome: allowed (server token, anonymous),
// denied (bad signature, unknown site, malformed request), and one the agent cannot read.
func differentialRequests() map[string]*authv3.CheckRequest {
	return map[string]*authv3.CheckRequest{
		"server token":  checkRequest("GET", "docs.example.com", "/page", map[string]string{"x-deki-token": fuzzServerToken("42")}),
		"anonymous":     checkRequest("GET", "docs.example.com", "/", map[string]string{"x-auth-user": "spoofed"}),
		"bad signature": checkRequest("GET", "docs.example.com", "/", map[string]string{"x-deki-token": "tkn_k1_1_42_" + strings.Repeat("0", 64)}),
		"unknown site":  checkRequest("GET", "elsewhere.example.net", "/", nil),
		"malformed":     checkRequest("GET", "docs.example.com", "/a%00b", nil),
		"no http":       {Attributes: &authv3.AttributeContext{}},
	}
}

func TestTransportDifferentialClient(t *testing.T) {
	addrs := servers(t, NewServer(fuzzAgent(t)))
	answers := map[string]map[string]*authv3.CheckResponse{}
	errs := map[string]map[string]codes.Code{}
	for name, addr := range addrs {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		answers[name], errs[name] = map[string]*authv3.CheckResponse{}, map[string]codes.Code{}
		client := authv3.NewAuthorizationClient(conn)
		for kind, req := range differentialRequests() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			resp, err := client.Check(ctx, req)
			cancel()
			errs[name][kind] = status.Code(err)
			if err == nil {
				answers[name][kind] = withoutDecisionID(resp)
			}
		}
	}
	for kind := range differentialRequests() {
		a, b := answers["tokenagent"][kind], answers["grpc-go"][kind]
		if errs["tokenagent"][kind] != errs["grpc-go"][kind] {
			t.Errorf("%s: error %v, gRPC-Go %v", kind, errs["tokenagent"][kind], errs["grpc-go"][kind])
		}
		if diff := cmpProto(a, b); diff != "" {
			t.Errorf("%s: the answers differ:\n%s", kind, diff)
		}
	}
	if errs["tokenagent"]["no http"] != codes.InvalidArgument {
		t.Errorf("a request without HTTP attributes: %v, want InvalidArgument", errs["tokenagent"]["no http"])
	}
}

func cmpProto(a, b proto.Message) string {
	if proto.Equal(a, b) {
		return ""
	}
	return fmt.Sprintf("tokenagent: %v\ngRPC-Go:    %v", protocmpFormat(a), protocmpFormat(b))
}

func protocmpFormat(m proto.Message) string {
	if m == nil {
		return "<none>"
	}
	return prototext.MarshalOptions{}.Format(m)
}

// script is a frame sequence: it sends one or more calls on a peer and names the streams
// whose answers count. A script that reads part of an answer itself returns what it read.
type script struct {
	name     string
	settings []http2.Setting
	run      func(p *h2test.Peer, msg []byte) (ids []uint32, partial []byte)
	// differs, when set, is how gRPC-Go answers differently, and why that is right here (the
	// extauthz/README.md lists it).
	differs string
}

// scripts are the frame sequences of issue "A Check transport of our own": a plain call, split
// HEADERS/CONTINUATION, DATA in many frames, padding, trailers, a reset in the middle of a
// request, an exhausted window, and requests that cannot be served.
func scripts() []script {
	call := func(p *h2test.Peer, id uint32, msg []byte, more ...string) {
		p.Must(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.Block(h2test.GRPCHeaders(checkMethod, more...)...), EndHeaders: true}))
		p.Must(p.Fr.WriteData(id, true, h2test.Frame(msg)))
	}
	return []script{
		{name: "one call", run: func(p *h2test.Peer, msg []byte) ([]uint32, []byte) { call(p, 1, msg); return []uint32{1}, nil }},
		{name: "split HEADERS and CONTINUATION", run: func(p *h2test.Peer, msg []byte) ([]uint32, []byte) {
			blk := p.Block(h2test.GRPCHeaders(checkMethod, "x-extra", strings.Repeat("e", 50))...)
			p.Must(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk[:5]}))
			for i := 5; i < len(blk); i += 10 {
				p.Must(p.Fr.WriteContinuation(1, i+10 >= len(blk), blk[i:min(i+10, len(blk))]))
			}
			p.Must(p.Fr.WriteData(1, true, h2test.Frame(msg)))
			return []uint32{1}, nil
		}},
		{name: "DATA in many padded frames", run: func(p *h2test.Peer, msg []byte) ([]uint32, []byte) {
			p.Must(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: p.Block(h2test.GRPCHeaders(checkMethod)...), EndHeaders: true}))
			body := h2test.Frame(msg)
			for i := 0; i < len(body); i += 7 {
				p.Must(p.Fr.WriteDataPadded(1, false, body[i:min(i+7, len(body))], make([]byte, i%3)))
			}
			p.Must(p.Fr.WriteData(1, true, nil))
			return []uint32{1}, nil
		}},
		{name: "trailers", differs: "gRPC-Go ends the connection on request trailers (a HEADERS frame on an open stream); RFC 9113 §8.1 allows them, and the transport reads them as the end of the request", run: func(p *h2test.Peer, msg []byte) ([]uint32, []byte) {
			p.Must(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: p.Block(h2test.GRPCHeaders(checkMethod)...), EndHeaders: true}))
			p.Must(p.Fr.WriteData(1, false, h2test.Frame(msg)))
			p.Must(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: p.Block("x-trailer", "t"), EndHeaders: true, EndStream: true}))
			return []uint32{1}, nil
		}},
		{name: "reset mid-request", run: func(p *h2test.Peer, msg []byte) ([]uint32, []byte) {
			p.Must(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: p.Block(h2test.GRPCHeaders(checkMethod)...), EndHeaders: true}))
			p.Must(p.Fr.WriteData(1, false, h2test.Frame(msg)[:3]))
			p.Must(p.Fr.WriteRSTStream(1, http2.ErrCodeCancel))
			call(p, 3, msg)
			return []uint32{3}, nil
		}},
		{name: "window exhaustion", settings: []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 16}},
			run: func(p *h2test.Peer, msg []byte) ([]uint32, []byte) {
				call(p, 1, msg)
				// The answer stalls after 16 bytes until the window opens.
				var got []byte
				for len(got) < 16 {
					if f, ok := p.Read().(*http2.DataFrame); ok {
						got = append(got, f.Data()...)
					}
				}
				p.Must(p.Fr.WriteWindowUpdate(1, 1<<20))
				return []uint32{1}, got
			}},
		{name: "no message", run: func(p *h2test.Peer, _ []byte) ([]uint32, []byte) {
			p.Must(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: p.Block(h2test.GRPCHeaders(checkMethod)...), EndHeaders: true, EndStream: true}))
			return []uint32{1}, nil
		}},
		{name: "compressed flag without grpc-encoding", run: func(p *h2test.Peer, msg []byte) ([]uint32, []byte) {
			p.Must(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: p.Block(h2test.GRPCHeaders(checkMethod)...), EndHeaders: true}))
			b := h2test.Frame(msg)
			b[0] = 1
			p.Must(p.Fr.WriteData(1, true, b))
			return []uint32{1}, nil
		}},
		{name: "gzip", run: func(p *h2test.Peer, msg []byte) ([]uint32, []byte) {
			var z bytes.Buffer
			zw := gzip.NewWriter(&z)
			_, _ = zw.Write(msg)
			_ = zw.Close()
			p.Must(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: p.Block(h2test.GRPCHeaders(checkMethod, "grpc-encoding", "gzip")...), EndHeaders: true}))
			b := h2test.Frame(z.Bytes())
			b[0] = 1
			p.Must(p.Fr.WriteData(1, true, b))
			return []uint32{1}, nil
		}},
		{name: "unknown grpc-encoding", run: func(p *h2test.Peer, msg []byte) ([]uint32, []byte) {
			call(p, 1, msg, "grpc-encoding", "snappy")
			return []uint32{1}, nil
		}},
		{name: "malformed grpc-timeout", run: func(p *h2test.Peer, msg []byte) ([]uint32, []byte) {
			call(p, 1, msg, "grpc-timeout", "soon")
			return []uint32{1}, nil
		}},
		{name: "message over 4 MiB", run: func(p *h2test.Peer, _ []byte) ([]uint32, []byte) {
			p.Must(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: p.Block(h2test.GRPCHeaders(checkMethod)...), EndHeaders: true}))
			p.Must(p.Fr.WriteData(1, false, []byte{0, 0, 0x40, 0, 1})) // announces 4 MiB + 1
			return []uint32{1}, nil
		}},
	}
}

func TestTransportDifferentialFrames(t *testing.T) {
	addrs := servers(t, NewServer(fuzzAgent(t)))
	msg, err := proto.Marshal(differentialRequests()["server token"])
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range scripts() {
		t.Run(sc.name, func(t *testing.T) {
			got := map[string]string{}
			for name, addr := range addrs {
				p := h2test.Dial(t, addr, sc.settings...)
				ids, partial := sc.run(p, msg)
				answers, _, err := p.TryAnswers(ids...)
				if err != nil {
					got[name] = "connection closed: " + err.Error()
					continue
				}
				var b strings.Builder
				for _, id := range ids {
					a := answers[id]
					a.Data = append(partial, a.Data...)
					b.WriteString(describe(t, a))
				}
				got[name] = b.String()
			}
			same := got["tokenagent"] == got["grpc-go"]
			switch {
			case sc.differs == "" && !same:
				t.Errorf("tokenagent: %s\ngRPC-Go:    %s", got["tokenagent"], got["grpc-go"])
			case sc.differs != "" && same:
				t.Errorf("gRPC-Go now answers as the transport (%s): drop the known difference", got["grpc-go"])
			case sc.differs != "" && strings.HasPrefix(got["tokenagent"], "connection closed"):
				t.Errorf("the transport closed the connection: %s", got["tokenagent"])
			}
		})
	}
}

// describe is what must match between the servers: the HTTP status, the gRPC code, and the
// CheckResponse (without its decision id); the grpc-message texts may differ in wording.
func describe(t *testing.T, a *h2test.Answer) string {
	t.Helper()
	if a.WasReset {
		return fmt.Sprintf("reset %v; ", a.Reset)
	}
	out := fmt.Sprintf(":status %s grpc-status %s", a.Headers[":status"], a.GRPCStatus())
	if m := a.Message(); m != nil {
		if a.Data[0] == 1 { // compressed (gRPC-Go answers a gzip request in gzip; the transport in identity)
			zr, err := gzip.NewReader(bytes.NewReader(m))
			if err != nil {
				t.Fatal(err)
			}
			if m, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		}
		var r authv3.CheckResponse
		if err := proto.Unmarshal(m, &r); err != nil {
			t.Fatalf("the answer is not a CheckResponse: %v", err)
		}
		out += " " + protocmpFormat(withoutDecisionID(&r))
	}
	return out + "; "
}

// Health and reflection are served on the transport's connections too: health Check by the
// transport itself, Watch and reflection by gRPC-Go through the bridge. A call to a service
// that is not registered is UNIMPLEMENTED (it used to hang: the bridge's body Close did not
// wake gRPC-Go's body reader).
func TestTransportHealthAndReflection(t *testing.T) {
	s := NewServer(fuzzAgent(t))
	gs := grpc.NewServer(ServerOptions()...)
	s.Register(gs)
	tr := s.NewTransport(TransportOptions{Fallback: gs})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = tr.Serve(lis) }()
	defer tr.Close()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := healthpb.NewHealthClient(conn)
	if r, err := h.Check(ctx, &healthpb.HealthCheckRequest{Service: authv3.Authorization_ServiceDesc.ServiceName}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Check: %v %v", r, err)
	}
	if _, err := h.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("health Check of an unknown service: %v, want NotFound", err)
	}
	w, err := h.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := w.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Watch: %v %v", r, err)
	}
	s.Shutdown() // NOT_SERVING, for both servers
	if r, err := h.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health Check after Shutdown: %v %v", r, err)
	}
	for i := range 200 {
		st, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err == nil {
			err = st.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}})
		}
		if err == nil || err == io.EOF { // EOF: the server has ended the stream; Recv has its status
			_, err = st.Recv()
		}
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("call %d to an unregistered service: %v, want Unimplemented", i, err)
		}
	}
}

// checkRequest is the CheckRequest Envoy sends for a request to host.
func checkRequest(method, host, path string, headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{":authority": host, ":method": method, ":path": path, "user-agent": "test"}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: method, Host: host, Path: path, Scheme: "https", Headers: h}}}}
}

// fuzzServerToken is a valid Server API Token of the fuzz agent's key k1 for user.
func fuzzServerToken(user string) string {
	return token.MintServerToken("k1", vault.NewSecret([]byte(fuzzSecret)), user, fuzzNow)
}

package extauthz

import (
	"context"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/agent/reason"
)

func TestGRPCCode(t *testing.T) {
	tests := []struct {
		status   int
		answered bool
		want     codes.Code
	}{
		{400, false, codes.InvalidArgument},
		{413, false, codes.InvalidArgument},
		{401, false, codes.Unauthenticated},
		{403, false, codes.PermissionDenied},
		{404, false, codes.NotFound},
		{503, false, codes.Unavailable},
		{200, true, codes.PermissionDenied},
		{204, true, codes.PermissionDenied},
	}
	for _, tc := range tests {
		if got := GRPCCode(tc.status, tc.answered); got != tc.want {
			t.Errorf("GRPCCode(%d, %v) = %v, want %v", tc.status, tc.answered, got, tc.want)
		}
	}
	// Every reason's own status maps to a code of SPEC §4.
	for _, r := range reason.All() {
		if c := GRPCCode(r.Status(), false); c == codes.OK || c == codes.Unknown {
			t.Errorf("reason %s maps to %v", r, c)
		}
	}
}

func TestToRequestEnvoyForms(t *testing.T) {
	in := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{
			HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: ":authority", Value: "docs.example.com"}, {Key: ":path", Value: "/a?b=1"},
				{Key: ":method", Value: "POST"}, {Key: "Cookie", Value: "a=1"}, {Key: "cookie", RawValue: []byte("authtoken=x")},
				{Key: "X-Multi", Value: "1"}, {Key: "x-multi", Value: "2"},
			}},
			RawBody: []byte("id_token_here"),
		}}}}
	r, err := ToRequest(in)
	if err != nil {
		t.Fatal(err)
	}
	if r.Host != "docs.example.com" || r.Path != "/a?b=1" || r.Method != "POST" {
		t.Errorf("request = %+v", r)
	}
	if r.Headers["cookie"] != "a=1; authtoken=x" || r.Headers["x-multi"] != "1,2" {
		t.Errorf("headers = %v", r.Headers)
	}
	if string(r.Body) != "id_token_here" {
		t.Errorf("body = %q", r.Body)
	}
	in.Attributes.Request.Http.RawBody = nil
	in.Attributes.Request.Http.Body = "as string"
	if r, _ := ToRequest(in); string(r.Body) != "as string" {
		t.Errorf("string body = %q", r.Body)
	}
}

type panickingChecker struct{}

func (panickingChecker) Check(context.Context, *agent.Request) *agent.Decision { panic("bug") }

// TestPanicFailsClosed: a check that panics is answered with gRPC Internal, in process (the
// generated messages) and over gRPC (the wire codec), and the server keeps serving.
func TestPanicFailsClosed(t *testing.T) {
	s := NewServer(panickingChecker{})
	in := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Host: "a"}}}}
	gs := grpc.NewServer(ServerOptions()...)
	s.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	tests := []struct {
		name  string
		check func() (*authv3.CheckResponse, error)
	}{
		{"in process", func() (*authv3.CheckResponse, error) { return s.Check(context.Background(), in) }},
		{"over gRPC", func() (*authv3.CheckResponse, error) { return client.Check(context.Background(), in) }},
		{"over gRPC, again", func() (*authv3.CheckResponse, error) { return client.Check(context.Background(), in) }},
	}
	for _, tc := range tests {
		if resp, err := tc.check(); resp != nil || status.Code(err) != codes.Internal {
			t.Errorf("%s: resp %v err %v, want no response and Internal", tc.name, resp, err)
		}
	}
}

// gatedChecker holds each check until released, to observe a check in flight.
type gatedChecker struct {
	entered chan struct{}
	release chan struct{}
}

func (g *gatedChecker) Check(context.Context, *agent.Request) *agent.Decision {
	g.entered <- struct{}{}
	<-g.release
	return &agent.Decision{Allowed: true, Site: "docs", Status: 200}
}

func TestGracefulStopFinishesInFlightChecks(t *testing.T) {
	g := &gatedChecker{entered: make(chan struct{}), release: make(chan struct{})}
	srv := NewServer(g)
	gs := grpc.NewServer(ServerOptions()...)
	srv.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	result := make(chan error, 1)
	go func() {
		resp, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), &authv3.CheckRequest{
			Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
				Http: &authv3.AttributeContext_HttpRequest{Host: "docs.example.com", Path: "/", Method: "GET"}}}})
		if err == nil && resp.GetOkResponse() == nil {
			err = context.Canceled
		}
		result <- err
	}()
	<-g.entered
	stopped := make(chan struct{})
	go func() { srv.Shutdown(); gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("the server stopped with a check in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(g.release)
	if err := <-result; err != nil {
		t.Fatalf("in-flight check: %v", err)
	}
	<-stopped
}

func TestToRequestPartialBody(t *testing.T) {
	mk := func(size int64, headers map[string]string) *authv3.CheckRequest {
		return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Host: "a", RawBody: []byte("0123456789"), Size: size, Headers: headers}}}}
	}
	tests := []struct {
		name string
		in   *authv3.CheckRequest
		want bool
	}{
		{"whole body", mk(10, nil), false},
		{"size larger than the body", mk(20000, nil), true},
		{"Envoy's partial-body header", mk(0, map[string]string{"x-envoy-auth-partial-body": "true"}), true},
		{"partial-body header false", mk(10, map[string]string{"x-envoy-auth-partial-body": "false"}), false},
	}
	for _, tc := range tests {
		r, err := ToRequest(tc.in)
		if err != nil || r.BodyTruncated != tc.want {
			t.Errorf("%s: truncated = %v (%v), want %v", tc.name, r.BodyTruncated, err, tc.want)
		}
	}
}

// Package extauthz is tokenagent's Envoy transport: an ext_authz v3 gRPC server
// (`envoy.service.auth.v3.Authorization/Check`) that turns each CheckRequest into an
// agent.Request and the agent's Decision into a CheckResponse, exactly as SPEC §4 says.
//
//	srv := extauthz.NewServer(checker)
//	gs := grpc.NewServer(extauthz.ServerOptions()...)
//	srv.Register(gs)
//
// # Notes
//
//   - A decision is always a CheckResponse; a gRPC error is returned only when the request
//     cannot be read at all (no HTTP attributes).
//   - Safe for concurrent use. The checker can be swapped at run time (config reload) with
//     SetChecker; in-flight checks finish on the one they started with.
package extauthz

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/extauthz/internal/wire"
)

// Checker decides requests; *agent.Agent is one.
type Checker interface {
	Check(ctx context.Context, req *agent.Request) *agent.Decision
}

// Server is the ext_authz v3 Authorization service.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	checker   atomic.Pointer[checkerBox]
	health    *health.Server
	responses bytesPool // the wire answers' buffers
	calls     sync.Pool // *unaryCall: the transport's per-check values, reused
	log       *slog.Logger
}

type checkerBox struct{ Checker }

// Option tunes a Server.
type Option func(*Server)

// WithLogger sets the logger of the server's own problems (a recovered panic, an answer that
// cannot be encoded); the default discards them.
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// NewServer returns a Server deciding with c.
func NewServer(c Checker, opts ...Option) *Server {
	s := &Server{health: health.NewServer()}
	for _, o := range opts {
		o(s)
	}
	s.SetChecker(c)
	return s
}

func (s *Server) logger() *slog.Logger {
	if s.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.log
}

// SetChecker swaps the checker (for example after a config reload).
func (s *Server) SetChecker(c Checker) { s.checker.Store(&checkerBox{c}) }

// Register registers the Authorization service and the standard gRPC health service on gs,
// which must have been made with ServerOptions (the service reads and writes its messages with
// the wire codec they set).
func (s *Server) Register(gs *grpc.Server) {
	gs.RegisterService(&serviceDesc, s)
	healthpb.RegisterHealthServer(gs, s.health)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
}

// Shutdown marks the health service NOT_SERVING, so clients drain before the server stops.
func (s *Server) Shutdown() { s.health.Shutdown() }

// Check implements authv3.AuthorizationServer with the generated messages, for callers in
// process; over gRPC the server reads and writes the wire directly (checkWire), with the same
// result. A panic while deciding is recovered, logged and answered with a gRPC Internal error:
// Envoy (failure_mode_allow: false) then denies the request, so a bug fails closed without
// taking the agent down.
func (s *Server) Check(ctx context.Context, in *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	req, err := ToRequest(in)
	if err != nil {
		return nil, err
	}
	d, err := s.decide(ctx, req)
	if err != nil {
		return nil, err
	}
	return ToCheckResponse(d), nil
}

// decide runs the current agent's Check. A panic is recovered, logged and returned as a gRPC
// Internal error (the caller answers with it).
func (s *Server) decide(ctx context.Context, req *agent.Request) (d *agent.Decision, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.logger().Error("check panicked; failing closed", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			d, err = nil, status.Error(codes.Internal, "internal error")
		}
	}()
	return s.checker.Load().Check(ctx, req), nil
}

// ToRequest turns a CheckRequest into an agent.Request. It fails only when the request has no
// HTTP attributes.
func ToRequest(in *authv3.CheckRequest) (*agent.Request, error) {
	h := in.GetAttributes().GetRequest().GetHttp()
	if h == nil {
		return requestFrom(&wire.HTTP{})
	}
	w := wire.HTTP{Present: true, Method: h.GetMethod(), Path: h.GetPath(), Host: h.GetHost(), Scheme: h.GetScheme(),
		Headers: h.GetHeaders(), Size: h.GetSize(), Body: h.GetBody(), RawBody: string(h.GetRawBody())}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		v := hv.GetValue()
		if v == "" {
			v = string(hv.GetRawValue())
		}
		w.HeaderMap = append(w.HeaderMap, [2]string{hv.GetKey(), v})
	}
	return requestFrom(&w)
}

// requestFrom builds the agent.Request of a CheckRequest's HTTP attributes, however they were
// decoded (ToRequest from the generated message, the server from the wire): the method, host
// and path from the pseudo-headers when the fields are empty, the body cut by Envoy marked.
func requestFrom(h *wire.HTTP) (*agent.Request, error) {
	r := &agent.Request{}
	if err := fillRequest(h, r); err != nil {
		return nil, err
	}
	return r, nil
}

// fillRequest is requestFrom into r (a pooled request of the transport).
func fillRequest(h *wire.HTTP, r *agent.Request) error {
	if !h.Present {
		return status.Error(codes.InvalidArgument, "check request has no attributes.request.http")
	}
	headers := h.Headers
	if len(headers) == 0 && len(h.HeaderMap) > 0 {
		headers = flattenHeaderMap(h.HeaderMap)
	}
	if headers == nil {
		headers = map[string]string{}
	}
	host := h.Host
	if host == "" {
		host = headers[":authority"]
	}
	if host == "" {
		host = headers["host"]
	}
	path := h.Path
	if path == "" {
		path = headers[":path"]
	}
	method := h.Method
	if method == "" {
		method = headers[":method"]
	}
	var body []byte
	switch {
	case h.RawBody != "":
		body = []byte(h.RawBody)
	case h.Body != "":
		body = []byte(h.Body)
	}
	// Envoy cut the body at max_request_bytes (allow_partial_message): it says so in the
	// size it reports and in x-envoy-auth-partial-body, which it sets itself (a client-sent
	// copy is replaced).
	truncated := (h.Size > 0 && int64(len(body)) < h.Size && len(body) > 0) ||
		headers["x-envoy-auth-partial-body"] == "true"
	*r = agent.Request{
		Method: method, Scheme: h.Scheme, Host: host, Path: path,
		Headers: headers, Body: body, BodyTruncated: truncated,
	}
	return nil
}

// flattenHeaderMap turns Envoy's header_map (sent instead of headers when the filter encodes
// raw headers) into lower-case names, joining repeated headers with "," (cookies with "; ").
func flattenHeaderMap(m [][2]string) map[string]string {
	out := make(map[string]string, len(m))
	for _, hv := range m {
		k, v := strings.ToLower(hv[0]), hv[1]
		if prev, ok := out[k]; ok {
			sep := ","
			if k == "cookie" {
				sep = "; "
			}
			v = prev + sep + v
		}
		out[k] = v
	}
	return out
}

// ToCheckResponse turns a Decision into the CheckResponse of SPEC §4 (the generated message;
// the server writes the same response with toWire).
func ToCheckResponse(d *agent.Decision) *authv3.CheckResponse {
	if d.Allowed {
		md := metadata(d)
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers:                 headerOptions(d.UpstreamHeaders),
				HeadersToRemove:         d.RemoveHeaders,
				QueryParametersToRemove: d.RemoveQuery,
				ResponseHeadersToAdd:    headerOptions(d.ResponseHeaders),
				// Deprecated in Envoy in favour of CheckResponse.dynamic_metadata, which wins
				// when both are set; filled too for older Envoys and readers of SPEC §4.
				//lint:ignore SA1019 SPEC §4 puts dynamic_metadata in the OkHttpResponse too
				DynamicMetadata: md,
			}},
			DynamicMetadata: md,
		}
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(GRPCCode(d.Status, d.Answered))},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)},
			Headers: headerOptions(d.Headers),
			Body:    string(d.Body),
		}},
		DynamicMetadata: metadata(d),
	}
}

// toWire is ToCheckResponse for the wire writer.
func toWire(d *agent.Decision, r *wire.Response) {
	*r = wire.Response{OK: d.Allowed, Metadata: metadataFields(d, r.Metadata[:0])}
	if d.Allowed {
		r.Upstream, r.ResponseHeaders = d.UpstreamHeaders, d.ResponseHeaders
		r.RemoveHeaders, r.RemoveQuery = d.RemoveHeaders, d.RemoveQuery
		return
	}
	r.Code = int32(GRPCCode(d.Status, d.Answered))
	r.HTTPStatus, r.Headers, r.Body = int32(d.Status), d.Headers, d.Body
}

// GRPCCode is the CheckResponse status code for an answer with HTTP status httpStatus (SPEC
// §4); the agent's own answers (answered) are PERMISSION_DENIED, so Envoy sends them as they
// are.
func GRPCCode(httpStatus int, answered bool) codes.Code {
	if answered {
		return codes.PermissionDenied
	}
	switch httpStatus {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return codes.InvalidArgument
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusNotFound:
		return codes.NotFound
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	}
	return codes.PermissionDenied
}

// headerOptions sets each header, overwriting anything the client sent, and says so both ways
// Envoy understands (the deprecated append: false and append_action).
func headerOptions(hs []token.Header) []*corev3.HeaderValueOption {
	if len(hs) == 0 {
		return nil
	}
	out := make([]*corev3.HeaderValueOption, len(hs))
	for i, h := range hs {
		out[i] = &corev3.HeaderValueOption{
			Header: &corev3.HeaderValue{Key: h.Name, Value: h.Value},
			//lint:ignore SA1019 SPEC §4 asks for append: false beside append_action
			Append:       wrapperspb.Bool(false),
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}
	}
	return out
}

// metadataFields lists the dynamic metadata of SPEC §4, appended to dst: site, kind, user,
// client_id and scopes as strings, each only where it has a value, plus decision_id (the
// decision log's id) on every answer, reason on denials, and shadow_reason on the would-be
// denials a site in shadow mode lets through (SPEC §8).
func metadataFields(d *agent.Decision, dst []wire.Header) []wire.Header {
	put := func(k, v string) {
		if v != "" {
			dst = append(dst, wire.Header{Name: k, Value: v})
		}
	}
	put("site", d.Site)
	put("decision_id", d.ID.String())
	if d.Allowed {
		put("kind", string(d.Identity.Kind))
		put("user", d.Identity.User)
		put("client_id", d.Identity.ClientID)
		if len(d.Identity.Scopes) > 0 {
			put("scopes", strings.Join(d.Identity.Scopes, " "))
		}
		put("shadow_reason", string(d.Shadow)) // a shadow-mode site's would-be denial (SPEC §8)
	} else if d.Reason != "" {
		put("reason", string(d.Reason))
	}
	return dst
}

// metadata is metadataFields as a Struct (nil when empty).
func metadata(d *agent.Decision) *structpb.Struct {
	fs := metadataFields(d, make([]wire.Header, 0, 8))
	if len(fs) == 0 {
		return nil
	}
	f := make(map[string]*structpb.Value, len(fs))
	for _, kv := range fs {
		f[kv.Name] = structpb.NewStringValue(kv.Value)
	}
	return &structpb.Struct{Fields: f}
}

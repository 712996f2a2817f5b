package extauthz

import (
	"reflect"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/extauthz/internal/wire"
)

// checkRequests are CheckRequests as Envoy sends them, and the odd ones it may: the seeds of
// the differential tests.
func checkRequests() []*authv3.CheckRequest {
	httpReq := func(h *authv3.AttributeContext_HttpRequest) *authv3.CheckRequest {
		return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Source:            &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "10.0.0.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51234}}}}},
			ContextExtensions: map[string]string{"route": "app"},
			MetadataContext:   &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"x": {Fields: map[string]*structpb.Value{"a": structpb.NewStringValue("b")}}}},
			Request:           &authv3.AttributeContext_Request{Time: timestamppb.Now(), Http: h},
		}}
	}
	return []*authv3.CheckRequest{
		httpReq(&authv3.AttributeContext_HttpRequest{Id: "1", Method: "GET", Path: "/pages?x=1", Host: "docs.example.com", Scheme: "https",
			Protocol: "HTTP/2", Headers: map[string]string{":authority": "docs.example.com", ":method": "GET", ":path": "/pages?x=1",
				"cookie": "a=b; authtoken=xyz", "x-deki-token": "tkn_k1_1_2_ab", "user-agent": "Mozilla/5.0 ü"}}),
		httpReq(&authv3.AttributeContext_HttpRequest{Method: "POST", Path: "/@app/auth/token/exchange", Host: "docs.example.com",
			RawBody: []byte("id_token=eyJ\x00\xff"), Size: 40, Headers: map[string]string{"content-type": "application/x-www-form-urlencoded", "": ""}}),
		httpReq(&authv3.AttributeContext_HttpRequest{Body: "plain body", Size: 10, Headers: map[string]string{":method": "PUT", ":path": "/x", ":authority": "a.example.com"}}),
		httpReq(&authv3.AttributeContext_HttpRequest{HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: ":authority", Value: "docs.example.com"}, {Key: ":method", Value: "GET"}, {Key: ":path", Value: "/"},
			{Key: "Cookie", RawValue: []byte("a=1")}, {Key: "cookie", Value: "authtoken=t"}, {Key: "X-A", Value: "1"}, {Key: "x-a", Value: "2"}}}}),
		httpReq(nil),
		{},
	}
}

// The wire reader reads every request as proto.Unmarshal and ToRequest do.
func TestDecodeCheckRequestMatchesProto(t *testing.T) {
	for i, m := range checkRequests() {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		sameAsProto(t, b, i)
	}
}

// sameAsProto fails when b, which proto.Unmarshal accepts, is read differently by the wire
// reader.
func sameAsProto(t *testing.T, b []byte, i int) {
	t.Helper()
	var m authv3.CheckRequest
	if perr := proto.Unmarshal(b, &m); perr != nil {
		return // the wire reader may refuse it too, or read what it uses of it
	}
	var h wire.HTTP
	if err := wire.DecodeCheckRequest(b, &h); err != nil {
		t.Fatalf("request %d: proto.Unmarshal reads it, the wire reader refuses it: %v", i, err)
	}
	want, werr := ToRequest(&m)
	got, gerr := requestFrom(&h)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("request %d: proto %v, wire %v", i, werr, gerr)
	}
	if werr == nil && !reflect.DeepEqual(normal(want), normal(got)) {
		t.Fatalf("request %d:\n proto %+v\n wire  %+v", i, want, got)
	}
}

// normal makes an empty body and a nil one equal.
func normal(r *agent.Request) *agent.Request {
	c := *r
	if len(c.Body) == 0 {
		c.Body = nil
	}
	return &c
}

// FuzzDecodeCheckRequest: for any bytes proto.Unmarshal accepts, the wire reader gives the same
// agent.Request; for any bytes at all, it does not panic.
func FuzzDecodeCheckRequest(f *testing.F) {
	for _, m := range checkRequests() {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sameAsProto(t, b, 0)
	})
}

// decisions are answers of every shape: the seeds of the writer's differential tests.
func decisions() []*agent.Decision {
	return []*agent.Decision{
		{Allowed: true, ID: 0x3f9c2a7be01d4c55, Site: "docs", Identity: token.Identity{Kind: token.KindOAuth, User: "sub-1", ClientID: "app", Scopes: []string{"read", "write"}},
			UpstreamHeaders: []token.Header{{Name: "x-auth-site", Value: "docs"}, {Name: "x-auth-user", Value: "=J%C3%BCrgen"}, {Name: "x-auth-kind", Value: "oauth"}},
			RemoveHeaders:   []string{"x-auth-admin", "x_auth_user"}, RemoveQuery: []string{"authtoken"},
			ResponseHeaders: []token.Header{{Name: "access-control-allow-origin", Value: "https://a.example.com"}, {Name: "vary", Value: "Origin"}}},
		{Allowed: true, ID: 1, Site: "trial", Identity: token.Identity{Kind: token.KindAnonymous}, Shadow: reason.BadSignature,
			UpstreamHeaders: []token.Header{{Name: "x-auth-site", Value: "trial"}, {Name: "x-auth-kind", Value: "anonymous"}}},
		{Allowed: true},
		{ID: 7, Site: "docs", Status: 401, Reason: reason.BadSignature, Body: []byte(`{"error":"bad_signature","error_description":"ü"}`),
			Headers: []token.Header{{Name: "content-type", Value: "application/json"}, {Name: "www-authenticate", Value: `Bearer error="invalid_token"`}, {Name: "x-auth-reason", Value: "bad_signature"}}},
		{ID: 8, Status: 404, Reason: reason.UnknownSite},
		{ID: 9, Site: "docs", Status: 204, Answered: true, Headers: []token.Header{{Name: "access-control-allow-methods", Value: "GET, POST"}}},
		{ID: 10, Site: "docs", Status: 503, Reason: reason.KeysUnavailable, Headers: []token.Header{{Name: "retry-after", Value: "5"}, {Name: "x-empty", Value: ""}}},
		{ID: 11, Site: "docs", Status: 200, Answered: true, Body: []byte(`{"ok":true}`), Headers: []token.Header{{Name: "set-cookie", Value: "authtoken=abc; Path=/; HttpOnly"}}},
	}
}

// The wire writer writes every answer as ToCheckResponse and proto.Marshal do.
func TestAppendCheckResponseMatchesProto(t *testing.T) {
	for i, d := range decisions() {
		sameAnswer(t, d, i)
	}
}

func sameAnswer(t *testing.T, d *agent.Decision, i int) {
	t.Helper()
	var r wire.Response
	toWire(d, &r)
	if err := r.Valid(); err != nil {
		if _, perr := proto.Marshal(ToCheckResponse(d)); perr == nil {
			t.Fatalf("answer %d: the writer refuses what proto writes: %v", i, err)
		}
		return
	}
	var got authv3.CheckResponse
	if err := proto.Unmarshal(wire.AppendCheckResponse(nil, &r), &got); err != nil {
		t.Fatalf("answer %d: not a CheckResponse: %v", i, err)
	}
	if want := ToCheckResponse(d); !proto.Equal(want, &got) {
		t.Fatalf("answer %d:\n proto %v\n wire  %v", i, want, &got)
	}
}

// FuzzAppendCheckResponse: answers with any names, values and bodies are written as proto
// writes them (or refused where proto refuses).
func FuzzAppendCheckResponse(f *testing.F) {
	f.Add(true, 200, "x-auth-user", "42", "docs", "body", "read write")
	f.Add(false, 401, "www-authenticate", "Bearer", "", `{"error":"x"}`, "")
	f.Fuzz(func(t *testing.T, allowed bool, status int, name, value, site, body, scopes string) {
		d := &agent.Decision{Allowed: allowed, Site: site, Status: status % 600, Body: []byte(body), ID: 42,
			Identity: token.Identity{Kind: token.KindServer, User: value, Scopes: strings.Fields(scopes)},
			Headers:  []token.Header{{Name: name, Value: value}}, UpstreamHeaders: []token.Header{{Name: name, Value: value}},
			RemoveHeaders: []string{name}, RemoveQuery: []string{value}, ResponseHeaders: []token.Header{{Name: value, Value: name}}}
		if !allowed {
			d.Reason = reason.Reason(name)
		}
		sameAnswer(t, d, 0)
	})
}

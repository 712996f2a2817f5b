package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/tokenagent/tokenagent/agent/reason"
)

// checkMethod is the ext_authz v3 Check method, as Envoy calls it.
const checkMethod = "/envoy.service.auth.v3.Authorization/Check"

// The client is kept cheap, since it shares the machine with the agent: requests are written
// in the protobuf wire format directly (builder), a pass-through codec hands the bytes to
// gRPC, and answers are not decoded into messages: a small wire scanner reads just the fields
// the report needs (status code, HTTP status, x-auth-kind, x-auth-reason).

// rawCodec passes encoded requests through and scans answers. It is named "proto" so the
// content-type stays application/grpc+proto: any ext_authz server accepts it.
type rawCodec struct{}

type rawRequest struct{ data []byte }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	r, ok := v.(*rawRequest)
	if !ok {
		return nil, fmt.Errorf("load: cannot send %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(r.data)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*Response)
	if !ok {
		return fmt.Errorf("load: cannot decode into %T", v)
	}
	if len(data) == 1 {
		return r.Parse(data[0].ReadOnlyData())
	}
	return r.Parse(data.Materialize())
}

func (rawCodec) Name() string { return "proto" }

var rawCall = grpc.ForceCodecV2(rawCodec{})

// Response is what the load generator reads of a CheckResponse.
type Response struct {
	// Code is CheckResponse.status.code: 0 (OK) allows the request.
	Code int32
	// HTTPStatus is the denied_response's status (0 when allowed).
	HTTPStatus int32
	// Kind is the x-auth-kind header set upstream on an allowed request.
	Kind string
	// Reason is the x-auth-reason header of a denial.
	Reason string
}

// Allowed reports whether Envoy would let the request through.
func (r *Response) Allowed() bool { return r.Code == 0 }

var errWire = errors.New("load: malformed CheckResponse")

// Parse reads a serialized envoy.service.auth.v3.CheckResponse.
func (r *Response) Parse(b []byte) error {
	*r = Response{}
	return eachField(b, func(num protowire.Number, v []byte, x uint64) error {
		switch num {
		case 1: // status: google.rpc.Status
			return eachField(v, func(n protowire.Number, _ []byte, x uint64) error {
				if n == 1 {
					r.Code = int32(x)
				}
				return nil
			})
		case 2, 5: // denied_response, error_response: DeniedHttpResponse
			return eachField(v, func(n protowire.Number, v []byte, _ uint64) error {
				switch n {
				case 1: // status: HttpStatus{code}
					return eachField(v, func(n protowire.Number, _ []byte, x uint64) error {
						if n == 1 {
							r.HTTPStatus = int32(x)
						}
						return nil
					})
				case 2:
					return headerOption(v, "x-auth-reason", &r.Reason)
				}
				return nil
			})
		case 3: // ok_response: OkHttpResponse
			return eachField(v, func(n protowire.Number, v []byte, _ uint64) error {
				if n == 2 {
					return headerOption(v, "x-auth-kind", &r.Kind)
				}
				return nil
			})
		}
		return nil
	})
}

// headerOption reads a HeaderValueOption and stores its value in dst when its key is name.
func headerOption(b []byte, name string, dst *string) error {
	return eachField(b, func(n protowire.Number, v []byte, _ uint64) error {
		if n != 1 { // header: HeaderValue{key 1, value 2, raw_value 3}
			return nil
		}
		var key, val []byte
		err := eachField(v, func(n protowire.Number, v []byte, _ uint64) error {
			switch n {
			case 1:
				key = v
			case 2:
				val = v
			case 3:
				if len(val) == 0 {
					val = v
				}
			}
			return nil
		})
		if err == nil && bytes.EqualFold(key, []byte(name)) {
			*dst = intern(val)
		}
		return err
	})
}

// eachField calls f with each field of a message: v for length-delimited fields, x for
// varints; other wire types are skipped.
func eachField(b []byte, f func(num protowire.Number, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errWire
		}
		b = b[n:]
		switch typ {
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errWire
			}
			if err := f(num, v, 0); err != nil {
				return err
			}
			b = b[n:]
		case protowire.VarintType:
			x, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return errWire
			}
			if err := f(num, nil, x); err != nil {
				return err
			}
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return errWire
			}
			b = b[n:]
		}
	}
	return nil
}

// interned are the values the report counts, kept as shared strings so counting a decision
// does not allocate.
var interned = func() map[string]string {
	m := map[string]string{}
	for _, k := range append(ValidKinds, "impersonation", "apikey") {
		m[k] = k
	}
	for _, v := range invalidVariants {
		m[v.reason] = v.reason
	}
	for _, r := range reason.All() {
		m[string(r)] = string(r)
	}
	return m
}()

func intern(b []byte) string {
	if s, ok := interned[string(b)]; ok {
		return s
	}
	return string(b)
}

// builder encodes the CheckRequests of one worker, the way Envoy's ext_authz filter fills
// them: the peers, the HTTP attributes, and lower-case headers with the pseudo-headers. It
// writes the protobuf wire format directly (the peers are encoded once), several times cheaper
// than proto.Marshal of a message with a header map.
type builder struct {
	host  string
	base  []Header // Envoy-like headers, the same on every request of the worker
	peers []byte   // AttributeContext fields 1 (source) and 2 (destination), encoded
	seq   uint64
	id    []byte // scratch: the request id
	http  []byte // scratch: the encoded HttpRequest
}

func newBuilder(host string, worker int) *builder {
	ip := "203.0.113." + strconv.Itoa(worker%250+1)
	base := []Header{
		{":method", "GET"}, {":scheme", "https"},
		{"user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"},
		{"accept", "application/json, text/plain, */*"},
		{"accept-encoding", "gzip, deflate, br"},
		{"accept-language", "en-US,en;q=0.9"},
		{"x-forwarded-for", ip},
		{"x-forwarded-proto", "https"},
	}
	peer := func(ip string, port uint32) *authv3.AttributeContext_Peer {
		return &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}}
	}
	peers, err := proto.MarshalOptions{Deterministic: true}.Marshal(&authv3.AttributeContext{
		Source: peer(ip, uint32(40000+worker%20000)), Destination: peer("10.0.0.2", 443)})
	if err != nil {
		panic(err) // a fixed, valid message
	}
	return &builder{host: host, base: base, peers: peers,
		id: fmt.Appendf(nil, "%08x-4b1e-4c7a-9d2f-000000000000", worker)}
}

// Field numbers of the messages the builder writes (envoy/service/auth/v3).
const (
	fCheckRequestAttributes = 1 // CheckRequest.attributes
	fAttributesRequest      = 4 // AttributeContext.request
	fRequestHTTP            = 2 // AttributeContext.Request.http
	fHTTPID                 = 1 // AttributeContext.HttpRequest.id …
	fHTTPMethod             = 2
	fHTTPHeaders            = 3
	fHTTPPath               = 4
	fHTTPHost               = 5
	fHTTPScheme             = 6
	fHTTPProtocol           = 10
)

// encode returns the serialized CheckRequest for it (a new slice, which gRPC then owns).
func (b *builder) encode(it *Item) []byte {
	host := it.Host
	if host == "" {
		host = b.host
	}
	b.seq++
	n := b.seq
	for i := len(b.id) - 1; i >= len(b.id)-12; i-- { // the id's last 12 hex digits count requests
		b.id[i] = "0123456789abcdef"[n&15]
		n >>= 4
	}
	h := b.http[:0]
	h = protowire.AppendTag(h, fHTTPID, protowire.BytesType)
	h = protowire.AppendBytes(h, b.id)
	h = appendString(h, fHTTPMethod, "GET")
	for _, hv := range b.base {
		h = appendHeader(h, hv.Name, hv.Value)
	}
	h = appendHeader(h, ":authority", host)
	h = appendHeader(h, ":path", it.Path)
	h = protowire.AppendTag(h, fHTTPHeaders, protowire.BytesType)
	h = protowire.AppendVarint(h, uint64(2+protowire.SizeBytes(len("x-request-id"))+protowire.SizeBytes(len(b.id))))
	h = appendString(h, 1, "x-request-id")
	h = protowire.AppendTag(h, 2, protowire.BytesType)
	h = protowire.AppendBytes(h, b.id)
	for _, hv := range it.Headers {
		h = appendHeader(h, hv.Name, hv.Value)
	}
	h = appendString(h, fHTTPPath, it.Path)
	h = appendString(h, fHTTPHost, host)
	h = appendString(h, fHTTPScheme, "https")
	h = appendString(h, fHTTPProtocol, "HTTP/2")
	b.http = h

	reqLen := 1 + protowire.SizeBytes(len(h))                 // Request{http}
	attrLen := len(b.peers) + 1 + protowire.SizeBytes(reqLen) // AttributeContext{source, destination, request}
	out := make([]byte, 0, 1+protowire.SizeBytes(attrLen))
	out = protowire.AppendTag(out, fCheckRequestAttributes, protowire.BytesType)
	out = protowire.AppendVarint(out, uint64(attrLen))
	out = append(out, b.peers...)
	out = protowire.AppendTag(out, fAttributesRequest, protowire.BytesType)
	out = protowire.AppendVarint(out, uint64(reqLen))
	out = protowire.AppendTag(out, fRequestHTTP, protowire.BytesType)
	out = protowire.AppendVarint(out, uint64(len(h)))
	return append(out, h...)
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// appendHeader appends one entry of the headers map (a message {key 1, value 2}).
func appendHeader(b []byte, k, v string) []byte {
	b = protowire.AppendTag(b, fHTTPHeaders, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(2+protowire.SizeBytes(len(k))+protowire.SizeBytes(len(v))))
	b = appendString(b, 1, k)
	return appendString(b, 2, v)
}

// Target is an ext_authz server under load: one or more gRPC connections to it, and
// optionally the PID of its process (for CPU and memory).
type Target struct {
	Name  string
	Addr  string
	PID   int
	conns []*grpc.ClientConn
}

// EnvoyWindow is the flow-control window Envoy's gRPC client keeps for a stream and a
// connection (static: it sends no BDP pings).
const EnvoyWindow = 64 << 20

// Dial opens n connections to addr (plaintext, as a sidecar on the node is reached; unix:///path
// for a Unix socket). Like Envoy's client, each has static 64 MiB windows and sends no BDP
// pings; bdp uses gRPC-Go's default client instead (dynamic windows, a BDP ping with every
// burst of data, which costs the server about a quarter more CPU at 2,000 checks/s).
func Dial(name, addr string, n, pid int, bdp bool) (*Target, error) {
	t := &Target{Name: name, Addr: addr, PID: pid}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultCallOptions(rawCall)}
	if !bdp {
		opts = append(opts, grpc.WithStaticStreamWindowSize(EnvoyWindow), grpc.WithStaticConnWindowSize(EnvoyWindow))
	}
	for range max(n, 1) {
		c, err := grpc.NewClient(addr, opts...)
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("%s: %w", addr, err)
		}
		t.conns = append(t.conns, c)
	}
	return t, nil
}

// Close closes the connections.
func (t *Target) Close() {
	for _, c := range t.conns {
		c.Close()
	}
}

// Check sends one encoded CheckRequest on connection i % conns.
func (t *Target) Check(ctx context.Context, i int, data []byte, resp *Response) error {
	return t.conns[i%len(t.conns)].Invoke(ctx, checkMethod, &rawRequest{data}, resp)
}

// errCode names a gRPC error for the report ("Unavailable", "DeadlineExceeded", …).
func errCode(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Code().String()
	}
	return "Unknown"
}

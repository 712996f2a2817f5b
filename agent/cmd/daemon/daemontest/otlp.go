package daemontest

import (
	"context"
	"encoding/hex"
	"net"
	"sync"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
)

// OTLP is an OpenTelemetry collector's trace receiver: the OTLP/gRPC TraceService on a free
// 127.0.0.1 port, keeping every span it is sent. It stops when the test ends.
type OTLP struct {
	// Addr is host:port, for tracing.otlp_endpoint (with insecure: true).
	Addr string

	srv  *grpc.Server
	mu   sync.Mutex
	got  []Span
	stop sync.Once
}

// Span is one received span, flattened.
type Span struct {
	Name                          string
	TraceID, SpanID, ParentSpanID string // hex
	Kind                          tracepb.Span_SpanKind
	Error                         bool // status code ERROR
	Attributes                    map[string]any
	// Service is the resource's service.name.
	Service string
}

// StartOTLP starts a receiver.
func StartOTLP(t testing.TB) *OTLP {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &OTLP{Addr: lis.Addr().String(), srv: grpc.NewServer()}
	coltracepb.RegisterTraceServiceServer(o.srv, &traceService{o: o})
	go func() { _ = o.srv.Serve(lis) }()
	t.Cleanup(o.Stop)
	return o
}

// Stop stops the receiver (a collector that went down).
func (o *OTLP) Stop() { o.stop.Do(o.srv.Stop) }

// Spans returns the spans received so far.
func (o *OTLP) Spans() []Span {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]Span(nil), o.got...)
}

type traceService struct {
	coltracepb.UnimplementedTraceServiceServer
	o *OTLP
}

func (s *traceService) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	var spans []Span
	for _, rs := range req.GetResourceSpans() {
		service := attrs(rs.GetResource().GetAttributes())["service.name"]
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				name, _ := service.(string)
				spans = append(spans, Span{Name: sp.GetName(), TraceID: hex.EncodeToString(sp.GetTraceId()),
					SpanID: hex.EncodeToString(sp.GetSpanId()), ParentSpanID: hex.EncodeToString(sp.GetParentSpanId()),
					Kind: sp.GetKind(), Error: sp.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR,
					Attributes: attrs(sp.GetAttributes()), Service: name})
			}
		}
	}
	s.o.mu.Lock()
	s.o.got = append(s.o.got, spans...)
	s.o.mu.Unlock()
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// attrs flattens OTLP attributes to Go values (string, bool, int64, float64).
func attrs(kvs []*commonpb.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.GetKey()] = v.StringValue
		case *commonpb.AnyValue_BoolValue:
			m[kv.GetKey()] = v.BoolValue
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = v.IntValue
		case *commonpb.AnyValue_DoubleValue:
			m[kv.GetKey()] = v.DoubleValue
		default:
			m[kv.GetKey()] = kv.GetValue().String()
		}
	}
	return m
}

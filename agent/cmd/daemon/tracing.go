package daemon

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc/credentials"

	"github.com/tokenagent/tokenagent/agent/config"
)

// Tracing's fixed settings: how many finished spans wait for export at most (more are
// dropped and counted: a collector that is down or slow never holds a check back), how often
// a batch is sent, and how long one export may take, retries included.
const (
	traceQueue         = 2048
	traceBatchInterval = time.Second
	traceExportTimeout = 5 * time.Second
)

// tracing is the daemon's OpenTelemetry pipeline (SPEC §8): the spans of the checks the agent
// traces (parent-based, tracing.sample_ratio of the rest), batched and sent over OTLP/gRPC. Built once at start-up (a reload
// keeps it) and shut down by Close, which sends what is queued.
type tracing struct {
	tp    *sdktrace.TracerProvider
	spans *prometheus.CounterVec
}

// newTracing builds the pipeline; it starts the batch processor's goroutine and connects
// lazily (a collector that is down at start-up is not an error).
func newTracing(cfg *config.Tracing, reg prometheus.Registerer, log *slog.Logger, version string) (*tracing, error) {
	t := &tracing{spans: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenagent_trace_spans_total",
		Help: "Finished sampled spans by result: exported; dropped (the export queue was full); failed (the collector refused or was unreachable).",
	}, []string{"result"})}
	if err := reg.Register(t.spans); err != nil {
		return nil, fmt.Errorf("tracing metrics: %w", err)
	}
	opts := []otlptracegrpc.Option{
		otlptracegrpc.WithEndpoint(cfg.OTLPEndpoint),
		otlptracegrpc.WithTimeout(traceExportTimeout),
		otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: true, InitialInterval: 250 * time.Millisecond,
			MaxInterval: time.Second, MaxElapsedTime: traceExportTimeout}),
	}
	if cfg.Insecure {
		opts = append(opts, otlptracegrpc.WithInsecure())
	} else {
		opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})))
	}
	exp := otlptracegrpc.NewUnstarted(opts...)
	if err := exp.Start(context.Background()); err != nil { // makes the client; does not dial
		return nil, fmt.Errorf("tracing.otlp_endpoint %s: %w", cfg.OTLPEndpoint, err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		attribute.String("service.name", "tokenagent"), attribute.String("service.version", version)))
	if err != nil {
		return nil, fmt.Errorf("tracing resource: %w", err)
	}
	pending := &atomic.Int64{}
	counted := &countingExporter{SpanExporter: exp, pending: pending, log: log,
		exported: t.spans.WithLabelValues("exported"), failed: t.spans.WithLabelValues("failed")}
	bsp := sdktrace.NewBatchSpanProcessor(counted, sdktrace.WithMaxQueueSize(traceQueue),
		sdktrace.WithBatchTimeout(traceBatchInterval), sdktrace.WithExportTimeout(traceExportTimeout))
	t.tp = sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		// The agent decides which checks to trace (agent.RuntimeOptions.TraceRatio) before it
		// starts a span; the provider keeps every span it is given.
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithSpanProcessor(&boundedProcessor{SpanProcessor: bsp, pending: pending,
			dropped: t.spans.WithLabelValues("dropped")}),
	)
	return t, nil
}

// shutdown sends the queued spans (for at most the export timeout) and stops the pipeline.
func (t *tracing) shutdown() {
	if t == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), traceExportTimeout)
	defer cancel()
	_ = t.tp.Shutdown(ctx)
}

// boundedProcessor keeps at most traceQueue spans waiting for export, dropping (and counting)
// the rest, so the batch processor's own queue never fills and silently drops.
type boundedProcessor struct {
	sdktrace.SpanProcessor
	pending *atomic.Int64 // spans handed on and not yet exported or failed
	dropped prometheus.Counter
}

func (p *boundedProcessor) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	if p.pending.Add(1) > traceQueue {
		p.pending.Add(-1)
		p.dropped.Inc()
		return
	}
	p.SpanProcessor.OnEnd(s)
}

// countingExporter counts each batch as exported or failed, and reports a failure in the
// daemon's log at most once a minute (instead of OpenTelemetry's global error handler).
type countingExporter struct {
	sdktrace.SpanExporter
	pending          *atomic.Int64
	exported, failed prometheus.Counter
	log              *slog.Logger
	lastLog          atomic.Int64
}

func (e *countingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	defer e.pending.Add(-int64(len(spans)))
	if err := e.SpanExporter.ExportSpans(ctx, spans); err != nil {
		e.failed.Add(float64(len(spans)))
		now := time.Now().UnixNano()
		if last := e.lastLog.Load(); now-last > int64(time.Minute) && e.lastLog.CompareAndSwap(last, now) {
			e.log.Warn("trace export failed; spans are dropped (tokenagent_trace_spans_total{result=\"failed\"})",
				"spans", len(spans), "error", err.Error())
		}
		return nil
	}
	e.exported.Add(float64(len(spans)))
	return nil
}

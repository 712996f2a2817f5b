package main

import (
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Latency histograms record nanoseconds from 1 µs (the resolution) to 60 s; the overall one
// keeps 3 significant digits (0.1 %), the per-class ones 2 (1 %).
const (
	histLowest  = int64(time.Microsecond)
	histHighest = int64(60 * time.Second)
)

func newHist(digits int) *hdrhistogram.Histogram {
	return hdrhistogram.New(histLowest, histHighest, digits)
}

// Stats are the counts and latencies of some requests: a shard of a run, a whole run, or the
// sum of a comparison's slices. Not safe for concurrent use; a Recorder guards one.
type Stats struct {
	Latency *hdrhistogram.Histogram
	// ByClass are each class's latencies (2 significant digits).
	ByClass map[string]*hdrhistogram.Histogram
	// Allowed counts allowed requests by x-auth-kind; Denied counts denials by x-auth-reason
	// (or "status NNN" when the target sends none); Errors counts gRPC errors by code.
	Allowed map[string]int64
	Denied  map[string]int64
	Errors  map[string]int64
	// Unexpected counts decisions that differ from the request's expected one; Examples
	// keeps the first few.
	Unexpected int64
	Examples   []string
	// Dropped counts open-loop requests still unsent when the drain time ran out.
	Dropped int64
}

// NewStats returns empty Stats.
func NewStats() *Stats {
	return &Stats{Latency: newHist(3), ByClass: map[string]*hdrhistogram.Histogram{},
		Allowed: map[string]int64{}, Denied: map[string]int64{}, Errors: map[string]int64{}}
}

const maxExamples = 8

// Record adds one request of class that took lat and got resp (or err).
func (s *Stats) Record(class string, exp Expect, lat time.Duration, resp *Response, errCode string) {
	if errCode != "" {
		s.Errors[errCode]++
		return
	}
	v := max(int64(lat), histLowest)
	_ = s.Latency.RecordValue(min(v, histHighest))
	h := s.ByClass[class]
	if h == nil {
		h = newHist(2)
		s.ByClass[class] = h
	}
	_ = h.RecordValue(min(v, histHighest))
	got := Expect{Allow: resp.Allowed()}
	if got.Allow {
		got.Kind = resp.Kind
		s.Allowed[resp.Kind]++
	} else {
		got.Reason = resp.Reason
		if got.Reason == "" {
			got.Reason = fmt.Sprintf("status %d", resp.HTTPStatus)
		}
		s.Denied[got.Reason]++
	}
	if got != exp {
		s.Unexpected++
		if len(s.Examples) < maxExamples {
			s.Examples = append(s.Examples, fmt.Sprintf("%s: want %s, got %s", class, exp, got))
		}
	}
}

// Merge adds o into s.
func (s *Stats) Merge(o *Stats) {
	s.Latency.Merge(o.Latency)
	for k, h := range o.ByClass {
		if mine := s.ByClass[k]; mine != nil {
			mine.Merge(h)
		} else {
			s.ByClass[k] = h.Clone()
		}
	}
	for _, p := range []struct{ dst, src map[string]int64 }{{s.Allowed, o.Allowed}, {s.Denied, o.Denied}, {s.Errors, o.Errors}} {
		for k, v := range p.src {
			p.dst[k] += v
		}
	}
	s.Unexpected += o.Unexpected
	for _, e := range o.Examples {
		if len(s.Examples) < maxExamples {
			s.Examples = append(s.Examples, e)
		}
	}
	s.Dropped += o.Dropped
}

// Count is the number of answered requests (errors not included).
func (s *Stats) Count() int64 { return s.Latency.TotalCount() }

// ErrorCount is the number of requests that got a gRPC error.
func (s *Stats) ErrorCount() int64 { return sum(s.Errors) }

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// Recorder is one shard of a run's Stats: workers record into their own shard under its
// (uncontended) lock, and the progress reporter takes the interval's numbers from every shard.
type Recorder struct {
	mu       sync.Mutex
	total    *Stats
	interval *hdrhistogram.Histogram
	ivErrors int64
	ivDenied int64
}

func newRecorder() *Recorder { return &Recorder{total: NewStats(), interval: newHist(2)} }

func (r *Recorder) record(class string, exp Expect, lat time.Duration, resp *Response, errCode string, measured bool) {
	r.mu.Lock()
	if errCode != "" {
		r.ivErrors++
	} else {
		_ = r.interval.RecordValue(min(max(int64(lat), histLowest), histHighest))
		if !resp.Allowed() {
			r.ivDenied++
		}
	}
	if measured {
		r.total.Record(class, exp, lat, resp, errCode)
	}
	r.mu.Unlock()
}

func (r *Recorder) drop() {
	r.mu.Lock()
	r.total.Dropped++
	r.mu.Unlock()
}

// takeInterval moves the shard's interval numbers into h and returns its errors and denials.
func (r *Recorder) takeInterval(h *hdrhistogram.Histogram) (errs, denied int64) {
	r.mu.Lock()
	h.Merge(r.interval)
	r.interval.Reset()
	errs, denied = r.ivErrors, r.ivDenied
	r.ivErrors, r.ivDenied = 0, 0
	r.mu.Unlock()
	return errs, denied
}

// Percentiles are the latency summary of a run, in microseconds.
type Percentiles struct {
	P50  float64 `json:"p50_us"`
	P90  float64 `json:"p90_us"`
	P99  float64 `json:"p99_us"`
	P999 float64 `json:"p99_9_us"`
	Max  float64 `json:"max_us"`
	Mean float64 `json:"mean_us"`
}

func micros(ns int64) float64 { return math.Round(float64(ns)/10) / 100 }

// PercentilesOf summarises h.
func PercentilesOf(h *hdrhistogram.Histogram) Percentiles {
	if h.TotalCount() == 0 {
		return Percentiles{}
	}
	return Percentiles{P50: micros(h.ValueAtPercentile(50)), P90: micros(h.ValueAtPercentile(90)),
		P99: micros(h.ValueAtPercentile(99)), P999: micros(h.ValueAtPercentile(99.9)),
		Max: micros(h.Max()), Mean: math.Round(h.Mean()/10) / 100}
}

// CurvePoint is one point of the latency-by-percentile curve.
type CurvePoint struct {
	Percentile float64 `json:"percentile"`
	Micros     float64 `json:"us"`
}

// Curve samples h's latency at percentiles spaced evenly on the 1/(1-p) log scale of the
// classic HdrHistogram plot, from 0 % to 99.999 % (and the max), 10 points per decade.
func Curve(h *hdrhistogram.Histogram) []CurvePoint {
	if h.TotalCount() == 0 {
		return nil
	}
	var out []CurvePoint
	for i := 0; i <= 50; i++ {
		p := 100 * (1 - math.Pow(10, -float64(i)/10))
		out = append(out, CurvePoint{Percentile: math.Round(p*10000) / 10000, Micros: micros(h.ValueAtPercentile(p))})
	}
	out = append(out, CurvePoint{Percentile: 100, Micros: micros(h.Max())})
	return out
}

// sortedKeys returns m's keys, largest count first.
func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	return keys
}

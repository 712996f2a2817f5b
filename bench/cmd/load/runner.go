package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Clock is the runner's time source. The real one (clock_linux.go) sleeps with microsecond
// precision; tests inject a virtual one.
type Clock interface {
	Now() time.Time
	// SleepUntil returns at t or as soon after as it can (at once when t has passed).
	SleepUntil(t time.Time)
}

// Sender sends one request for a worker and fills resp; an error is a gRPC error.
type Sender func(ctx context.Context, worker int, it *Item, resp *Response) error

// RunOptions drive one run.
type RunOptions struct {
	// Open selects the open loop: requests are started at Rate per second on a fixed schedule,
	// whatever the answers, and each latency is measured from the request's intended start, so
	// a stalled target is charged for every request it delayed (no coordinated omission). The
	// closed loop (Open false) runs Concurrency workers, each sending its next request as soon as
	// the previous one is answered.
	Open        bool
	Concurrency int
	Rate        float64
	// Duration is how long requests are started (measured part and warm-up together); 0 for no
	// limit (then Requests or Once ends the run).
	Duration time.Duration
	// Warmup is the first part of Duration, whose requests are sent but not recorded.
	Warmup time.Duration
	// Requests ends the run after this many requests were started (0: no limit).
	Requests int64
	// Once uses each prepared request at most once; the run ends when a class runs out.
	Once bool
	// Drain bounds how long the open loop waits, after the last start, for late requests
	// (default 10 s; real time). Requests still unsent then are counted as dropped.
	Drain time.Duration
	// Seed makes the choice of classes repeatable.
	Seed uint64
	// Clock is the time source (default: the real, precise one).
	Clock Clock
	// Progress receives one line per second (nil: quiet).
	Progress io.Writer
	// OnMeasureStart is called once, when the measured part begins (after the warm-up).
	OnMeasureStart func()
}

// RunResult is the outcome of one run.
type RunResult struct {
	Stats *Stats
	// MeasureStart and End bound the measured part: from the end of the warm-up to the last
	// answer.
	MeasureStart, End time.Time
}

// Measured is the length of the measured part.
func (r *RunResult) Measured() time.Duration { return r.End.Sub(r.MeasureStart) }

// Throughput is the answered requests per second of the measured part.
func (r *RunResult) Throughput() float64 {
	if d := r.Measured(); d > 0 {
		return float64(r.Stats.Count()) / d.Seconds()
	}
	return 0
}

// Run sends the mix through send as o says and returns what it measured.
func Run(ctx context.Context, mix *Mix, send Sender, o RunOptions) (*RunResult, error) {
	if o.Concurrency < 1 {
		return nil, errors.New("run: --concurrency must be at least 1")
	}
	if o.Open && o.Rate <= 0 {
		return nil, errors.New("run: the open loop needs --rate > 0")
	}
	if o.Duration <= 0 && o.Requests <= 0 && !o.Once {
		return nil, errors.New("run: give --duration, --requests or --once")
	}
	if o.Duration > 0 && o.Warmup >= o.Duration {
		return nil, errors.New("run: --warmup must be shorter than --duration")
	}
	if o.Clock == nil {
		o.Clock = newRealClock()
	}
	if o.Drain <= 0 {
		o.Drain = 10 * time.Second
	}
	r := &runner{o: o, mix: mix, send: send, clk: o.Clock}
	nShards := min(o.Concurrency, 16)
	for range nShards {
		r.shards = append(r.shards, newRecorder())
	}
	r.start = r.clk.Now()
	r.measureStart = r.start.Add(o.Warmup)
	r.end = r.start.Add(o.Duration)
	if o.Duration <= 0 {
		r.end = time.Unix(1<<40, 0) // no time limit
	}
	if o.OnMeasureStart == nil {
		o.OnMeasureStart = func() {}
	}
	r.onMeasure = sync.OnceFunc(o.OnMeasureStart)
	if o.Warmup == 0 {
		r.onMeasure()
	}

	sendCtx, cancelSends := context.WithCancel(ctx)
	defer cancelSends()
	stopProgress := r.progress()
	if o.Open {
		r.runOpen(ctx, sendCtx, cancelSends)
	} else {
		r.runClosed(sendCtx)
	}
	stopProgress()
	res := &RunResult{Stats: NewStats(), MeasureStart: r.measureStart, End: r.clk.Now()}
	for _, s := range r.shards {
		res.Stats.Merge(s.total)
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	return res, nil
}

type runner struct {
	o                        RunOptions
	mix                      *Mix
	send                     Sender
	clk                      Clock
	shards                   []*Recorder
	start, measureStart, end time.Time
	onMeasure                func()
	started                  atomic.Int64
	stopped                  atomic.Bool
	backlog                  func() int
}

// next picks the next request for a worker, or nil when the run is over.
func (r *runner) next(rng *rand.Rand) (*Class, *Item) {
	c := r.mix.Pick(rng.Float64())
	it := c.take(r.o.Once)
	if it == nil {
		r.stopped.Store(true)
	}
	return c, it
}

func (r *runner) sendOne(ctx context.Context, w int, c *Class, it *Item, t0 time.Time, resp *Response) {
	err := r.send(ctx, w, it, resp)
	lat := r.clk.Now().Sub(t0)
	shard := r.shards[w%len(r.shards)]
	if err != nil && ctx.Err() != nil {
		shard.drop() // cut off at the end of the drain time
		return
	}
	code := ""
	if err != nil {
		code = errCode(err)
	}
	shard.record(c.Name, it.Expect, lat, resp, code, !t0.Before(r.measureStart))
}

func (r *runner) runClosed(ctx context.Context) {
	var wg sync.WaitGroup
	for w := range r.o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(r.o.Seed, uint64(w)))
			var resp Response
			for !r.stopped.Load() && ctx.Err() == nil {
				t0 := r.clk.Now()
				if !t0.Before(r.end) || (r.o.Requests > 0 && r.started.Add(1) > r.o.Requests) {
					return
				}
				if !t0.Before(r.measureStart) {
					r.onMeasure()
				}
				c, it := r.next(rng)
				if it == nil {
					return
				}
				r.sendOne(ctx, w, c, it, t0, &resp)
			}
		}()
	}
	wg.Wait()
}

// runOpen starts requests on the schedule start + i/rate. Each free worker claims the next
// slot, sleeps until its time and sends it; when every worker is busy the next slots wait, and
// each request's latency is measured from its slot's time, not from when it was actually sent,
// so time lost to a slow target is charged to every request it delayed.
func (r *runner) runOpen(ctx, sendCtx context.Context, cancelSends context.CancelFunc) {
	interval := float64(time.Second) / r.o.Rate
	total := int64(math.MaxInt64)
	if r.o.Duration > 0 {
		total = int64(math.Ceil(r.o.Duration.Seconds() * r.o.Rate))
	}
	if r.o.Requests > 0 {
		total = min(total, r.o.Requests)
	}
	var claimed, sent atomic.Int64
	r.backlog = func() int { // slots due but not yet claimed
		due := min(int64(r.clk.Now().Sub(r.start).Seconds()*r.o.Rate)+1, total)
		return int(max(0, due-min(claimed.Load(), total)))
	}
	var wg sync.WaitGroup
	for w := range r.o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(r.o.Seed, uint64(w)))
			var resp Response
			for !r.stopped.Load() && sendCtx.Err() == nil {
				i := claimed.Add(1) - 1
				if i >= total {
					return
				}
				t := r.start.Add(time.Duration(float64(i) * interval))
				r.clk.SleepUntil(t)
				if !t.Before(r.measureStart) {
					r.onMeasure()
				}
				c, it := r.next(rng)
				if it == nil {
					return // --once ran out
				}
				sent.Add(1)
				r.sendOne(sendCtx, w, c, it, t, &resp)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	// The drain time starts when the schedule ends.
	select {
	case <-done:
	case <-ctx.Done():
	case <-afterReal(r.end, r.clk, done):
		select {
		case <-done:
		case <-time.After(r.o.Drain):
		case <-ctx.Done():
		}
	}
	cancelSends()
	<-done
	if total != math.MaxInt64 && !r.stopped.Load() {
		if n := total - sent.Load(); n > 0 { // never started: the drain time ran out
			r.shards[0].mu.Lock()
			r.shards[0].total.Dropped += n
			r.shards[0].mu.Unlock()
		}
	}
}

// afterReal fires when clk reaches end, polling the clock every 10 ms of real time (the
// virtual clock of the tests may never reach it), unless stop closes first.
func afterReal(end time.Time, clk Clock, stop <-chan struct{}) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		for clk.Now().Before(end) {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
		close(ch)
	}()
	return ch
}

// progress prints one line per second until the returned func is called.
func (r *runner) progress() func() {
	if r.o.Progress == nil {
		return func() {}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		h := newHist(2)
		var total int64
		last := time.Now()
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				h.Reset()
				var errs, denied int64
				for _, s := range r.shards {
					e, d := s.takeInterval(h)
					errs += e
					denied += d
				}
				n := h.TotalCount()
				total += n + errs
				el := now.Sub(last).Seconds()
				last = now
				phase := ""
				if r.clk.Now().Before(r.measureStart) {
					phase = " (warm-up)"
				}
				backlog := ""
				if r.backlog != nil {
					backlog = fmt.Sprintf("  behind %d", r.backlog())
				}
				fmt.Fprintf(r.o.Progress, "%6.0fs %9.0f checks/s  p50 %s  p99 %s  max %s  denied %d  errors %d%s  total %d%s\n",
					r.clk.Now().Sub(r.start).Seconds(), float64(n+errs)/el, fmtMicros(micros(h.ValueAtPercentile(50))),
					fmtMicros(micros(h.ValueAtPercentile(99))), fmtMicros(micros(h.Max())), denied, errs, backlog, total, phase)
			}
		}
	}()
	return func() { close(stop); <-done }
}

// fmtMicros formats a latency in microseconds for people: "850µs", "1.25ms", "2.1s".
func fmtMicros(us float64) string {
	switch {
	case us < 1000:
		return fmt.Sprintf("%.0fµs", us)
	case us < 10_000:
		return fmt.Sprintf("%.2fms", us/1000)
	case us < 1_000_000:
		return fmt.Sprintf("%.1fms", us/1000)
	}
	return fmt.Sprintf("%.2fs", us/1e6)
}

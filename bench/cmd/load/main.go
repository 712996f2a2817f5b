// Command load drives an Envoy ext_authz v3 gRPC server — a running tokenagent, or any other
// implementation — with a realistic mix of MindTouch / CXone credentials, and reports
// throughput, latency percentiles (HDR histogram), decisions, errors, and the target's CPU and
// memory.
//
//	go run ./bench/cmd/load setup --dir /tmp/lt                  # keys + a matching agent config
//	go run ./agent/cmd/tokenagent serve --config /tmp/lt/tokenagent.yaml &
//	go run ./bench/cmd/load run --keys /tmp/lt --pid $! --duration 20s --out /tmp/lt/closed
//	go run ./bench/cmd/load run --keys /tmp/lt --pid $! --rate 10000 --out /tmp/lt/open
//	go run ./bench/cmd/load compare --keys /tmp/lt --a 127.0.0.1:9191 --b 127.0.0.1:9291
//
// Modes:
//   - closed loop (default): --concurrency workers each send their next request when the last
//     one is answered; this finds the maximum throughput.
//   - open loop (--rate N): requests start on a fixed schedule of N per second whatever the
//     answers; each latency is measured from the request's intended start, so a target that
//     stalls is charged for every request it held up (no coordinated omission).
//   - compare: the same load against two targets in alternating slices (A, B, A, B, …), so
//     drift in the machine's load hits both alike; the report gives the ratios B/A.
//
// Tokens are prepared before the run (--tokens distinct requests per kind; minted JWTs are
// cached in the keys directory, since RS256 signing is slow), so the client spends its time on
// gRPC, not on cryptography.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

const usage = `load — a load generator for Envoy ext_authz v3 gRPC servers (tokenagent or any other)

Usage:
  load setup   --dir DIR [--host HOST] [--grpc-addr ADDR] [--force]
  load run     --keys DIR [--addr ADDR] [--pid PID] [--rate N] [--duration D] [--out DIR] [flags]
  load compare --keys DIR --a ADDR --b ADDR [--pid-a PID] [--pid-b PID] [--slices N] [--slice D] [flags]
  load ghz     --keys DIR --out OUT [--opa-addr ADDR]   (bench/opaenvoy/compare.sh's files)
  load ghz-report --dir DIR [--svg FILE --plot ID,...]   (compare.sh's table and plot)

Run 'load COMMAND --help' for a command's flags.
`

func main() {
	if os.Getenv("GOGC") == "" {
		// The client's garbage is short-lived; collecting less often leaves more CPU to a
		// target on the same machine.
		debug.SetGCPercent(400)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "setup":
		err = cmdSetup(args[1:], stdout, stderr)
	case "run":
		err = cmdRun(ctx, args[1:], stdout, stderr)
	case "compare":
		err = cmdCompare(ctx, args[1:], stdout, stderr)
	case "ghz":
		err = cmdGHZ(args[1:], stdout, stderr)
	case "ghz-report":
		err = cmdGHZReport(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "load: unknown command %q (want setup, run, compare, ghz or ghz-report)\n", args[0])
		return 2
	}
	switch {
	case err == nil, errors.Is(err, pflag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintf(stderr, "load: %v\n", err)
	return 1
}

func newFlags(name, help string, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SortFlags = false
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintf(stderr, "%s\n\nFlags:\n%s", help, fs.FlagUsages()) }
	return fs
}

func parse(fs *pflag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(io.Discard) // one line on error; fs.Usage (to stderr) only for --help
	err := fs.Parse(args)
	if errors.Is(err, pflag.ErrHelp) {
		return err
	}
	if err != nil {
		fmt.Fprintf(stderr, "load %s: %v (see --help)\n", fs.Name(), err)
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "load %s: unexpected argument %q (see --help)\n", fs.Name(), fs.Arg(0))
		return errUsage
	}
	return nil
}

func cmdSetup(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("setup", `load setup — write keys and a matching tokenagent config

Creates fresh keys and writes into DIR:
  tokenagent.yaml   a complete agent config (one site, route rules) using keys.yaml
  keys.yaml         the embedded key source: Auth Token key, server keys, browser keys with
                    their origins, and the site's OAuth issuer with an RS256 and an ES256 JWKS
                    and an HS256 secret
  load-keys.json    the private halves, which 'load run --keys DIR' signs with

Then 'tokenagent serve --config DIR/tokenagent.yaml' trusts exactly what 'load run' sends. To
load another ext_authz implementation, configure it from keys.yaml.`, stderr)
	o := SetupOptions{}
	fs.StringVar(&o.Dir, "dir", "", "the directory to write (required)")
	fs.StringVar(&o.Site, "site", "bench", "the site id")
	fs.StringVar(&o.Host, "host", "bench.example.com", "the site's hostname (requests' :authority)")
	fs.StringVar(&o.GRPCAddr, "grpc-addr", "127.0.0.1:9191", "the agent's gRPC listen address in the config")
	fs.StringVar(&o.HTTPAddr, "http-addr", "127.0.0.1:9192", "the agent's HTTP listen address in the config")
	fs.IntVar(&o.ServerKeys, "server-keys", 4, "how many Server API Token keys")
	fs.IntVar(&o.BrowserKeys, "browser-keys", 4, "how many Browser API Token keys")
	fs.BoolVar(&o.Force, "force", false, "replace an existing setup in --dir")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if o.Dir == "" {
		fmt.Fprintln(stderr, "load setup: --dir is required")
		return errUsage
	}
	if _, err := Setup(o); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s/{%s,%s,%s}\nserve:  go run ./agent/cmd/tokenagent serve --config %s/%s\nload:   go run ./bench/cmd/load run --keys %s\n",
		o.Dir, configFile, agentKeys, signingFile, o.Dir, configFile, o.Dir)
	return nil
}

// loadFlags are the flags shared by run and compare.
type loadFlags struct {
	keysDir       string
	host          string
	conns         int
	concurrency   int
	rate          float64
	duration      time.Duration
	warmup        time.Duration
	requests      int64
	once          bool
	mix           string
	invalid       float64
	tokens        int
	tokensFor     map[string]int
	invalidTokens int
	timeout       time.Duration
	drain         time.Duration
	seed          uint64
	out           string
	quiet         bool
	cpuProfile    string
	bdp           bool
}

func (l *loadFlags) register(fs *pflag.FlagSet, compare bool) {
	fs.StringVar(&l.keysDir, "keys", "", "the directory 'load setup' wrote (required)")
	fs.StringVar(&l.host, "host", "", "the requests' host (default: the site's host from the keys)")
	fs.IntVar(&l.conns, "conns", 2, "HTTP/2 connections per target, one per Envoy worker thread it stands for (requests are spread over them)")
	fs.BoolVar(&l.bdp, "bdp", false, "use gRPC-Go's default client (dynamic windows with BDP pings, which Envoy does not send) instead of Envoy's static 64 MiB windows")
	fs.IntVar(&l.concurrency, "concurrency", 64, "closed loop: concurrent workers; open loop: the most requests in flight")
	fs.Float64Var(&l.rate, "rate", 0, "open loop: start this many requests per second on a fixed schedule (0: closed loop)")
	if !compare {
		fs.DurationVar(&l.duration, "duration", 10*time.Second, "how long to measure (after the warm-up)")
	}
	fs.DurationVar(&l.warmup, "warmup", 2*time.Second, "load sent before measuring, not recorded")
	if !compare {
		fs.Int64Var(&l.requests, "requests", 0, "stop after this many requests (0: no limit)")
		fs.BoolVar(&l.once, "once", false, "send each prepared request at most once (every token is new to the target); stops when a kind runs out")
	}
	fs.StringVar(&l.mix, "mix", DefaultMix, "relative weights of the valid kinds: "+strings.Join(ValidKinds, ", "))
	fs.Float64Var(&l.invalid, "invalid", 0.05, "share of requests (0..1) with an invalid credential, spread over the invalid variants")
	fs.IntVar(&l.tokens, "tokens", 10000, "distinct requests (tokens) prepared per kind")
	fs.StringToIntVar(&l.tokensFor, "tokens-for", nil, "per-kind override of --tokens, e.g. rs256=50000,es256=100000")
	fs.IntVar(&l.invalidTokens, "invalid-tokens", 0, "distinct requests per invalid variant (default min(--tokens, 1000))")
	fs.DurationVar(&l.timeout, "timeout", time.Second, "per-check deadline (sent to the target as grpc-timeout, as Envoy does)")
	fs.DurationVar(&l.drain, "drain", 10*time.Second, "open loop: how long late requests may still finish after the schedule ends")
	fs.Uint64Var(&l.seed, "seed", 1, "seed of the kind choice (same seed, same sequence)")
	fs.StringVar(&l.out, "out", "", "write result.json, report.md and latency.svg into this directory")
	fs.BoolVar(&l.quiet, "quiet", false, "no progress lines on stderr")
	fs.StringVar(&l.cpuProfile, "cpuprofile", "", "write the load generator's own CPU profile here (to see what the client costs)")
}

func (l *loadFlags) check(stderr io.Writer, name string) error {
	if l.keysDir == "" {
		fmt.Fprintf(stderr, "load %s: --keys is required (create it with: load setup --dir DIR)\n", name)
		return errUsage
	}
	return nil
}

// prepare reads the keys and builds the mix.
func (l *loadFlags) prepare(stderr io.Writer) (*Keys, *Mix, error) {
	keys, err := LoadKeys(l.keysDir)
	if err != nil {
		return nil, nil, err
	}
	if l.host != "" {
		keys.Host = l.host
	}
	weights, err := ParseMix(l.mix)
	if err != nil {
		return nil, nil, err
	}
	var progress io.Writer
	if !l.quiet {
		progress = stderr
	}
	t0 := time.Now()
	mix, err := BuildMix(keys, MixOptions{Weights: weights, Invalid: l.invalid, Tokens: l.tokens, PerKind: l.tokensFor,
		InvalidTokens: l.invalidTokens, CacheDir: l.keysDir, Progress: progress})
	if err != nil {
		return nil, nil, err
	}
	if !l.quiet {
		n := 0
		for _, c := range mix.Classes {
			n += c.Len()
		}
		fmt.Fprintf(stderr, "prepared %d requests in %d classes in %s\n", n, len(mix.Classes), time.Since(t0).Round(time.Millisecond))
	}
	return keys, mix, nil
}

func (l *loadFlags) settings(mode string) Settings {
	return Settings{Mode: mode, Concurrency: l.concurrency, Rate: l.rate, Conns: l.conns, Duration: l.duration.String(),
		Warmup: l.warmup.String(), Requests: l.requests, Once: l.once, Tokens: l.tokens, Invalid: l.invalid,
		Timeout: l.timeout.String()}
}

func (l *loadFlags) runOptions(stderr io.Writer) RunOptions {
	o := RunOptions{Open: l.rate > 0, Concurrency: l.concurrency, Rate: l.rate, Warmup: l.warmup,
		Requests: l.requests, Once: l.once, Drain: l.drain, Seed: l.seed}
	if l.duration > 0 {
		o.Duration = l.warmup + l.duration
	}
	if !l.quiet {
		o.Progress = stderr
	}
	return o
}

func mode(rate float64) string {
	if rate > 0 {
		return "open"
	}
	return "closed"
}

// makeSender sends prepared requests to t, one request builder per worker.
func makeSender(t *Target, host string, workers int, timeout time.Duration) Sender {
	bs := make([]*builder, workers)
	for i := range bs {
		bs[i] = newBuilder(host, i)
	}
	return func(ctx context.Context, w int, it *Item, resp *Response) error {
		data := bs[w].encode(it)
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		return t.Check(ctx, w, data, resp)
	}
}

// noopSender answers every request at once with the decision it expects: a run against it
// measures the load generator's own scheduling and bookkeeping.
func noopSender(_ context.Context, _ int, it *Item, resp *Response) error {
	*resp = Response{Kind: it.Expect.Kind, Reason: it.Expect.Reason}
	if !it.Expect.Allow {
		resp.Code, resp.HTTPStatus = 16, 401
	}
	return nil
}

// probe sends one anonymous check per connection, so a target that is not there fails fast.
func probe(ctx context.Context, t *Target, host string) error {
	b := newBuilder(host, 0)
	for i := range t.conns {
		data := b.encode(&Item{Path: "/"})
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var resp Response
		err := t.Check(cctx, i, data, &resp)
		cancel()
		if err != nil {
			return fmt.Errorf("target %s (%s) does not answer: %v", t.Name, t.Addr, err)
		}
	}
	return nil
}

// regenerate keeps time-bound tokens fresh (server tokens live ±5 min) until ctx ends.
func regenerate(ctx context.Context, mix *Mix) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			mix.Regenerate(now)
		}
	}
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", `load run — drive one ext_authz target and report

Examples:
  load run --keys /tmp/lt --pid $(pgrep -n tokenagent) --duration 20s --out /tmp/lt/closed
  load run --keys /tmp/lt --rate 10000 --duration 30s --out /tmp/lt/open
  load run --keys /tmp/lt --mix rs256=1 --invalid 0 --tokens 60000 --once --warmup 0 --duration 0  # RS256, first sight`, stderr)
	var l loadFlags
	l.register(fs, false)
	addr := fs.String("addr", "127.0.0.1:9191", "the target's gRPC address (noop: no target, every request answered at once as expected, to measure the generator's own floor)")
	pid := fs.Int("pid", 0, "the target's process id, when local: its CPU time and peak RSS are reported")
	name := fs.String("name", "target", "the target's name in the report")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if err := l.check(stderr, "run"); err != nil {
		return err
	}
	keys, mix, err := l.prepare(stderr)
	if err != nil {
		return err
	}
	var t *Target
	var send Sender
	if *addr == "noop" {
		t, send = &Target{Name: *name, Addr: *addr}, noopSender
	} else {
		if t, err = Dial(*name, *addr, l.conns, *pid, l.bdp); err != nil {
			return err
		}
		defer t.Close()
		if err := probe(ctx, t, keys.Host); err != nil {
			return err
		}
		send = makeSender(t, keys.Host, l.concurrency, l.timeout)
	}
	rep := &Report{Tool: "tokenagent bench/cmd/load", Started: time.Now(), Machine: newMachine(),
		Settings: l.settings(mode(l.rate)), Mix: mix.Summary()}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go regenerate(rctx, mix)

	o := l.runOptions(stderr)
	if l.cpuProfile != "" {
		stopProfile, err := startProfile(l.cpuProfile)
		if err != nil {
			return err
		}
		defer stopProfile()
	}
	var agentBefore, clientBefore ProcSample
	o.OnMeasureStart = func() {
		clientBefore, _ = ReadProc(0)
		if *pid > 0 {
			agentBefore, _ = ReadProc(*pid)
		}
	}
	res, err := Run(ctx, mix, send, o)
	if err != nil {
		return err
	}
	clientAfter, _ := ReadProc(0)
	client := procResult(0, clientBefore, clientAfter)
	var agentRes *ProcResult
	if *pid > 0 {
		after, err := ReadProc(*pid)
		if err != nil {
			return fmt.Errorf("--pid %d: %v", *pid, err)
		}
		agentRes = procResult(*pid, agentBefore, after)
	}
	rep.Machine.LoadAvgEnd = loadAvg()
	if l.duration == 0 { // ended by --requests or --once: say how long it took
		rep.Settings.Duration = res.Measured().Round(time.Millisecond).String()
	}
	rep.Targets = []TargetResult{targetResult(t, res.Stats, res.Measured().Seconds(), agentRes, client)}
	return finish(rep, &l, stdout, stderr)
}

func startProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// finish prints the report and writes its files.
func finish(rep *Report, l *loadFlags, stdout, stderr io.Writer) error {
	rep.Markdown(stdout, "")
	if l.out != "" {
		if err := rep.WriteFiles(l.out); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "wrote %s/{result.json,report.md,latency.svg}\n", l.out)
	}
	for _, t := range rep.Targets {
		if t.Unexpected > 0 || sum(t.Errors) > 0 {
			fmt.Fprintf(stderr, "load: %s: %d unexpected decisions, %d errors (see the report)\n", t.Name, t.Unexpected, sum(t.Errors))
		}
	}
	return nil
}

func cmdCompare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("compare", `load compare — the same load against two targets, alternating

Runs --slices slices of --slice against each target, alternating A, B, A, B, … after a warm-up
of each, so that a change in the machine's load during the run hits both targets alike, and
reports each target and the ratios B/A. Both targets must trust the same keys (serve both from
the same setup directory, on different ports).

Example:
  load compare --keys /tmp/lt --a 127.0.0.1:9191 --pid-a $A --b 127.0.0.1:9291 --pid-b $B --slices 6 --slice 5s`, stderr)
	var l loadFlags
	l.register(fs, true)
	addrA := fs.String("a", "", "target A's gRPC address (required)")
	addrB := fs.String("b", "", "target B's gRPC address (required)")
	pidA := fs.Int("pid-a", 0, "target A's process id, when local")
	pidB := fs.Int("pid-b", 0, "target B's process id, when local")
	nameA := fs.String("name-a", "A", "target A's name in the report")
	nameB := fs.String("name-b", "B", "target B's name in the report")
	slices := fs.Int("slices", 5, "slices per target")
	slice := fs.Duration("slice", 4*time.Second, "length of one slice")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if err := l.check(stderr, "compare"); err != nil {
		return err
	}
	if *addrA == "" || *addrB == "" || *slices < 1 || *slice <= 0 {
		fmt.Fprintln(stderr, "load compare: --a and --b are required; --slices and --slice must be positive")
		return errUsage
	}
	keys, mix, err := l.prepare(stderr)
	if err != nil {
		return err
	}
	type side struct {
		t       *Target
		send    Sender
		stats   *Stats
		seconds float64
		agent   *ProcResult
		client  *ProcResult
	}
	var sides [2]*side
	for i, spec := range []struct {
		name, addr string
		pid        int
	}{{*nameA, *addrA, *pidA}, {*nameB, *addrB, *pidB}} {
		t, err := Dial(spec.name, spec.addr, l.conns, spec.pid, l.bdp)
		if err != nil {
			return err
		}
		defer t.Close()
		if err := probe(ctx, t, keys.Host); err != nil {
			return err
		}
		s := &side{t: t, send: makeSender(t, keys.Host, l.concurrency, l.timeout), stats: NewStats(), client: &ProcResult{}}
		if spec.pid > 0 {
			s.agent = &ProcResult{PID: spec.pid}
		}
		sides[i] = s
	}
	rep := &Report{Tool: "tokenagent bench/cmd/load compare", Started: time.Now(), Machine: newMachine(),
		Settings: l.settings(mode(l.rate)), Mix: mix.Summary()}
	rep.Settings.Slices, rep.Settings.Slice = *slices, slice.String()
	rep.Settings.Duration = (time.Duration(*slices) * *slice).String() + " per target"
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go regenerate(rctx, mix)

	base := l.runOptions(stderr)
	if l.warmup > 0 {
		for _, s := range sides {
			o := base
			o.Warmup, o.Duration, o.Progress = 0, l.warmup, nil
			if !l.quiet {
				fmt.Fprintf(stderr, "warm-up %s: %s\n", s.t.Name, l.warmup)
			}
			if _, err := Run(ctx, mix, s.send, o); err != nil {
				return err
			}
		}
	}
	for i := range 2 * *slices {
		s := sides[i%2]
		o := base
		o.Warmup, o.Duration, o.Progress = 0, *slice, nil
		var agentBefore, clientBefore ProcSample
		o.OnMeasureStart = func() {
			clientBefore, _ = ReadProc(0)
			if s.agent != nil {
				agentBefore, _ = ReadProc(s.agent.PID)
			}
		}
		res, err := Run(ctx, mix, s.send, o)
		if err != nil {
			return err
		}
		clientAfter, _ := ReadProc(0)
		s.client.CPUSeconds += clientAfter.CPUSeconds - clientBefore.CPUSeconds
		if s.agent != nil {
			after, err := ReadProc(s.agent.PID)
			if err != nil {
				return fmt.Errorf("pid %d: %v", s.agent.PID, err)
			}
			s.agent.CPUSeconds += after.CPUSeconds - agentBefore.CPUSeconds
			s.agent.RSSMiB, s.agent.PeakRSSMiB = round(float64(after.RSSKiB)/1024, 1), round(float64(after.PeakRSSKiB)/1024, 1)
		}
		s.stats.Merge(res.Stats)
		s.seconds += res.Measured().Seconds()
		if !l.quiet {
			fmt.Fprintf(stderr, "slice %d/%d %s: %.0f checks/s, p50 %s, p99 %s\n", i+1, 2**slices, s.t.Name,
				res.Throughput(), fmtMicros(micros(res.Stats.Latency.ValueAtPercentile(50))),
				fmtMicros(micros(res.Stats.Latency.ValueAtPercentile(99))))
		}
	}
	rep.Machine.LoadAvgEnd = loadAvg()
	for _, s := range sides {
		if s.agent != nil {
			s.agent.CPUSeconds = round(s.agent.CPUSeconds, 2)
		}
		s.client.CPUSeconds = round(s.client.CPUSeconds, 2)
		rep.Targets = append(rep.Targets, targetResult(s.t, s.stats, s.seconds, s.agent, s.client))
	}
	rep.Ratios = ratios(rep.Targets[0], rep.Targets[1])
	return finish(rep, &l, stdout, stderr)
}

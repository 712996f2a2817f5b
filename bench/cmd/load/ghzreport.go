package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The side-by-side report (load ghz-report) reads what bench/opaenvoy/compare.sh wrote:
//
//	rows.tsv                       id, request, load, one row per line, tab-separated
//	runs/ID.SERVER.N.json          ghz's JSON output of run N of row ID against SERVER
//	runs/ID.SERVER.N.proc          "CPU_SECONDS PEAK_RSS_KIB" of the server over that run
//	runs/ID.SERVER+load.N.result.json   or: the load tool's own result.json (it measures the server)
//
// and prints one table line per row and server (the runs of a row summed: CPU per check is the
// server's CPU seconds over all of its runs divided by their checks; latency percentiles are
// the median over the runs), and a latency-by-percentile plot of chosen rows.

// ghzResult is the part of ghz's JSON output (-O json) the report reads; times in nanoseconds.
type ghzResult struct {
	Count     int64   `json:"count"`
	Total     float64 `json:"total"`
	RPS       float64 `json:"rps"`
	Fastest   float64 `json:"fastest"`
	Slowest   float64 `json:"slowest"`
	Latencies []struct {
		Percentage float64 `json:"percentage"`
		Latency    float64 `json:"latency"`
	} `json:"latencyDistribution"`
	Status map[string]int64 `json:"statusCodeDistribution"`
	Errors map[string]int64 `json:"errorDistribution"`
}

// sideRow is one line of rows.tsv.
type sideRow struct{ ID, Request, Load string }

// sideRun is one measured run, from either client.
type sideRun struct {
	Count, Failed   int64
	Throughput      float64
	CPUSeconds      float64
	PeakRSSMiB      float64
	P50, P90, P99   float64
	Curve           []CurvePoint
	Client, Comment string
}

// SideResult is one table line: a row against one server.
type SideResult struct {
	Row        sideRow
	Server     string
	Client     string
	Runs       int
	Count      int64
	Failed     int64
	Throughput float64
	CPUPerUs   float64
	PeakRSSMiB float64
	P50        float64
	P90        float64
	P99        float64
	Curve      []CurvePoint
}

func readSideRows(dir string) ([]sideRow, error) {
	f, err := os.Open(filepath.Join(dir, "rows.tsv"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rows []sideRow
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p := strings.Split(line, "\t")
		if len(p) != 3 || p[0] == "" || strings.ContainsAny(p[0], "./") {
			return nil, fmt.Errorf("rows.tsv line %d: want ID<TAB>request<TAB>load, got %q", n, line)
		}
		rows = append(rows, sideRow{p[0], p[1], p[2]})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, errors.New("rows.tsv: no rows")
	}
	return rows, nil
}

// readGHZRun reads run base (path without extension) as measured by ghz and /proc.
func readGHZRun(base string) (sideRun, error) {
	var r ghzResult
	b, err := os.ReadFile(base + ".json")
	if err != nil {
		return sideRun{}, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return sideRun{}, fmt.Errorf("%s.json: %w", base, err)
	}
	p, err := os.ReadFile(base + ".proc")
	if err != nil {
		return sideRun{}, err
	}
	f := strings.Fields(string(p))
	if len(f) != 2 {
		return sideRun{}, fmt.Errorf("%s.proc: want CPU_SECONDS PEAK_RSS_KIB, got %q", base, p)
	}
	cpu, err1 := strconv.ParseFloat(f[0], 64)
	rss, err2 := strconv.ParseFloat(f[1], 64)
	if err := errors.Join(err1, err2); err != nil || cpu < 0 || rss < 0 {
		return sideRun{}, fmt.Errorf("%s.proc: %q: not two non-negative numbers", base, p)
	}
	// ghz -z cuts the calls in flight when the duration ends, by closing the connection: those
	// are neither answered nor failed; Count is the answered calls.
	var cut int64
	for msg, n := range r.Errors {
		if strings.Contains(msg, "use of closed network connection") || strings.Contains(msg, "the client connection is closing") {
			cut += n
		}
	}
	if r.Count-cut <= 0 {
		return sideRun{}, fmt.Errorf("%s.json: no calls (count %d, %d cut)", base, r.Count, cut)
	}
	run := sideRun{Count: r.Count - cut, Failed: r.Count - cut - r.Status["OK"], Throughput: r.RPS,
		CPUSeconds: cpu, PeakRSSMiB: rss / 1024, Client: "ghz"}
	run.Curve = append(run.Curve, CurvePoint{0, r.Fastest / 1e3})
	for _, l := range r.Latencies {
		us := l.Latency / 1e3
		run.Curve = append(run.Curve, CurvePoint{l.Percentage, us})
		switch l.Percentage {
		case 50:
			run.P50 = us
		case 90:
			run.P90 = us
		case 99:
			run.P99 = us
		}
	}
	run.Curve = append(run.Curve, CurvePoint{100, r.Slowest / 1e3})
	return run, nil
}

// readLoadRun reads a run of the load tool's own generator (its result.json, --pid given).
func readLoadRun(path string) (sideRun, error) {
	var rep Report
	b, err := os.ReadFile(path)
	if err != nil {
		return sideRun{}, err
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		return sideRun{}, fmt.Errorf("%s: %w", path, err)
	}
	if len(rep.Targets) != 1 || rep.Targets[0].Agent == nil || rep.Targets[0].Requests <= 0 {
		return sideRun{}, fmt.Errorf("%s: want one target measured with --pid", path)
	}
	t := rep.Targets[0]
	var failed int64
	for _, n := range t.Errors {
		failed += n
	}
	return sideRun{Count: t.Requests, Failed: failed + t.Unexpected + t.Dropped, Throughput: t.Throughput,
		CPUSeconds: t.Agent.CPUSeconds, PeakRSSMiB: t.Agent.PeakRSSMiB, P50: t.Latency.P50, P90: t.Latency.P90,
		P99: t.Latency.P99, Curve: t.Curve, Client: "load"}, nil
}

// ReadSideBySide reads compare.sh's directory: the rows, in order, each with its servers measured
// by ghz by name, then those measured by the load tool (SERVER+load).
func ReadSideBySide(dir string) ([]SideResult, error) {
	rows, err := readSideRows(dir)
	if err != nil {
		return nil, err
	}
	var out []SideResult
	for _, row := range rows {
		names, err := filepath.Glob(filepath.Join(dir, "runs", row.ID+".*"))
		if err != nil {
			return nil, err
		}
		runs := map[string][]sideRun{}
		var servers []string
		for _, n := range names {
			base := filepath.Base(n)
			var run sideRun
			switch {
			case strings.HasSuffix(base, ".result.json"):
				run, err = readLoadRun(n)
			case strings.HasSuffix(base, ".json"):
				run, err = readGHZRun(strings.TrimSuffix(n, ".json"))
			default:
				continue
			}
			if err != nil {
				return nil, err
			}
			parts := strings.Split(base, ".") // ID.SERVER.N.json or ID.SERVER.N.result.json
			if len(parts) < 4 {
				return nil, fmt.Errorf("%s: want ID.SERVER.N.json", n)
			}
			server := parts[1]
			if _, ok := runs[server]; !ok {
				servers = append(servers, server)
			}
			runs[server] = append(runs[server], run)
		}
		if len(servers) == 0 {
			return nil, fmt.Errorf("row %s: no runs in %s", row.ID, filepath.Join(dir, "runs"))
		}
		// Measured by ghz first, by name (opa-envoy, opa-envoy-p1, tokenagent, …), then the
		// load tool's.
		slices.SortFunc(servers, func(a, b string) int {
			return cmp.Or(cmp.Compare(strings.Count(a, "+"), strings.Count(b, "+")), strings.Compare(a, b))
		})
		for _, s := range servers {
			r := summarize(row, s, runs[s])
			r.Server, _, _ = strings.Cut(s, "+") // tokenagent+load: the server, by the load tool
			out = append(out, r)
		}
	}
	return out, nil
}

func summarize(row sideRow, server string, runs []sideRun) SideResult {
	r := SideResult{Row: row, Server: server, Client: runs[0].Client, Runs: len(runs)}
	var cpu float64
	var p50, p90, p99, tput []float64
	for _, x := range runs {
		r.Count += x.Count
		r.Failed += x.Failed
		cpu += x.CPUSeconds
		r.PeakRSSMiB = math.Max(r.PeakRSSMiB, x.PeakRSSMiB)
		p50, p90, p99, tput = append(p50, x.P50), append(p90, x.P90), append(p99, x.P99), append(tput, x.Throughput)
	}
	r.CPUPerUs = cpu / float64(r.Count) * 1e6
	r.P50, r.P90, r.P99, r.Throughput = median(p50), median(p90), median(p99), median(tput)
	r.Curve = medianCurve(runs)
	return r
}

// median of xs (the lower middle for an even count: a run, not an average of two).
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// medianCurve is, at each percentile of the first run's curve, the median over the runs.
func medianCurve(runs []sideRun) []CurvePoint {
	out := make([]CurvePoint, 0, len(runs[0].Curve))
	for i, p := range runs[0].Curve {
		var v []float64
		for _, r := range runs {
			if i < len(r.Curve) && r.Curve[i].Percentile == p.Percentile {
				v = append(v, r.Curve[i].Micros)
			}
		}
		out = append(out, CurvePoint{p.Percentile, median(v)})
	}
	return out
}

// SideMarkdown writes the table: one line per row and server, with the ratio of a server's CPU
// per check to base's (OPA-Envoy in compare.sh) on the same row, with the same client and
// setting (see baseline); "—" where the row has no base server.
func SideMarkdown(w io.Writer, res []SideResult, base string) {
	fmt.Fprintf(w, "| request | load | server (client) | runs | checks | failed | checks/s | p50 | p90 | p99 | CPU/check | vs %s | peak RSS |\n", base)
	fmt.Fprintln(w, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for i := range res {
		r := &res[i]
		ratio := "—"
		if b := baseline(res, r, base); b != nil && b.CPUPerUs > 0 {
			ratio = fmt.Sprintf("%.2f×", r.CPUPerUs/b.CPUPerUs)
		}
		fmt.Fprintf(w, "| %s | %s | %s (%s) | %d | %d | %d | %.0f | %s | %s | %s | %.1f µs | %s | %.0f MiB |\n",
			r.Row.Request, r.Row.Load, r.Server, r.Client, r.Runs, r.Count, r.Failed, r.Throughput,
			fmtMicros(r.P50), fmtMicros(r.P90), fmtMicros(r.P99), r.CPUPerUs, ratio, r.PeakRSSMiB)
	}
}

// baseline is what r's CPU per check is compared with: on the same row and by the same client,
// base's result with r's setting suffix (opa-envoy-p1 for tokenagent-p1: "-pN" is GOMAXPROCS=N
// in compare.sh); nil for base itself and when the row has no such result.
func baseline(res []SideResult, r *SideResult, base string) *SideResult {
	name, suffix := settingSuffix(r.Server)
	if name == base {
		return nil
	}
	for i := range res {
		b := &res[i]
		if b.Row.ID == r.Row.ID && b.Client == r.Client && b.Server == base+suffix {
			return b
		}
	}
	return nil
}

// settingSuffix splits "tokenagent-p1" into "tokenagent" and "-p1" (a trailing "-p" and digits).
func settingSuffix(server string) (name, suffix string) {
	i := strings.LastIndex(server, "-p")
	if i <= 0 || i+2 == len(server) || strings.Trim(server[i+2:], "0123456789") != "" {
		return server, ""
	}
	return server[:i], server[i:]
}

// SideSVG plots latency by percentile of the rows named in ids, one line per row and server
// (servers: only those named, all when empty): a color per server and client, a dash per row.
// ghz reports percentiles up to p99, so the axis stops there, with the slowest call at the right.
func SideSVG(w io.Writer, res []SideResult, ids, servers []string, title string) {
	rep := &Report{Settings: Settings{Mode: "closed"}}
	o := svgOptions{xMax: 2.6}
	colors := map[string]string{}
	dashes := []string{"", "8 4", "2 3", "12 3 2 3"}
	for _, r := range res {
		who := r.Server + " (" + r.Client + ")"
		row := slices.Index(ids, r.Row.ID)
		if row < 0 || (len(servers) > 0 && !slices.Contains(servers, r.Server) && !slices.Contains(servers, who)) {
			continue
		}
		if _, ok := colors[who]; !ok {
			colors[who] = plotColors[len(colors)%len(plotColors)]
		}
		o.styles = append(o.styles, lineStyle{colors[who], dashes[row%len(dashes)]})
		rep.Targets = append(rep.Targets, TargetResult{
			Name:       fmt.Sprintf("%s, %s, %s", who, r.Row.Request, r.Row.Load),
			Throughput: r.Throughput, Latency: Percentiles{P50: r.P50, P90: r.P90, P99: r.P99}, Curve: r.Curve})
	}
	rep.svg(w, title, o)
}

func cmdGHZReport(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("ghz-report", `load ghz-report — the side-by-side table and plot from compare.sh's runs

Reads DIR/rows.tsv and DIR/runs (see bench/opaenvoy/compare.sh), prints the Markdown table, and
writes the latency-by-percentile plot of the --plot rows to --svg.`, stderr)
	var dir, svg, plot, servers, title, base string
	fs.StringVar(&dir, "dir", "", "compare.sh's output directory (required)")
	fs.StringVar(&base, "baseline", "opa-envoy", "the server every other is compared with, on its row")
	fs.StringVar(&svg, "svg", "", "write the plot here")
	fs.StringVar(&plot, "plot", "", "the row ids to plot, comma-separated")
	fs.StringVar(&servers, "plot-servers", "", `the servers to plot ("tokenagent" or "tokenagent (load)"), comma-separated; all when empty`)
	fs.StringVar(&title, "title", "ext_authz Check latency by percentile", "the plot's title")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if dir == "" {
		fmt.Fprintln(stderr, "load ghz-report: --dir is required")
		return errUsage
	}
	res, err := ReadSideBySide(dir)
	if err != nil {
		return err
	}
	SideMarkdown(stdout, res, base)
	if svg == "" {
		return nil
	}
	var b strings.Builder
	var only []string
	if servers != "" {
		only = strings.Split(servers, ",")
	}
	SideSVG(&b, res, strings.Split(plot, ","), only, title)
	return os.WriteFile(svg, []byte(b.String()), 0o644)
}

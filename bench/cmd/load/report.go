package main

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Report is the result of a run or a comparison, as written to result.json.
type Report struct {
	Tool     string         `json:"tool"`
	Started  time.Time      `json:"started"`
	Machine  Machine        `json:"machine"`
	Settings Settings       `json:"settings"`
	Mix      []ClassInfo    `json:"mix"`
	Targets  []TargetResult `json:"targets"`
	// Ratios compare the second target with the first (comparison mode).
	Ratios []Ratio `json:"ratios,omitempty"`
}

// Machine describes where the load ran. The client and a local target share its CPUs.
type Machine struct {
	CPUs         int        `json:"cpus"`
	CPUModel     string     `json:"cpu_model,omitempty"`
	GoVersion    string     `json:"go_version"`
	OS           string     `json:"os"`
	LoadAvgStart [3]float64 `json:"load_avg_start"`
	LoadAvgEnd   [3]float64 `json:"load_avg_end"`
}

// Settings are the load's parameters.
type Settings struct {
	Mode        string  `json:"mode"` // closed or open
	Concurrency int     `json:"concurrency"`
	Rate        float64 `json:"rate,omitempty"`
	Conns       int     `json:"conns"`
	Duration    string  `json:"duration"`
	Warmup      string  `json:"warmup"`
	Requests    int64   `json:"requests,omitempty"`
	Once        bool    `json:"once,omitempty"`
	Tokens      int     `json:"tokens"`
	Invalid     float64 `json:"invalid"`
	Timeout     string  `json:"timeout"`
	Slices      int     `json:"slices,omitempty"`
	Slice       string  `json:"slice,omitempty"`
}

// TargetResult is what one target did under the load.
type TargetResult struct {
	Name       string           `json:"name"`
	Addr       string           `json:"addr"`
	Seconds    float64          `json:"seconds"`
	Requests   int64            `json:"requests"`
	Throughput float64          `json:"throughput"`
	Latency    Percentiles      `json:"latency"`
	Curve      []CurvePoint     `json:"curve"`
	Allowed    map[string]int64 `json:"allowed"`
	Denied     map[string]int64 `json:"denied"`
	Errors     map[string]int64 `json:"errors"`
	Dropped    int64            `json:"dropped,omitempty"`
	Unexpected int64            `json:"unexpected"`
	Examples   []string         `json:"unexpected_examples,omitempty"`
	Classes    []ClassResult    `json:"classes"`
	Agent      *ProcResult      `json:"agent,omitempty"`
	Client     *ProcResult      `json:"client,omitempty"`
}

// ClassResult is the latency of one class of the mix.
type ClassResult struct {
	Name  string  `json:"name"`
	Count int64   `json:"count"`
	P50   float64 `json:"p50_us"`
	P99   float64 `json:"p99_us"`
	Max   float64 `json:"max_us"`
}

// ProcResult is a process's CPU use over the measured part and its memory.
type ProcResult struct {
	PID        int     `json:"pid,omitempty"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUCores is CPU seconds per second of the measured part (2.0: two cores busy).
	CPUCores      float64 `json:"cpu_cores"`
	CPUPerCheckUs float64 `json:"cpu_per_check_us"`
	RSSMiB        float64 `json:"rss_mib"`
	PeakRSSMiB    float64 `json:"peak_rss_mib"`
}

// Ratio compares one metric of target B with target A.
type Ratio struct {
	Metric string  `json:"metric"`
	A      float64 `json:"a"`
	B      float64 `json:"b"`
	BOverA float64 `json:"b_over_a"`
}

func newMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH,
		LoadAvgStart: loadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// targetResult summarises a target's stats over measured seconds.
func targetResult(t *Target, s *Stats, seconds float64, agent, client *ProcResult) TargetResult {
	r := TargetResult{Name: t.Name, Addr: t.Addr, Seconds: round(seconds, 3), Requests: s.Count(),
		Latency: PercentilesOf(s.Latency), Curve: Curve(s.Latency), Allowed: s.Allowed, Denied: s.Denied,
		Errors: s.Errors, Dropped: s.Dropped, Unexpected: s.Unexpected, Examples: s.Examples,
		Agent: agent, Client: client}
	if seconds > 0 {
		r.Throughput = round(float64(s.Count())/seconds, 1)
	}
	for name, h := range s.ByClass {
		r.Classes = append(r.Classes, ClassResult{Name: name, Count: h.TotalCount(),
			P50: micros(h.ValueAtPercentile(50)), P99: micros(h.ValueAtPercentile(99)), Max: micros(h.Max())})
	}
	sort.Slice(r.Classes, func(i, j int) bool { return r.Classes[i].Count > r.Classes[j].Count })
	for _, p := range []*ProcResult{agent, client} {
		if p != nil && seconds > 0 {
			p.CPUCores = round(p.CPUSeconds/seconds, 3)
			if n := s.Count() + s.ErrorCount(); n > 0 {
				p.CPUPerCheckUs = round(p.CPUSeconds/float64(n)*1e6, 2)
			}
		}
	}
	return r
}

// procResult is the difference between two samples of one process.
func procResult(pid int, before, after ProcSample) *ProcResult {
	return &ProcResult{PID: pid, CPUSeconds: round(after.CPUSeconds-before.CPUSeconds, 2),
		RSSMiB: round(float64(after.RSSKiB)/1024, 1), PeakRSSMiB: round(float64(after.PeakRSSKiB)/1024, 1)}
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

// ratios compares B with A on the headline metrics.
func ratios(a, b TargetResult) []Ratio {
	out := []Ratio{
		{Metric: "throughput (checks/s)", A: a.Throughput, B: b.Throughput},
		{Metric: "p50 (µs)", A: a.Latency.P50, B: b.Latency.P50},
		{Metric: "p90 (µs)", A: a.Latency.P90, B: b.Latency.P90},
		{Metric: "p99 (µs)", A: a.Latency.P99, B: b.Latency.P99},
		{Metric: "p99.9 (µs)", A: a.Latency.P999, B: b.Latency.P999},
		{Metric: "max (µs)", A: a.Latency.Max, B: b.Latency.Max},
	}
	if a.Agent != nil && b.Agent != nil {
		out = append(out,
			Ratio{Metric: "agent CPU per check (µs)", A: a.Agent.CPUPerCheckUs, B: b.Agent.CPUPerCheckUs},
			Ratio{Metric: "agent peak RSS (MiB)", A: a.Agent.PeakRSSMiB, B: b.Agent.PeakRSSMiB})
	}
	for i := range out {
		if out[i].A != 0 {
			out[i].BOverA = round(out[i].B/out[i].A, 3)
		}
	}
	return out
}

// WriteFiles writes result.json, report.md and latency.svg into dir.
func (r *Report) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	j, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "result.json"), append(j, '\n'), 0o644); err != nil {
		return err
	}
	var md strings.Builder
	r.Markdown(&md, "latency.svg")
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	var svg strings.Builder
	r.SVG(&svg)
	return os.WriteFile(filepath.Join(dir, "latency.svg"), []byte(svg.String()), 0o644)
}

// Markdown writes the report for a person: the headline table, the decisions, latency by
// class, the comparison, and the plot (svg, when not empty).
func (r *Report) Markdown(w io.Writer, svg string) {
	s := r.Settings
	fmt.Fprintf(w, "# Load test, %s\n\n", r.Started.UTC().Format("2006-01-02 15:04 UTC"))
	m := r.Machine
	cpu := ""
	if m.CPUModel != "" {
		cpu = " (" + m.CPUModel + ")"
	}
	fmt.Fprintf(w, "- Machine: %d CPUs%s, %s, %s; load average %.2f %.2f %.2f at the start, %.2f %.2f %.2f at the end.\n",
		m.CPUs, cpu, m.GoVersion, m.OS, m.LoadAvgStart[0], m.LoadAvgStart[1], m.LoadAvgStart[2],
		m.LoadAvgEnd[0], m.LoadAvgEnd[1], m.LoadAvgEnd[2])
	load := fmt.Sprintf("closed loop, %d workers", s.Concurrency)
	if s.Mode == "open" {
		load = fmt.Sprintf("open loop at %.0f checks/s (latency from each request's intended start), up to %d in flight", s.Rate, s.Concurrency)
	}
	fmt.Fprintf(w, "- Load: %s over %d gRPC connection(s); %s measured after a %s warm-up", load, s.Conns, s.Duration, s.Warmup)
	if s.Slices > 0 {
		fmt.Fprintf(w, "; targets alternated in %d slices of %s each", s.Slices, s.Slice)
	}
	fmt.Fprintf(w, "; per-call timeout %s.\n", s.Timeout)
	var mix []string
	invalid := 0
	for _, c := range r.Mix {
		switch {
		case strings.HasPrefix(c.Name, "invalid/"):
			invalid++
		case c.Distinct != s.Tokens:
			mix = append(mix, fmt.Sprintf("%s %.0f%% (%d distinct)", c.Name, 100*c.Share, c.Distinct))
		default:
			mix = append(mix, fmt.Sprintf("%s %.0f%%", c.Name, 100*c.Share))
		}
	}
	fmt.Fprintf(w, "- Mix: %s, invalid %.1f%% (%d variants); %d distinct requests per kind",
		strings.Join(mix, ", "), 100*s.Invalid, invalid, s.Tokens)
	if s.Once {
		fmt.Fprint(w, ", each sent once (every token seen for the first time)")
	}
	fmt.Fprint(w, ".\n\n")

	fmt.Fprintln(w, "| target | checks/s | p50 | p90 | p99 | p99.9 | max | errors | unexpected | agent CPU | agent CPU/check | agent peak RSS |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, t := range r.Targets {
		l := t.Latency
		cpu, per, rss := "–", "–", "–"
		if t.Agent != nil {
			cpu = fmt.Sprintf("%.2f cores", t.Agent.CPUCores)
			per = fmt.Sprintf("%.1f µs", t.Agent.CPUPerCheckUs)
			rss = fmt.Sprintf("%.1f MiB", t.Agent.PeakRSSMiB)
		}
		errs := fmt.Sprint(sum(t.Errors))
		if t.Dropped > 0 {
			errs += fmt.Sprintf(" (+%d dropped)", t.Dropped)
		}
		fmt.Fprintf(w, "| %s `%s` | %.0f | %s | %s | %s | %s | %s | %s | %d | %s | %s | %s |\n", t.Name, t.Addr,
			t.Throughput, fmtMicros(l.P50), fmtMicros(l.P90), fmtMicros(l.P99), fmtMicros(l.P999), fmtMicros(l.Max),
			errs, t.Unexpected, cpu, per, rss)
	}
	for _, t := range r.Targets {
		if t.Client != nil {
			fmt.Fprintf(w, "\nThe load generator itself used %.2f cores (%.1f µs CPU per check) while measuring %s.\n",
				t.Client.CPUCores, t.Client.CPUPerCheckUs, t.Name)
		}
		for _, e := range t.Examples {
			fmt.Fprintf(w, "\n- unexpected (%s): %s", t.Name, e)
		}
	}
	if len(r.Ratios) > 0 {
		fmt.Fprintf(w, "\n\n## %s / %s\n\n| metric | %s | %s | ratio |\n|---|---:|---:|---:|\n",
			r.Targets[1].Name, r.Targets[0].Name, r.Targets[0].Name, r.Targets[1].Name)
		for _, q := range r.Ratios {
			fmt.Fprintf(w, "| %s | %g | %g | %.3f |\n", q.Metric, q.A, q.B, q.BOverA)
		}
	}

	fmt.Fprint(w, "\n\n## Decisions\n\n| decision |")
	for _, t := range r.Targets {
		fmt.Fprintf(w, " %s |", t.Name)
	}
	fmt.Fprint(w, "\n|---|")
	for range r.Targets {
		fmt.Fprint(w, "---:|")
	}
	fmt.Fprintln(w)
	rows := func(label string, get func(TargetResult) map[string]int64) {
		keys := map[string]int64{}
		for _, t := range r.Targets {
			for k, v := range get(t) {
				keys[k] += v
			}
		}
		for _, k := range sortedKeys(keys) {
			fmt.Fprintf(w, "| %s %s |", label, k)
			for _, t := range r.Targets {
				fmt.Fprintf(w, " %d |", get(t)[k])
			}
			fmt.Fprintln(w)
		}
	}
	rows("allowed", func(t TargetResult) map[string]int64 { return t.Allowed })
	rows("denied", func(t TargetResult) map[string]int64 { return t.Denied })
	rows("gRPC error", func(t TargetResult) map[string]int64 { return t.Errors })

	for _, t := range r.Targets {
		fmt.Fprintf(w, "\n## Latency by class: %s\n\n| class | requests | p50 | p99 | max |\n|---|---:|---:|---:|---:|\n", t.Name)
		for _, c := range t.Classes {
			fmt.Fprintf(w, "| %s | %d | %s | %s | %s |\n", c.Name, c.Count, fmtMicros(c.P50), fmtMicros(c.P99), fmtMicros(c.Max))
		}
	}
	if svg != "" {
		fmt.Fprintf(w, "\n![latency by percentile](%s)\n", svg)
	}
}

// Series colours of the plot (colour-blind safe).
var plotColors = []string{"#0072b2", "#d55e00", "#009e73", "#cc79a7"}

// SVG writes the latency-by-percentile plot: percentiles on the 1/(1-p) log scale (0 % to
// 99.999 % and the max) across, latency on a log scale up, one line per target.
func (r *Report) SVG(w io.Writer) {
	title := fmt.Sprintf("ext_authz Check latency by percentile (%s loop", r.Settings.Mode)
	if r.Settings.Mode == "open" {
		title += fmt.Sprintf(", %.0f checks/s", r.Settings.Rate)
	}
	r.svg(w, title+")", svgOptions{})
}

// svgOptions change the plot of SVG: how far right the percentile axis goes (in decades of
// 1/(1-p), before the max at the right edge; 5.6 by default) and a color and dash per line.
type svgOptions struct {
	xMax   float64
	styles []lineStyle
}

type lineStyle struct{ color, dash string }

// svg draws the plot of SVG under title.
func (r *Report) svg(w io.Writer, title string, o svgOptions) {
	// The legend sits under the plot, a line per target.
	const (
		W, plotH                 = 860, 480
		left, right, top, bottom = 80, 30, 50, 60
	)
	H := plotH + 18*len(r.Targets) + 10
	pw, ph := float64(W-left-right), float64(plotH-top-bottom)
	xMax := 5.6 // decades of 1/(1-p); the max sits at the right edge
	if o.xMax > 0 {
		xMax = o.xMax
	}
	xOf := func(p float64) float64 {
		d := xMax
		if p < 100 {
			d = math.Min(xMax, math.Log10(1/(1-p/100)))
		}
		return float64(left) + d/xMax*pw
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, t := range r.Targets {
		for _, c := range t.Curve {
			if c.Micros > 0 {
				lo, hi = math.Min(lo, c.Micros), math.Max(hi, c.Micros)
			}
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 1, 1000
	}
	yLo, yHi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if yHi <= yLo {
		yHi = yLo + 1
	}
	yOf := func(us float64) float64 {
		v := math.Log10(math.Max(us, math.Pow(10, yLo)))
		return float64(top) + ph - (v-yLo)/(yHi-yLo)*ph
	}
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
	fmt.Fprintf(w, `<rect width="%d" height="%d" fill="white"/>`+"\n", W, H)
	fmt.Fprintf(w, `<text x="%d" y="28" font-size="16" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))
	// Grid and axes.
	for d := yLo; d <= yHi; d++ {
		for _, m := range []float64{1, 2, 5} {
			us := m * math.Pow(10, d)
			if d == yHi && m > 1 {
				break
			}
			y := yOf(us)
			stroke := "#eee"
			if m == 1 {
				stroke = "#ccc"
				fmt.Fprintf(w, `<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", left-8, y, decadeLabel(us))
			}
			fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", left, y, W-right, y, stroke)
		}
	}
	for _, tk := range []struct {
		p     float64
		label string
	}{{0, "0%"}, {50, "50%"}, {90, "90%"}, {99, "99%"}, {99.9, "99.9%"}, {99.99, "99.99%"}, {99.999, "99.999%"}, {100, "max"}} {
		if tk.p < 100 && math.Log10(1/(1-tk.p/100)) > xMax-0.3 {
			continue // no room before the max
		}
		x := xOf(tk.p)
		fmt.Fprintf(w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ccc"/>`+"\n", x, top, x, plotH-bottom)
		fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, plotH-bottom+18, tk.label)
	}
	fmt.Fprintf(w, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#333"/>`+"\n", left, top, pw, ph)
	fmt.Fprintf(w, `<text x="%.0f" y="%d" text-anchor="middle">percentile</text>`+"\n", float64(left)+pw/2, plotH-bottom+42)
	fmt.Fprintf(w, `<text transform="translate(18 %.0f) rotate(-90)" text-anchor="middle">latency</text>`+"\n", float64(top)+ph/2)
	// One line per target, with its legend entry.
	for i, t := range r.Targets {
		color, dash := plotColors[i%len(plotColors)], ""
		if i < len(o.styles) {
			color, dash = o.styles[i].color, o.styles[i].dash
		}
		if dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, dash)
		}
		var pts []string
		for _, c := range t.Curve {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", xOf(c.Percentile), yOf(c.Micros)))
		}
		if len(pts) > 0 {
			fmt.Fprintf(w, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", color, dash, strings.Join(pts, " "))
		}
		ly := plotH + 18*i
		fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"%s/>`+"\n", left+12, ly, left+36, ly, color, dash)
		label := fmt.Sprintf("%s: %.0f checks/s, p50 %s, p99 %s", t.Name, t.Throughput,
			fmtMicros(t.Latency.P50), fmtMicros(t.Latency.P99))
		if t.Latency.P999 > 0 {
			label += ", p99.9 " + fmtMicros(t.Latency.P999)
		}
		fmt.Fprintf(w, `<text x="%d" y="%d" dominant-baseline="middle">%s</text>`+"\n", left+42, ly, html.EscapeString(label))
	}
	fmt.Fprintln(w, "</svg>")
}

// decadeLabel names a power of ten of microseconds: "1µs", "100µs", "10ms", "1s".
func decadeLabel(us float64) string {
	switch {
	case us < 1000:
		return fmt.Sprintf("%.0fµs", us)
	case us < 1e6:
		return fmt.Sprintf("%.0fms", us/1000)
	}
	return fmt.Sprintf("%.0fs", us/1e6)
}

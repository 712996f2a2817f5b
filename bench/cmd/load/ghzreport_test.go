package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeSide writes a compare.sh output directory: rows.tsv and the given run files.
func writeSide(t *testing.T, rows string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "runs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rows.tsv"), []byte(rows), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, "runs", name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// ghzJSON is ghz's -O json output for count answered calls, p50 µs, status OK for ok of them,
// and two calls cut at the end of the run (not counted).
func ghzJSON(count, ok int, p50us float64) string {
	return `{"count":` + itoa(count+2) + `,"total":1e10,"rps":` + itoa(count/10) + `,"fastest":50000,"slowest":9000000,
	"latencyDistribution":[{"percentage":10,"latency":40000},{"percentage":50,"latency":` + ftoa(p50us*1e3) + `},
	{"percentage":90,"latency":800000},{"percentage":99,"latency":2000000}],
	"statusCodeDistribution":{"OK":` + itoa(ok) + `,"Unavailable":` + itoa(count-ok) + `,"Canceled":2},
	"errorDistribution":{"rpc error: code = Canceled desc = grpc: the client connection is closing":1,
	"rpc error: code = Unavailable desc = error reading from server: read tcp: use of closed network connection":1}}`
}

func itoa(n int) string     { b, _ := json.Marshal(n); return string(b) }
func ftoa(f float64) string { b, _ := json.Marshal(f); return string(b) }

func TestSideBySideReport(t *testing.T) {
	loadResult, err := json.Marshal(Report{Targets: []TargetResult{{Requests: 40000, Throughput: 4000,
		Latency: Percentiles{P50: 100, P90: 150, P99: 300}, Errors: map[string]int64{"deadline": 3},
		Curve: []CurvePoint{{0, 50}, {50, 100}, {99, 300}}, Agent: &ProcResult{CPUSeconds: 0.8, PeakRSSMiB: 30}}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := writeSide(t, "# comment\nrs256-c16\tRS256 JWT\tconcurrency 16\nauth-c16\tAuth Token\tconcurrency 16\n", map[string]string{
		"rs256-c16.opa-envoy.1.json":              ghzJSON(10000, 10000, 2000),
		"rs256-c16.opa-envoy.1.proc":              "2.000 102400",
		"rs256-c16.opa-envoy.2.json":              ghzJSON(10000, 9990, 3000),
		"rs256-c16.opa-envoy.2.proc":              "2.200 122880",
		"rs256-c16.tokenagent.1.json":             ghzJSON(20000, 20000, 900),
		"rs256-c16.tokenagent.1.proc":             "0.400 40960",
		"rs256-c16.tokenagent+load.1.result.json": string(loadResult),
		"rs256-c16.opa-envoy-p1.1.json":           ghzJSON(10000, 10000, 2000),
		"rs256-c16.opa-envoy-p1.1.proc":           "1.000 102400",
		"rs256-c16.tokenagent-p1.1.json":          ghzJSON(10000, 10000, 2000),
		"rs256-c16.tokenagent-p1.1.proc":          "0.050 102400",
		"rs256-c16.tokenagent.1.unrelated.txt":    "ignored",
		// A row OPA-Envoy does not run: no ratio for any server on it.
		"auth-c16.tokenagent.1.json":        ghzJSON(10000, 10000, 900),
		"auth-c16.tokenagent.1.proc":        "0.200 40960",
		"auth-c16.tokenagent-grpcgo.1.json": ghzJSON(10000, 10000, 900),
		"auth-c16.tokenagent-grpcgo.1.proc": "0.500 40960",
	})
	res, err := ReadSideBySide(dir)
	if err != nil {
		t.Fatal(err)
	}
	var servers []string
	for _, r := range res {
		servers = append(servers, r.Server+"/"+r.Client)
	}
	if got, want := strings.Join(servers, " "), "opa-envoy/ghz opa-envoy-p1/ghz tokenagent/ghz tokenagent-p1/ghz tokenagent/load tokenagent/ghz tokenagent-grpcgo/ghz"; got != want {
		t.Fatalf("servers %q, want %q", got, want)
	}
	opa, ta, own := res[0], res[2], res[4]
	tests := []struct {
		name      string
		got, want any
	}{
		{"opa server", opa.Server, "opa-envoy"},
		{"opa runs", opa.Runs, 2},
		{"opa count", opa.Count, int64(20000)},
		{"opa failed", opa.Failed, int64(10)},
		{"opa CPU per check (sum over runs)", opa.CPUPerUs, 4.2 / 20000 * 1e6},
		{"opa p50 (median run, the lower of two)", opa.P50, 2000.0},
		{"opa peak RSS", opa.PeakRSSMiB, 120.0},
		{"tokenagent CPU per check", ta.CPUPerUs, 20.0},
		{"tokenagent client", ta.Client, "ghz"},
		{"own generator server", own.Server, "tokenagent"},
		{"own generator client", own.Client, "load"},
		{"own generator CPU per check", own.CPUPerUs, 20.0},
		{"own generator failed", own.Failed, int64(3)},
		{"own generator p99", own.P99, 300.0},
		{"curve ends at the slowest", opa.Curve[len(opa.Curve)-1], CurvePoint{100, 9000}},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	var md strings.Builder
	SideMarkdown(&md, res, "opa-envoy")
	if !strings.Contains(md.String(), "| RS256 JWT | concurrency 16 | tokenagent (ghz) | 1 | 20000 | 0 |") ||
		!strings.Contains(md.String(), "| 20.0 µs | 0.10× |") || !strings.Contains(md.String(), "| 5.0 µs | 0.05× |") ||
		!strings.Contains(md.String(), "| 20.0 µs | — |") ||
		!strings.Contains(md.String(), "| Auth Token | concurrency 16 | tokenagent (ghz) | 1 | 10000 | 0 | 1000 | 900µs | 800µs | 2.00ms | 20.0 µs | — |") ||
		!strings.Contains(md.String(), "| Auth Token | concurrency 16 | tokenagent-grpcgo (ghz) | 1 | 10000 | 0 | 1000 | 900µs | 800µs | 2.00ms | 50.0 µs | — |") ||
		!strings.Contains(md.String(), "| vs opa-envoy |") {
		t.Errorf("table:\n%s", md.String())
	}
	var svg strings.Builder
	SideSVG(&svg, res, []string{"rs256-c16"}, nil, "title & more")
	if s := svg.String(); !strings.HasPrefix(s, "<svg") || strings.Count(s, "<polyline") != 5 || !strings.Contains(s, "title &amp; more") {
		t.Errorf("svg: %d polylines, title escaped: %v", strings.Count(s, "<polyline"), strings.Contains(s, "&amp;"))
	}
	svg.Reset()
	SideSVG(&svg, res, []string{"rs256-c16"}, []string{"opa-envoy", "tokenagent (load)"}, "t")
	if s := svg.String(); strings.Count(s, "<polyline") != 2 || !strings.Contains(s, "tokenagent (load), RS256 JWT") {
		t.Errorf("svg of two servers: %d polylines:\n%s", strings.Count(s, "<polyline"), s)
	}
}

func TestSideBySideReportErrors(t *testing.T) {
	row := "r1\tanon\tc1\n"
	tests := []struct {
		name  string
		rows  string
		files map[string]string
		want  string
	}{
		{"no rows", "# only a comment\n", nil, "no rows"},
		{"short row", "r1\tanon\n", nil, "line 1"},
		{"id with a dot", "r.1\tanon\tc1\n", nil, "line 1"},
		{"no runs", row, nil, "no runs"},
		{"missing proc", row, map[string]string{"r1.opa.1.json": ghzJSON(10, 10, 1)}, ".proc"},
		{"bad proc", row, map[string]string{"r1.opa.1.json": ghzJSON(10, 10, 1), "r1.opa.1.proc": "1.0"}, "CPU_SECONDS"},
		{"negative proc", row, map[string]string{"r1.opa.1.json": ghzJSON(10, 10, 1), "r1.opa.1.proc": "-1 5"}, "non-negative"},
		{"bad json", row, map[string]string{"r1.opa.1.json": "{", "r1.opa.1.proc": "1 1"}, "r1.opa.1.json"},
		{"only cut calls", row, map[string]string{"r1.opa.1.json": `{"count":2,"statusCodeDistribution":{"Unavailable":2},"errorDistribution":{"x: use of closed network connection":2}}`, "r1.opa.1.proc": "1 1"}, "no calls"},
		{"no calls", row, map[string]string{"r1.opa.1.json": ghzJSON(0, 0, 1), "r1.opa.1.proc": "1 1"}, "no calls"},
		{"load result without pid", row, map[string]string{"r1.ta+load.1.result.json": `{"targets":[{"requests":5}]}`}, "--pid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadSideBySide(writeSide(t, tc.rows, tc.files))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want one naming %q", err, tc.want)
			}
		})
	}
}

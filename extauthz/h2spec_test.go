package extauthz

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/extauthz/internal/h2/h2test"
)

// H2SpecVersion is the h2spec (the HTTP/2 conformance suite) the tests run; .ci/test installs
// it with go install github.com/summerwind/h2spec/cmd/h2spec@H2SpecVersion.
const H2SpecVersion = "v2.2.1+incompatible"

// TestH2Spec runs h2spec against gRPC-Go's server and against the transport, in plaintext and
// over TLS: the transport must pass every case gRPC-Go's server passes, and every case at all
// but those in knownH2SpecFailures (each with why it is harmless; extauthz/README.md lists them).
func TestH2Spec(t *testing.T) {
	bin := h2specBinary(t)
	s := NewServer(okChecker{})
	gs := grpc.NewServer(ServerOptions()...)
	s.Register(gs)
	cert, _ := h2test.SelfSigned(t)
	results := map[string]map[string]bool{}
	for _, target := range []string{"grpc-go", "tokenagent", "tokenagent-tls"} {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(lis.Addr().(*net.TCPAddr).Port), "-o", "1"}
		switch target {
		case "grpc-go":
			go func() { _ = gs.Serve(lis) }()
		case "tokenagent":
			tr := s.NewTransport(TransportOptions{Fallback: gs})
			go func() { _ = tr.Serve(lis) }()
			t.Cleanup(tr.Close)
		case "tokenagent-tls":
			tr := s.NewTransport(TransportOptions{Fallback: gs, TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
			go func() { _ = tr.Serve(lis) }()
			t.Cleanup(tr.Close)
			args = append(args, "-t", "-k")
		}
		report := filepath.Join(t.TempDir(), target+".xml")
		out, err := exec.Command(bin, append(args, "-j", report)...).CombinedOutput()
		if _, ok := err.(*exec.ExitError); err != nil && !ok { // a failing case exits 1
			t.Fatalf("h2spec: %v\n%s", err, out)
		}
		results[target] = readH2SpecReport(t, report)
		if target == "grpc-go" {
			gs.Stop()
			gs = grpc.NewServer(ServerOptions()...)
			s.Register(gs)
		}
	}
	summary := func(r map[string]bool) string {
		pass := 0
		for _, ok := range r {
			if ok {
				pass++
			}
		}
		return strconv.Itoa(pass) + "/" + strconv.Itoa(len(r))
	}
	t.Logf("h2spec %s passed: gRPC-Go %s, tokenagent %s, tokenagent over TLS %s", H2SpecVersion,
		summary(results["grpc-go"]), summary(results["tokenagent"]), summary(results["tokenagent-tls"]))
	if len(results["tokenagent"]) < 140 {
		t.Fatalf("h2spec ran %d cases; want its 145", len(results["tokenagent"]))
	}
	for _, target := range []string{"tokenagent", "tokenagent-tls"} {
		var failed []string
		for name, ok := range results[target] {
			if ok {
				continue
			}
			if results["grpc-go"][name] {
				t.Errorf("%s fails %s, which gRPC-Go's server passes", target, name)
			}
			if _, known := knownH2SpecFailures[name]; !known {
				failed = append(failed, name)
			}
		}
		sort.Strings(failed)
		if len(failed) > 0 {
			t.Errorf("%s fails h2spec cases not listed as known (and harmless): %s", target, strings.Join(failed, "; "))
		}
	}
}

// knownH2SpecFailures are the h2spec cases the transport fails, each with why that is harmless.
// None today.
var knownH2SpecFailures = map[string]string{}

// h2specBinary finds h2spec on PATH or in GOPATH/bin.
func h2specBinary(t *testing.T) string {
	if p, err := exec.LookPath("h2spec"); err == nil {
		return p
	}
	if gopath, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "h2spec")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("no h2spec binary: go install github.com/summerwind/h2spec/cmd/h2spec@%s (.ci/test does)", H2SpecVersion)
	return ""
}

// readH2SpecReport reads h2spec's JUnit report: case name → passed.
func readH2SpecReport(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Suites []struct {
			Cases []struct {
				Package   string    `xml:"package,attr"`
				ClassName string    `xml:"classname,attr"`
				Failure   *struct{} `xml:"failure"`
				Skipped   *struct{} `xml:"skipped"`
				Error     *struct{} `xml:"error"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &r); err != nil {
		t.Fatalf("h2spec report: %v", err)
	}
	out := map[string]bool{}
	for _, s := range r.Suites {
		for _, c := range s.Cases {
			out[c.Package+" "+c.ClassName] = c.Failure == nil && c.Skipped == nil && c.Error == nil
		}
	}
	return out
}

type okChecker struct{}

func (okChecker) Check(context.Context, *agent.Request) *agent.Decision {
	return &agent.Decision{Allowed: true, Site: "docs", Status: 200}
}

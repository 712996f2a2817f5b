package extauthz

import (
	"context"

	"net"
	"os"
	"os/exec"
	"testing"

	"github.com/tokenagent/tokenagent/agent"

	"google.golang.org/grpc"
)

func TestH2SpecManual(t *testing.T) {
	if os.Getenv("H2SPEC_MANUAL") == "" {
		t.Skip()
	}
	s := NewServer(okChecker{})
	gs := grpc.NewServer(ServerOptions()...)
	s.Register(gs)
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	if os.Getenv("H2SPEC_MANUAL") == "grpc" {
		go gs.Serve(lis)
		defer gs.Stop()
	} else {
		tr := s.NewTransport(TransportOptions{Fallback: gs})
		go tr.Serve(lis)
		defer tr.Close()
	}
	port := lis.Addr().(*net.TCPAddr).Port
	args := []string{"-p", itoa(port), "-o", "1", "-j", "/tmp/h2spec-" + os.Getenv("H2SPEC_MANUAL") + ".xml"}
	if sp := os.Getenv("H2SPEC_SPEC"); sp != "" {
		args = append(args, "-v", sp)
	}
	out, _ := exec.Command(os.Getenv("HOME")+"/go/bin/h2spec", args...).CombinedOutput()
	os.WriteFile("/tmp/h2spec-"+os.Getenv("H2SPEC_MANUAL")+".txt", out, 0o644)
}

func itoa(n int) string {
	return string(rune('0'+n/10000%10)) + string(rune('0'+n/1000%10)) + string(rune('0'+n/100%10)) + string(rune('0'+n/10%10)) + string(rune('0'+n%10))
}

type okChecker struct{}

func (okChecker) Check(context.Context, *agent.Request) *agent.Decision {
	return &agent.Decision{Allowed: true, Site: "docs", Status: 200}
}

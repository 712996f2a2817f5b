package h2

import (
	"crypto/tls"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/tokenagent/tokenagent/extauthz/internal/h2/h2test"
)

// Over TLS, ALPN h2 (or no ALPN, as a client with prior knowledge) is served; a client that
// offers only another protocol is refused in the handshake.
func TestTLS(t *testing.T) {
	cert, pool := h2test.SelfSigned(t)
	ts := startServer(t, Limits{}, func(o *Options) {
		o.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12}
	})
	for _, tc := range []struct {
		name   string
		protos []string
		ok     bool
	}{
		{"ALPN h2", []string{"h2"}, true},
		{"no ALPN", nil, true},
		{"ALPN http/1.1 only", []string{"http/1.1"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := tls.Dial("tcp", ts.addr, &tls.Config{RootCAs: pool, NextProtos: tc.protos, MinVersion: tls.VersionTLS12})
			if !tc.ok {
				if err == nil {
					// The refusal may come after the client's side of the handshake.
					nc.SetDeadline(time.Now().Add(10 * time.Second))
					_, _ = nc.Write([]byte(http2.ClientPreface))
					if _, err = nc.Read(make([]byte, 1)); err == nil {
						t.Fatal("a client without h2 was served")
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			p := h2test.DialConn(t, nc)
			p.Call(1, echoPath, []byte("over tls"))
			got, _ := p.Answers(1)
			if string(got[1].Message()) != "over tls" {
				t.Fatalf("%+v", got[1])
			}
		})
	}
}

package daemon_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/config"
)

// tlsConfigYAML serves both listeners and the HTTP front with TLS; with mtls, clients need a
// certificate of the CA.
func tlsConfigYAML(mtls bool) string {
	ca := ""
	if mtls {
		ca = ", client_ca_file: ca.crt"
	}
	return `
keys: {source: file, file: keys.yaml}
authz_http_addr: 127.0.0.1:0
grpc_tls: {cert_file: tls.crt, key_file: tls.key` + ca + `}
http_tls: {cert_file: tls.crt, key_file: tls.key` + ca + `}
sites:
  - id: docs
    hosts: [docs.example.com]
    routes:
      - {methods: [POST], path: "/@api/deki/pages/*", require: user}
`
}

// tlsWorld is a daemon serving TLS and what its clients hold.
type tlsWorld struct {
	e      *daemontest.Env
	ca     *daemontest.CA
	client tls.Certificate // signed by ca, for mutual TLS
}

func startTLS(t *testing.T, mtls bool, opts daemon.Options) *tlsWorld {
	t.Helper()
	w := &tlsWorld{ca: daemontest.NewCA(t, "agents CA")}
	cert, key := w.ca.Issue(t, "agent", false)
	ccert, ckey := w.ca.Issue(t, "envoy", true)
	var err error
	if w.client, err = tls.X509KeyPair(ccert, ckey); err != nil {
		t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	w.e = daemontest.Start(t, tlsConfigYAML(mtls), daemontest.Options{
		Files: map[string]string{"keys.yaml": keysYAML(), "tls.crt": string(cert), "tls.key": string(key),
			"ca.crt": string(w.ca.PEM())},
		Daemon:    opts,
		ClientTLS: w.clientTLS(),
	})
	return w
}

// clientTLS trusts the CA and presents the client certificate.
func (w *tlsWorld) clientTLS() *tls.Config {
	return &tls.Config{RootCAs: w.ca.Pool(), Certificates: []tls.Certificate{w.client}, MinVersion: tls.VersionTLS12}
}

// rotate issues the agent a new pair and writes it over the old one, as cert-manager does.
func (w *tlsWorld) rotate(t *testing.T) {
	t.Helper()
	cert, key := w.ca.Issue(t, "agent", false)
	replaceFile(t, filepath.Join(w.e.Dir, "tls.crt"), cert)
	replaceFile(t, filepath.Join(w.e.Dir, "tls.key"), key)
}

func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path+".new", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// serial is the serial number of the certificate a new handshake with addr gets.
func serial(t *testing.T, addr string, cfg *tls.Config) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("handshake with %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// checkWith sends one check over a new connection with creds; it returns the RPC's error.
func checkWith(t *testing.T, addr string, creds credentials.TransportCredentials) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = authv3.NewAuthorizationClient(conn).Check(ctx, daemontest.CheckRequest("GET", "docs.example.com", "/", nil))
	return err
}

// With grpc_tls and http_tls every listener speaks TLS 1.2 or later, and with client_ca_file
// only clients with a certificate of that CA get through the handshake (SPEC §8).
func TestTLSListeners(t *testing.T) {
	w := startTLS(t, true, daemon.Options{})
	e := w.e
	if r := e.Check(t, "GET", "docs.example.com", "/", nil); daemontest.Reason(r) != "allowed" {
		t.Fatalf("a check over mutual TLS: %s", daemontest.Reason(r))
	}
	if code, _ := e.Readyz(t); code != 200 {
		t.Fatalf("/readyz over TLS: %d", code)
	}
	front, err := e.HTTPClient.Get("https://" + e.D.AuthzHTTPAddr() + "/")
	if err != nil {
		t.Fatalf("the HTTP front over TLS: %v", err)
	}
	front.Body.Close()
	if front.StatusCode != 404 { // no Host of a site: unknown_site
		t.Fatalf("the HTTP front answered %d", front.StatusCode)
	}

	other := daemontest.NewCA(t, "another CA")
	oc, ok := other.Issue(t, "intruder", true)
	intruder, err := tls.X509KeyPair(oc, ok)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  *tls.Config // nil: plaintext
	}{
		{"plaintext", nil},
		{"no client certificate", &tls.Config{RootCAs: w.ca.Pool()}},
		{"a certificate of another CA", &tls.Config{RootCAs: w.ca.Pool(), Certificates: []tls.Certificate{intruder}}},
		{"TLS 1.1", &tls.Config{RootCAs: w.ca.Pool(), Certificates: []tls.Certificate{w.client}, MaxVersion: tls.VersionTLS11}},
	} {
		t.Run("gRPC refuses "+tc.name, func(t *testing.T) {
			creds := insecure.NewCredentials()
			if tc.cfg != nil {
				creds = credentials.NewTLS(tc.cfg)
			}
			if err := checkWith(t, e.D.GRPCAddr(), creds); err == nil {
				t.Fatal("the check went through")
			}
		})
		if tc.cfg == nil {
			continue
		}
		t.Run("HTTP refuses "+tc.name, func(t *testing.T) {
			c, err := tls.Dial("tcp", e.D.HTTPAddr(), tc.cfg)
			if err == nil {
				// TLS 1.3: the server checks the client's certificate after the client's
				// handshake ends, so its refusal arrives as the first read.
				_, err = c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
				if err == nil {
					_, err = c.Read(make([]byte, 1))
				}
				c.Close()
			}
			if err == nil {
				t.Fatal("the handshake went through")
			}
		})
	}
}

// A renewed pair written over the old files is served to new handshakes, while a connection
// made before keeps working: not one check fails during the rotation (SPEC §8).
func TestTLSRotationUnderLoad(t *testing.T) {
	w := startTLS(t, true, daemon.Options{CertPoll: 10 * time.Millisecond})
	e := w.e
	before := serial(t, e.D.GRPCAddr(), w.clientTLS())

	var failures atomic.Int64
	var sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				r, err := e.Client.Check(ctx, daemontest.CheckRequest("GET", "docs.example.com", "/", nil))
				cancel()
				sent.Add(1)
				if err != nil || r.GetOkResponse() == nil {
					failures.Add(1)
				}
			}
		})
	}
	daemontest.Eventually(t, "checks to flow", func() bool { return sent.Load() > 50 })
	w.rotate(t)
	daemontest.Eventually(t, "new handshakes to get the renewed certificate", func() bool {
		return serial(t, e.D.GRPCAddr(), w.clientTLS()) != before
	})
	atRotation := sent.Load()
	daemontest.Eventually(t, "checks to flow after the rotation", func() bool { return sent.Load() > atRotation+50 })
	close(stop)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of %d checks failed during the rotation", n, sent.Load())
	}
	if err := checkWith(t, e.D.GRPCAddr(), credentials.NewTLS(w.clientTLS())); err != nil {
		t.Fatalf("a new connection after the rotation: %v", err)
	}
	if got := serial(t, e.D.HTTPAddr(), w.clientTLS()); got == before {
		t.Fatal("the HTTP listener still serves the old certificate")
	}
}

// A bad new pair (here a certificate with another pair's key, a renewal caught half-written)
// keeps the old pair serving and is reported in /readyz; a good pair clears the report.
func TestTLSBadPairKeepsServing(t *testing.T) {
	w := startTLS(t, false, daemon.Options{CertPoll: 10 * time.Millisecond})
	e := w.e
	before := serial(t, e.D.GRPCAddr(), w.clientTLS())
	cert, _ := w.ca.Issue(t, "agent", false)
	replaceFile(t, filepath.Join(e.Dir, "tls.crt"), cert)
	refused := func() bool {
		_, r := e.Readyz(t)
		for _, warn := range r.Warnings {
			if strings.Contains(warn, "TLS certificate change refused") {
				return true
			}
		}
		return false
	}
	daemontest.Eventually(t, "/readyz to report the refused pair", refused)
	if code, r := e.Readyz(t); code != 200 || !r.Ready {
		t.Fatalf("a refused renewal made the agent unready: %d", code)
	}
	if got := serial(t, e.D.GRPCAddr(), w.clientTLS()); got != before {
		t.Fatalf("a bad pair was served: serial %s, want %s", got, before)
	}
	if r := e.Check(t, "GET", "docs.example.com", "/", nil); daemontest.Reason(r) != "allowed" {
		t.Fatalf("checks after a refused renewal: %s", daemontest.Reason(r))
	}
	w.rotate(t)
	daemontest.Eventually(t, "a good pair to clear the report", func() bool { return !refused() })
	if got := serial(t, e.D.GRPCAddr(), w.clientTLS()); got == before {
		t.Fatal("the good pair is not served")
	}
}

// Bad paths or an unreadable pair stop the start-up with an error naming the setting, before
// anything listens.
func TestTLSStartupErrors(t *testing.T) {
	ca := daemontest.NewCA(t, "ca")
	cert, key := ca.Issue(t, "agent", false)
	_, otherKey := ca.Issue(t, "agent", false)
	for _, tc := range []struct {
		name, tls string
		files     map[string]string
		want      string
	}{
		{"missing cert", "grpc_tls: {cert_file: none.crt, key_file: tls.key}", nil, "grpc_tls"},
		{"no key_file", "grpc_tls: {cert_file: tls.crt}", nil, "grpc_tls.key_file"},
		{"mismatched pair", "http_tls: {cert_file: tls.crt, key_file: other.key}", map[string]string{"other.key": string(otherKey)}, "http_tls"},
		{"missing client CA", "grpc_tls: {cert_file: tls.crt, key_file: tls.key, client_ca_file: none.crt}", nil, "client_ca_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			files := map[string]string{"keys.yaml": keysYAML(), "tls.crt": string(cert), "tls.key": string(key)}
			for k, v := range tc.files {
				files[k] = v
			}
			for name, body := range files {
				daemontest.WriteFile(t, filepath.Join(dir, name), body)
			}
			path := filepath.Join(dir, "tokenagent.yaml")
			daemontest.WriteFile(t, path, "keys: {source: file, file: keys.yaml}\n"+tc.tls+"\nsites: [{id: docs, hosts: [docs.example.com]}]\n")
			cfg, err := config.Load(path)
			if err == nil {
				var d *daemon.Daemon
				d, err = daemon.New(context.Background(), cfg, daemon.Options{Logger: slog.New(slog.DiscardHandler)})
				if err == nil {
					d.Close()
				}
			}
			if err == nil {
				t.Fatal("the daemon started")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q: want one line naming %s", err, tc.want)
			}
		})
	}
}

// listServices asks the daemon's reflection service for its services.
func listServices(e *daemontest.Env) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := grpc_reflection_v1.NewServerReflectionClient(e.Conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	// Send reports io.EOF when the server already ended the stream; Recv has its status.
	if err := stream.Send(&grpc_reflection_v1.ServerReflectionRequest{
		MessageRequest: &grpc_reflection_v1.ServerReflectionRequest_ListServices{}}); err != nil && err != io.EOF {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names, nil
}

// grpc_reflection: true serves the reflection service (grpcurl, ghz); it is off by default.
func TestGRPCReflection(t *testing.T) {
	quiet := daemon.Options{Logger: slog.New(slog.DiscardHandler)}
	files := map[string]string{"keys.yaml": keysYAML()}
	on := daemontest.Start(t, "grpc_reflection: true\n"+configYAML, daemontest.Options{Files: files, Daemon: quiet})
	names, err := listServices(on)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(names, " "), "envoy.service.auth.v3.Authorization") {
		t.Fatalf("reflection lists %v", names)
	}
	off := daemontest.Start(t, configYAML, daemontest.Options{Files: files, Daemon: quiet})
	if _, err := listServices(off); status.Code(err) != codes.Unimplemented {
		t.Fatalf("reflection without grpc_reflection: %v, want Unimplemented", err)
	}
}

// A reload that changes start-up settings (listeners, TLS, reflection, tracing, replay store)
// keeps the running ones, says which in the log, and applies the rest of the file.
func TestReloadKeepsStartupSettings(t *testing.T) {
	e := daemontest.Start(t, configYAML, daemontest.Options{Files: map[string]string{"keys.yaml": keysYAML()}})
	daemontest.WriteFile(t, e.ConfigPath, "grpc_reflection: true\ntracing: {otlp_endpoint: \"127.0.0.1:1\", insecure: true}\n"+
		configYAML+"      - {path: /private, require: authenticated}\n")
	if err := e.D.Reload(e.ConfigPath); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.Logs.String(), "next restart") || !strings.Contains(e.Logs.String(), "grpc_reflection") ||
		!strings.Contains(e.Logs.String(), "tracing") {
		t.Errorf("the log does not name the settings kept:\n%s", e.Logs.String())
	}
	if _, err := listServices(e); status.Code(err) != codes.Unimplemented {
		t.Errorf("reflection turned on by a reload: %v", err)
	}
	if r := daemontest.Reason(e.Check(t, "GET", "docs.example.com", "/private", nil)); r != "authentication_required" {
		t.Errorf("the reloaded route: %s", r)
	}
}

package examples_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/config"
)

// upstreamTLS returns the UpstreamTlsContext of a bootstrap's cluster.
func upstreamTLS(t *testing.T, p envoyParts, cluster string) *tlsv3.UpstreamTlsContext {
	t.Helper()
	c := p.clusters[cluster]
	ts := c.GetTransportSocket()
	if ts.GetName() != "envoy.transport_sockets.tls" {
		t.Fatalf("cluster %s has no TLS transport socket", cluster)
	}
	u := &tlsv3.UpstreamTlsContext{}
	unpack(t, ts.GetTypedConfig(), u)
	return u
}

// envoyClientTLS builds the TLS client Envoy is configured to be by u: the client certificate,
// the trusted CA, the SNI, ALPN, the minimum version and the subject-alt-name match. files maps
// the config's file names to where the test wrote them.
func envoyClientTLS(t *testing.T, u *tlsv3.UpstreamTlsContext, files func(string) string) *tls.Config {
	t.Helper()
	ctc := u.GetCommonTlsContext()
	if len(ctc.GetTlsCertificates()) != 1 {
		t.Fatalf("want one client certificate, have %d", len(ctc.GetTlsCertificates()))
	}
	tc := ctc.GetTlsCertificates()[0]
	pair, err := tls.LoadX509KeyPair(files(tc.GetCertificateChain().GetFilename()), files(tc.GetPrivateKey().GetFilename()))
	if err != nil {
		t.Fatalf("Envoy's client certificate: %v", err)
	}
	vc := ctc.GetValidationContext()
	caPEM, err := os.ReadFile(files(vc.GetTrustedCa().GetFilename()))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("trusted_ca holds no certificate")
	}
	if v := ctc.GetTlsParams().GetTlsMinimumProtocolVersion(); v != tlsv3.TlsParameters_TLSv1_2 {
		t.Errorf("tls_minimum_protocol_version = %v, want TLSv1_2", v)
	}
	if !slices.Equal(ctc.GetAlpnProtocols(), []string{"h2"}) {
		t.Errorf("alpn_protocols = %v, want [h2] (gRPC)", ctc.GetAlpnProtocols())
	}
	var sans []string
	for _, m := range vc.GetMatchTypedSubjectAltNames() {
		if m.GetSanType() != tlsv3.SubjectAltNameMatcher_DNS || m.GetMatcher().GetExact() == "" {
			t.Fatalf("SAN matcher %v: want an exact DNS name", m)
		}
		sans = append(sans, m.GetMatcher().GetExact())
	}
	if len(sans) == 0 {
		t.Fatal("Envoy accepts any certificate the CA signed: no SAN matcher")
	}
	return &tls.Config{
		Certificates: []tls.Certificate{pair}, RootCAs: roots, ServerName: u.GetSni(),
		NextProtos: ctc.GetAlpnProtocols(), MinVersion: tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error {
			leaf := cs.PeerCertificates[0]
			for _, want := range sans {
				if slices.Contains(leaf.DNSNames, want) {
					return nil
				}
			}
			return fmt.Errorf("the agent's certificate names %v, Envoy wants one of %v", leaf.DNSNames, sans)
		},
	}
}

// checkOver sends one check through a connection made with cfg.
func checkOver(t *testing.T, addr string, cfg *tls.Config) (*authv3.CheckResponse, error) {
	t.Helper()
	creds := insecure.NewCredentials() // cfg nil: plaintext h2 (a Unix socket)
	if cfg != nil {
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return authv3.NewAuthorizationClient(conn).Check(ctx, daemontest.CheckRequest("GET", "localhost", "/", nil))
}

// TestEnvoyMutualTLS makes the certificates with examples/tls/make-certs.sh, runs the agent on
// examples/tls/tokenagent.yaml, and calls it as examples/envoy.yaml's tokenagent cluster says
// Envoy would (client certificate, CA, SNI, SAN match, ALPN): the check goes through. The same
// call without the client certificate is refused in the handshake. The TLS config is
// examples/dev/tokenagent.yaml with grpc_tls, and must stay so.
func TestEnvoyMutualTLS(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is needed to run examples/tls/make-certs.sh (apt-get install openssl)")
	}
	certs := t.TempDir()
	if out, err := exec.Command("bash", "tls/make-certs.sh", certs).CombinedOutput(); err != nil {
		t.Fatalf("make-certs.sh: %v\n%s", err, out)
	}
	src, err := os.ReadFile("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	u := upstreamTLS(t, edgeParts(t, mustLoadBootstrap(t, "envoy.yaml", src)), "tokenagent")
	// envoy.yaml names the files as seen from the repository's root.
	files := func(name string) string {
		rel, ok := strings.CutPrefix(name, "examples/tls/certs/")
		if !ok {
			t.Fatalf("envoy.yaml names %s, not a file of examples/tls/make-certs.sh", name)
		}
		return filepath.Join(certs, rel)
	}
	envoy := envoyClientTLS(t, u, files)

	cfg, err := config.Load("tls/tokenagent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dev, err := config.Load("dev/tokenagent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(cfg.Sites) != fmt.Sprint(dev.Sites) || cfg.Keys != dev.Keys || cfg.GRPCAddr != dev.GRPCAddr {
		t.Fatal("examples/tls/tokenagent.yaml is no longer examples/dev/tokenagent.yaml with grpc_tls")
	}
	if cfg.GRPCTLS == nil || cfg.GRPCTLS.ClientCAFile == "" {
		t.Fatal("examples/tls/tokenagent.yaml does not ask for client certificates")
	}
	for _, f := range []*string{&cfg.GRPCTLS.CertFile, &cfg.GRPCTLS.KeyFile, &cfg.GRPCTLS.ClientCAFile} {
		*f = filepath.Join(certs, filepath.Base(*f)) // the config's certs/ is where the script wrote
	}
	e := daemontest.StartConfig(t, cfg, daemontest.Options{Daemon: daemon.Options{Logger: slog.New(slog.DiscardHandler)}})

	resp, err := checkOver(t, e.D.GRPCAddr(), envoy)
	if err != nil {
		t.Fatalf("a check as Envoy makes it: %v", err)
	}
	if daemontest.Reason(resp) != "allowed" {
		t.Fatalf("a check as Envoy makes it: %s", daemontest.Reason(resp))
	}
	noCert := envoy.Clone()
	noCert.Certificates = nil
	if _, err := checkOver(t, e.D.GRPCAddr(), noCert); err == nil {
		t.Fatal("a client without Envoy's certificate got through")
	}
	wrongName := envoy.Clone()
	wrongName.ServerName = "agent.example.com"
	if _, err := checkOver(t, e.D.GRPCAddr(), wrongName); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("the agent's certificate passed for another name: %v", err)
	}
}

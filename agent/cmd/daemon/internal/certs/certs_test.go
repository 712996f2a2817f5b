package certs_test

import (
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon/internal/certs"
)

// replace writes data to path the way cert-manager and the kubelet do: a new file renamed over
// the old one.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

type pki struct {
	dir              string
	ca               *daemontest.CA
	cert, key, cafil string
}

func newPKI(t *testing.T) *pki {
	p := &pki{dir: t.TempDir(), ca: daemontest.NewCA(t, "test CA")}
	p.cert, p.key, p.cafil = filepath.Join(p.dir, "tls.crt"), filepath.Join(p.dir, "tls.key"), filepath.Join(p.dir, "ca.crt")
	p.issue(t)
	replace(t, p.cafil, p.ca.PEM())
	return p
}

func (p *pki) issue(t *testing.T) {
	c, k := p.ca.Issue(t, "agent", false)
	replace(t, p.cert, c)
	replace(t, p.key, k)
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// New refuses what cannot serve, with one line naming the file at fault.
func TestNewRefuses(t *testing.T) {
	p := newPKI(t)
	other := newPKI(t)
	junk := filepath.Join(p.dir, "junk.pem")
	replace(t, junk, []byte("not PEM\n"))
	expiredCert, expiredKey := filepath.Join(p.dir, "old.crt"), filepath.Join(p.dir, "old.key")
	c, k := p.ca.IssueValid(t, "agent", false, -48, -24)
	replace(t, expiredCert, c)
	replace(t, expiredKey, k)
	for _, tc := range []struct {
		name  string
		files certs.Files
		want  string
	}{
		{"missing cert", certs.Files{Cert: filepath.Join(p.dir, "nope.crt"), Key: p.key}, "nope.crt"},
		{"missing key", certs.Files{Cert: p.cert, Key: filepath.Join(p.dir, "nope.key")}, "nope.key"},
		{"key of another pair", certs.Files{Cert: p.cert, Key: other.key}, "cert_file"},
		{"junk cert", certs.Files{Cert: junk, Key: p.key}, "junk.pem"},
		{"missing client CA", certs.Files{Cert: p.cert, Key: p.key, ClientCA: filepath.Join(p.dir, "nope-ca.crt")}, "client_ca_file"},
		{"client CA without PEM", certs.Files{Cert: p.cert, Key: p.key, ClientCA: junk}, "no PEM certificate"},
		{"expired", certs.Files{Cert: expiredCert, Key: expiredKey}, "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := certs.New(tc.files, quiet())
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q: want one line naming %q", err, tc.want)
			}
		})
	}
}

// leafOf is the certificate a new handshake gets.
func leafOf(t *testing.T, r *certs.Reloader) string {
	t.Helper()
	cfg, err := r.ServerConfig(nil).GetConfigForClient(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Certificates[0]
	if c.Leaf == nil {
		t.Fatal("no parsed leaf")
	}
	return c.Leaf.SerialNumber.String()
}

// Reload swaps in a good new pair, keeps the old one serving when the new one is bad (and says
// so until a good pair arrives), and does nothing while the files are unchanged.
func TestReload(t *testing.T) {
	p := newPKI(t)
	r, err := certs.New(certs.Files{Cert: p.cert, Key: p.key, ClientCA: p.cafil}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	first := leafOf(t, r)
	cfg, _ := r.ServerConfig([]string{"h2"}).GetConfigForClient(&tls.ClientHelloInfo{})
	if cfg.MinVersion != tls.VersionTLS12 || cfg.ClientAuth != tls.RequireAndVerifyClientCert || cfg.ClientCAs == nil {
		t.Fatalf("handshake config: min %x, client auth %v", cfg.MinVersion, cfg.ClientAuth)
	}
	if err := r.Reload(); err != nil || leafOf(t, r) != first {
		t.Fatalf("unchanged files: err %v", err)
	}

	p.issue(t)
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	second := leafOf(t, r)
	if second == first || r.Leaf().SerialNumber.String() != second {
		t.Fatalf("a renewed pair was not picked up: %s then %s", first, second)
	}

	// A renewal caught half-written: the new certificate with the old key.
	c, _ := p.ca.Issue(t, "agent", false)
	replace(t, p.cert, c)
	if err := r.Reload(); err == nil {
		t.Fatal("a mismatched pair was accepted")
	}
	if leafOf(t, r) != second {
		t.Fatal("a bad pair replaced the good one")
	}
	if w := r.Warnings(); len(w) != 1 || !strings.Contains(w[0], "previous certificate keeps serving") {
		t.Fatalf("warnings %q", w)
	}
	// Trying the same bad files again is not a new failure to log; a good pair clears it.
	if err := r.Reload(); err != nil {
		t.Fatalf("unchanged bad files re-read: %v", err)
	}
	p.issue(t)
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if leafOf(t, r) == second || len(r.Warnings()) != 0 {
		t.Fatalf("a good pair after a bad one: leaf %s, warnings %q", leafOf(t, r), r.Warnings())
	}
}

// Watch picks a change up by itself and stops when told.
func TestWatch(t *testing.T) {
	p := newPKI(t)
	r, err := certs.New(certs.Files{Cert: p.cert, Key: p.key}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	first := leafOf(t, r)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { r.Watch(stop, 5e6); close(done) }()
	p.issue(t)
	daemontest.Eventually(t, "the watcher to pick up the renewed pair", func() bool { return leafOf(t, r) != first })
	close(stop)
	<-done
}

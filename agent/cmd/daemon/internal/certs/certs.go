// Package certs serves a TLS certificate pair, and for mutual TLS a client CA bundle, read
// from files, and reads them again when they change on disk (SPEC §8): cert-manager renews a
// Secret in place, and a listener must pick the new pair up with no restart and no dropped
// connection. A bad new pair (unreadable, not matching, expired CA file, …) keeps the old one
// serving and is reported (log and Warnings, for /readyz) until a good pair replaces it.
//
//	r, err := certs.New(certs.Files{Cert: "tls.crt", Key: "tls.key", ClientCA: "ca.crt"}, log)
//	lis = tls.NewListener(lis, r.ServerConfig([]string{"h2"}))
//	go r.Watch(stop, 2*time.Second)
//
// # Notes
//
//   - Safe for concurrent use. New reads the files once and starts nothing; Watch polls until
//     stop is closed.
//   - Connections already established keep the certificate they were made with; every new
//     handshake gets the newest good pair.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenagent/tokenagent/vault/filestamp"
)

// Files names the files of one listener's TLS.
type Files struct {
	// Cert and Key are the PEM certificate chain and private key (both required).
	Cert, Key string
	// ClientCA, when set, turns on mutual TLS: a client must present a certificate that this
	// PEM bundle's CAs signed, or the handshake fails.
	ClientCA string
}

// Reloader holds the current pair of a listener.
type Reloader struct {
	files Files
	log   *slog.Logger

	cur atomic.Pointer[state]

	mu      sync.Mutex // one reload at a time; guards tried and problem
	tried   [3]filestamp.Stamp
	problem string // the last reload's failure, "" once a reload succeeds
}

// state is one good pair with what it was read from.
type state struct {
	cert *tls.Certificate
	cas  *x509.CertPool // nil without mutual TLS
	leaf *x509.Certificate
}

// New reads the files. The error names the file at fault and why, in one line.
func New(f Files, log *slog.Logger) (*Reloader, error) {
	if log == nil {
		log = slog.Default()
	}
	r := &Reloader{files: f, log: log}
	r.tried = r.stamps()
	s, err := load(f, time.Now())
	if err != nil {
		return nil, err
	}
	r.cur.Store(s)
	return r, nil
}

func (r *Reloader) stamps() [3]filestamp.Stamp {
	st := [3]filestamp.Stamp{filestamp.Of(r.files.Cert), filestamp.Of(r.files.Key)}
	if r.files.ClientCA != "" {
		st[2] = filestamp.Of(r.files.ClientCA)
	}
	return st
}

// load reads and checks a pair (and the client CAs). A certificate outside its validity
// period is refused: serving it would fail every handshake.
func load(f Files, now time.Time) (*state, error) {
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("cert_file %s, key_file %s: %v", f.Cert, f.Key, oneLine(err))
	}
	s := &state{cert: &pair, leaf: pair.Leaf}
	if now.After(s.leaf.NotAfter) {
		return nil, fmt.Errorf("cert_file %s: the certificate expired at %s", f.Cert, s.leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(s.leaf.NotBefore) {
		return nil, fmt.Errorf("cert_file %s: the certificate is not valid before %s", f.Cert, s.leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if f.ClientCA != "" {
		pem, err := os.ReadFile(f.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("client_ca_file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client_ca_file %s: no PEM certificate in it", f.ClientCA)
		}
		s.cas = pool
	}
	return s, nil
}

func oneLine(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Error()
	}
	return err.Error()
}

// ServerConfig returns a TLS config for a listener: TLS 1.2 at least, ALPN protocols
// nextProtos, and for every handshake the newest good pair (and client CAs).
func (r *Reloader) ServerConfig(nextProtos []string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: nextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			s := r.cur.Load()
			c := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: nextProtos,
				Certificates: []tls.Certificate{*s.cert}}
			if s.cas != nil {
				c.ClientCAs, c.ClientAuth = s.cas, tls.RequireAndVerifyClientCert
			}
			return c, nil
		},
	}
}

// Reload reads the files again if they changed since the last attempt. A bad pair keeps the
// old one serving; its error is returned, logged and kept for Warnings until a good pair is
// read.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.stamps()
	if st == r.tried {
		return nil
	}
	r.tried = st
	s, err := load(r.files, time.Now())
	if err != nil {
		r.problem = err.Error()
		r.log.Error("TLS certificate change refused; the previous certificate keeps serving", "error", r.problem)
		return err
	}
	r.cur.Store(s)
	r.problem = ""
	r.log.Info("TLS certificate reloaded", "cert_file", r.files.Cert, "not_after", s.leaf.NotAfter)
	return nil
}

// Watch checks the files every period and reloads them when they change, until stop is
// closed.
func (r *Reloader) Watch(stop <-chan struct{}, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			_ = r.Reload()
		}
	}
}

// Leaf is the certificate serving now.
func (r *Reloader) Leaf() *x509.Certificate { return r.cur.Load().leaf }

// Warnings lists a refused change ("" entries never), for /readyz.
func (r *Reloader) Warnings() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.problem == "" {
		return nil
	}
	return []string{"TLS certificate change refused, the previous certificate keeps serving: " + r.problem}
}

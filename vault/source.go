// Package vault is tokenagent's key layer: the records of SPEC §6 (Auth Token key generations,
// server and browser token keys, OAuth issuers, identity providers, the legacy API key), the
// Source interface that reads them raw from a backend (the embedded file, or HashiCorp Vault
// KV v2 in package vault/kv), and the Store that decodes, validates and caches them in
// ristretto so the hot path never waits on the network.
//
// # Notes
//
//   - Paths are relative to the key root (`<mount>/<prefix>/` in Vault): every record lives
//     under "sites/<site>/…".
//   - A Source returns ErrNotFound for a record that does not exist (or has no readable data);
//     any other error means the backend could not be asked, and the Store serves stale data or
//     fails closed with an *UnavailableError (tokenagent answers keys_unavailable).
//   - All Source implementations must be safe for concurrent use.
package vault

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound reports that a record does not exist, or that its latest version was deleted or
// destroyed and so has no readable data.
var ErrNotFound = errors.New("record not found")

// Raw is one version of a record as the backend stores it.
type Raw struct {
	// Data is the record's fields (Vault KV v2 `data`, or one map of the keys file).
	Data map[string]any
	// Version is the backend's version number (KV v2 version, or the file generation counted
	// from the oldest, starting at 1).
	Version int
	// Created is when this version was written (KV v2 created_time, or the file's `created`).
	Created time.Time
	// Replaced is when the version that replaced this one was written (zero for the newest).
	// Set by Versions; it counts from the real successor even when that one was deleted since.
	Replaced time.Time
}

// Source reads raw records from a key backend.
type Source interface {
	// Name is a short name for logs and metrics ("file", "vault").
	Name() string
	// Read returns the latest readable version of the record at path.
	Read(ctx context.Context, path string) (Raw, error)
	// Versions returns the readable versions of the record at path, newest first. It returns
	// the newest version and each older one whose successor was created at or after since;
	// older ones are of no use to a verifier and are not read.
	Versions(ctx context.Context, path string, since time.Time) ([]Raw, error)
	// List returns the names directly under dir (for example the browser token keys of a site),
	// without a trailing slash. A missing dir is an empty list, not an error.
	List(ctx context.Context, dir string) ([]string, error)
	// Ready reports nil once the backend has answered (file read, Vault logged in).
	Ready() error
}

// Writer is implemented by sources that can write records (the just-in-time user directory).
type Writer interface {
	// WriteCAS writes data at path only when the record's current version is cas (0: only when
	// the record does not exist). ErrCASMismatch reports a lost race.
	WriteCAS(ctx context.Context, path string, data map[string]any, cas int) error
}

// UnavailableError reports that a record could not be read: the source failed or is taken
// to be down, and nothing usable is cached. Callers fail closed (tokenagent answers 503
// keys_unavailable) and may retry after RetryAfter.
type UnavailableError struct {
	// Cause is why the source could not answer; for logs, never for clients.
	Cause error
	// RetryAfter is how long a client should wait before retrying.
	RetryAfter time.Duration
}

func (e *UnavailableError) Error() string { return "keys unavailable: " + e.Cause.Error() }

func (e *UnavailableError) Unwrap() error { return e.Cause }

// ErrCASMismatch reports a check-and-set write that lost to another writer.
var ErrCASMismatch = errors.New("check-and-set version mismatch")

// Path helpers, so every package names records the same way.

// SitePath is the path of a record of site: SitePath("docs", "server-tokens", "k1") is
// "sites/docs/server-tokens/k1".
func SitePath(site string, parts ...string) string {
	n := len("sites/") + len(site)
	for _, p := range parts {
		n += 1 + len(p)
	}
	b := make([]byte, 0, n)
	b = append(b, "sites/"...)
	b = append(b, site...)
	for _, p := range parts {
		b = append(b, '/')
		b = append(b, p...)
	}
	return string(b)
}

// Package users is tokenagent's just-in-time user directory (SPEC §3.5): it gives every
// identity an identity provider vouches for — the pair (provider, sub) — one numeric user id
// of its site, for ever, creating the user the first time the identity is seen.
//
//	dir, err := users.OpenFile("users.yaml", users.FileOptions{})    // the embedded default
//	dir := users.NewVault(kvSource, users.VaultOptions{})             // Vault KV v2
//	id, err := dir.Provision(ctx, "docs", "corp", "alice", users.Profile{GivenName: "Alice", FamilyName: "Liddell"})
//
// Two backends, with the same guarantees:
//
//   - File: one YAML file for the development setup, written with an exclusive flock on a
//     lock file beside it, re-read under the lock and replaced by an atomic rename, so two
//     agents (or two directories) on one machine never hand out one id twice.
//   - Vault: records under the site's `users/` folder, written only with check-and-set: a
//     counter advanced with `cas=<version>` allocates ids, a create-only (`cas=0`) `by-id/<id>`
//     record claims each id, and a create-only `by-subject/<provider>/<sha256(sub)>` record
//     binds the identity to its id; the loser of a race re-reads the winner's record. Agents
//     sharing one Vault never hand out one id twice and always give one identity one id.
//
// Ids start at DefaultFirstID (far above the small ids a wiki gives its built-in accounts, so
// a provisioned user is never mistaken for the administrator) and are never reused; a lost
// race or a crash may leave a gap.
//
// # Notes
//
//   - Directories are safe for concurrent use.
//   - A directory holds personal data (sub, names, email): keep its file or Vault path as
//     private as the keys.
package users

import (
	"context"
	"errors"
	"fmt"
	"strconv"
)

// Profile is what the identity provider said of a user when it was provisioned.
type Profile struct {
	GivenName  string
	FamilyName string
	// Email is optional.
	Email string
}

// Directory is a site's just-in-time user directory.
type Directory interface {
	// Provision returns the user id of the identity (provider, sub) at site: the same decimal
	// id for the same identity every time, and a new id, unique in the site, the first time,
	// when the user is created with profile p. provider is the name of the site's identity
	// provider record (`idps/<name>`), sub the provider's subject identifier.
	//
	// It fails with ErrBlocked for an identity an operator blocked, and with another error
	// when the directory cannot be read or written (callers fail closed).
	Provision(ctx context.Context, site, provider, sub string, p Profile) (id string, err error)
}

// DefaultFirstID is the first id a directory hands out in a site whose counter was never
// written. Operators who need another range seed the counter (see the backends).
const DefaultFirstID int64 = 1000000

// ErrBlocked reports an identity whose directory record was deleted (Vault: a soft-deleted
// `by-subject` record): it is not provisioned again.
var ErrBlocked = errors.New("users: the identity is blocked in the user directory")

// createdKey is the context key of WithCreated.
type createdKey struct{}

// WithCreated returns a context that makes Provision report in *created whether it created
// the user (true) or found it (false), for logs and metrics.
func WithCreated(ctx context.Context, created *bool) context.Context {
	return context.WithValue(ctx, createdKey{}, created)
}

// reportCreated stores created where WithCreated asked for it.
func reportCreated(ctx context.Context, created bool) {
	if p, ok := ctx.Value(createdKey{}).(*bool); ok && p != nil {
		*p = created
	}
}

// checkArgs refuses arguments no directory can store.
func checkArgs(site, provider, sub string) error {
	switch {
	case site == "":
		return errors.New("users: empty site")
	case provider == "":
		return errors.New("users: empty provider")
	case sub == "":
		return errors.New("users: empty subject")
	}
	for i := 0; i < len(provider); i++ {
		if c := provider[i]; c < 0x20 || c == 0x7f || c == '/' {
			return fmt.Errorf("users: provider name %q cannot name a directory path", provider)
		}
	}
	if provider == "." || provider == ".." {
		return fmt.Errorf("users: provider name %q cannot name a directory path", provider)
	}
	return nil
}

// parseID reads a stored id or counter: a decimal string (or number) of 1 to 19 digits,
// at least 1.
func parseID(v any) (int64, bool) {
	var s string
	switch n := v.(type) {
	case string:
		s = n
	case int:
		return int64(n), n > 0
	case int64:
		return n, n > 0
	case float64:
		if n < 1 || n > 1<<53 || n != float64(int64(n)) {
			return 0, false
		}
		return int64(n), true
	case interface{ Int64() (int64, error) }: // json.Number
		i, err := n.Int64()
		return i, err == nil && i > 0
	default:
		return 0, false
	}
	if len(s) == 0 || len(s) > 19 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	i, err := strconv.ParseInt(s, 10, 64)
	return i, err == nil && i > 0
}

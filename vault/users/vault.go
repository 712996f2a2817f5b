package users

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/tokenagent/tokenagent/vault"
)

// ReadWriter is what the Vault directory needs of a key source: reads of the latest version
// (with its version number) and check-and-set writes. The Vault KV v2 source (vault/kv)
// implements it.
type ReadWriter interface {
	Read(ctx context.Context, path string) (vault.Raw, error)
	vault.Writer
}

// VaultOptions tune a Vault directory. The zero value of each field takes its default.
type VaultOptions struct {
	// FirstID is the first id handed out in a site whose counter was never written (default
	// DefaultFirstID).
	FirstID int64
	// MaxAttempts bounds the check-and-set attempts of one allocation (default 200).
	MaxAttempts int
	// Timeout bounds one Provision, however long its caller may wait (default 15 s).
	Timeout time.Duration
	// Now is the clock for the records' created times (default time.Now).
	Now func() time.Time
}

// Vault is the user directory kept in Vault KV v2 beside the keys, under each site's `users/`
// folder:
//
//	sites/<site>/users/counter                              {next: "1000002"}
//	sites/<site>/users/by-id/<id>                           {provider, sub, created}
//	sites/<site>/users/by-subject/<provider>/<sha256(sub)>  {id, provider, sub, given_name, family_name, email, created}
//
// (`<sha256(sub)>` is the lower-case hex SHA-256 of the sub, so any sub makes a valid path.)
//
// Provision reads `by-subject/…`; a known identity costs that one read. A new one is
// allocated the counter's `next` by a write with `cas` = the counter's version (a lost race
// reads the counter again); the id is then claimed by creating `by-id/<id>` with `cas=0` (an
// id already claimed — a counter reset by hand — is skipped), and the identity bound to it by
// creating `by-subject/…` with `cas=0`. When another agent bound the identity first, its
// record is read and its id returned: the id this agent claimed stays unused. So, across any
// number of agents sharing one Vault, no id is handed out twice and one identity always gets
// one id.
//
// # Notes
//
//   - Within one process, new users of one site are allocated one at a time (after a second
//     look at `by-subject/…`), so concurrent exchanges of one new user in one agent create it
//     once and the counter is contended only between agents.
//   - Seed `users/counter` with `next` (a decimal string) to start a site's ids elsewhere.
//   - Soft-deleting a `by-subject/…` record blocks that identity (ErrBlocked); deleting its
//     metadata lets it be provisioned again, with a new id.
//   - Safe for concurrent use.
type Vault struct {
	rw    ReadWriter
	opts  VaultOptions
	sites sync.Map // site -> chan struct{} (a one-slot semaphore)
}

var _ Directory = (*Vault)(nil)

// NewVault returns the directory kept through rw (paths relative to the key root, as every
// vault.Source uses them).
func NewVault(rw ReadWriter, opts VaultOptions) *Vault {
	if opts.FirstID <= 0 {
		opts.FirstID = DefaultFirstID
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 200
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 15 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Vault{rw: rw, opts: opts}
}

// SubjectPath is the path of the `by-subject` record of (provider, sub) at site.
func SubjectPath(site, provider, sub string) string {
	sum := sha256.Sum256([]byte(sub))
	return vault.SitePath(site, "users", "by-subject", provider, hex.EncodeToString(sum[:]))
}

// IDPath is the path of the `by-id` record of id at site.
func IDPath(site, id string) string { return vault.SitePath(site, "users", "by-id", id) }

// CounterPath is the path of site's id counter.
func CounterPath(site string) string { return vault.SitePath(site, "users", "counter") }

// Provision implements Directory.
func (v *Vault) Provision(ctx context.Context, site, provider, sub string, p Profile) (string, error) {
	if err := checkArgs(site, provider, sub); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, v.opts.Timeout)
	defer cancel()
	subjectPath := SubjectPath(site, provider, sub)
	if id, found, err := v.lookup(ctx, subjectPath); err != nil || found {
		if found {
			reportCreated(ctx, false)
		}
		return id, err
	}

	// A new identity: one allocation at a time per site in this process.
	sem := v.semaphore(site)
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("users: waiting to allocate an id: %w", ctx.Err())
	}
	defer func() { <-sem }()
	if id, found, err := v.lookup(ctx, subjectPath); err != nil || found {
		if found {
			reportCreated(ctx, false)
		}
		return id, err
	}

	created := v.opts.Now().UTC().Format(time.RFC3339)
	for attempt := 0; ; attempt++ {
		if attempt >= v.opts.MaxAttempts {
			return "", fmt.Errorf("users: site %s: no free id after %d attempts", site, attempt)
		}
		n, err := v.allocate(ctx, site)
		if err != nil {
			return "", err
		}
		id := strconv.FormatInt(n, 10)
		err = v.rw.WriteCAS(ctx, IDPath(site, id), map[string]any{
			"provider": provider, "sub": sub, "created": created}, 0)
		if errors.Is(err, vault.ErrCASMismatch) {
			continue // the id was claimed before (the counter was set back): take the next one
		}
		if err != nil {
			return "", fmt.Errorf("users: claim id %s: %w", id, err)
		}
		err = v.rw.WriteCAS(ctx, subjectPath, map[string]any{
			"id": id, "provider": provider, "sub": sub,
			"given_name": p.GivenName, "family_name": p.FamilyName, "email": p.Email,
			"created": created}, 0)
		if errors.Is(err, vault.ErrCASMismatch) {
			// Another agent bound the identity first: its id is the identity's.
			id, found, err := v.lookup(ctx, subjectPath)
			if err != nil {
				return "", err
			}
			if !found {
				return "", ErrBlocked // a record exists but holds no data: soft-deleted
			}
			reportCreated(ctx, false)
			return id, nil
		}
		if err != nil {
			return "", fmt.Errorf("users: bind identity to id %s: %w", id, err)
		}
		reportCreated(ctx, true)
		return id, nil
	}
}

// lookup reads the by-subject record at path.
func (v *Vault) lookup(ctx context.Context, path string) (id string, found bool, err error) {
	raw, err := v.rw.Read(ctx, path)
	if errors.Is(err, vault.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("users: read %s: %w", path, err)
	}
	n, ok := parseID(raw.Data["id"])
	if !ok {
		return "", false, fmt.Errorf("users: %s: id %v is not a positive decimal number", path, raw.Data["id"])
	}
	return strconv.FormatInt(n, 10), true, nil
}

// allocate advances site's counter by one with a check-and-set write and returns the value it
// had, retrying (with jittered backoff) when another agent advanced it first.
func (v *Vault) allocate(ctx context.Context, site string) (int64, error) {
	path := CounterPath(site)
	for attempt := 0; ; attempt++ {
		if attempt >= v.opts.MaxAttempts {
			return 0, fmt.Errorf("users: site %s: the id counter could not be advanced after %d attempts "+
				"(a soft-deleted counter is never advanced: write it again or delete its metadata)", site, attempt)
		}
		next, version := v.opts.FirstID, 0
		raw, err := v.rw.Read(ctx, path)
		switch {
		case errors.Is(err, vault.ErrNotFound):
		case err != nil:
			return 0, fmt.Errorf("users: read %s: %w", path, err)
		default:
			n, ok := parseID(raw.Data["next"])
			if !ok {
				return 0, fmt.Errorf("users: %s: next %v is not a positive decimal number", path, raw.Data["next"])
			}
			next, version = n, raw.Version
		}
		if next >= 1<<63-1 {
			return 0, fmt.Errorf("users: site %s has no ids left", site)
		}
		err = v.rw.WriteCAS(ctx, path, map[string]any{"next": strconv.FormatInt(next+1, 10)}, version)
		if err == nil {
			return next, nil
		}
		if !errors.Is(err, vault.ErrCASMismatch) {
			return 0, fmt.Errorf("users: advance %s: %w", path, err)
		}
		if err := backoff(ctx, attempt); err != nil {
			return 0, fmt.Errorf("users: advance %s: %w", path, err)
		}
	}
}

// backoff waits a jittered, growing while (1 ms doubling to 32 ms) or until ctx ends.
func backoff(ctx context.Context, attempt int) error {
	d := time.Millisecond << min(attempt, 5)
	d = d/2 + rand.N(d)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (v *Vault) semaphore(site string) chan struct{} {
	if s, ok := v.sites.Load(site); ok {
		return s.(chan struct{})
	}
	s, _ := v.sites.LoadOrStore(site, make(chan struct{}, 1))
	return s.(chan struct{})
}

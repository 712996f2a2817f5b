package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/fleet"
	"github.com/tokenagent/tokenagent/agent/token"
)

var revokeHelp = helpPage{
	name: "tokenagent revoke — end credentials before they expire, at every agent of the fleet",
	synopsis: `tokenagent revoke --config FILE --site ID --user USER   [--before TIME|now]
tokenagent revoke --config FILE --site ID --client ID   [--before TIME|now]
tokenagent revoke --config FILE --site ID --token-file FILE`,
	description: `Writes one entry of the revocation list (SPEC §9) to the config's revocation store
(revocation.store: redis) and prints it. Every agent on the same store applies it within a
second; no agent needs a restart or a reload.

  --user USER     every credential of the site that names USER (as x-auth-user does: a decimal
                  id, = and a username as a Server API Token writes it, or an OAuth sub) and was
                  issued before --before: Auth Tokens (their issue time), Server API Tokens and
                  Impersonation Auth Tokens (their epoch), JWTs (their iat; a JWT without iat
                  counts as issued before any time), sessions of the token exchange (their Auth
                  Token), the Site API Key acting as the user. A credential issued after
                  --before is not refused: the user signs in again.
  --client ID     every OAuth token of the site with that client_id issued before --before.
  --token-file F  one credential, the exact text in file F (a trailing newline is dropped), by
                  the SHA-256 of that text, for the rest of its life. The token is never printed:
                  the entry shows the first 8 hex digits of its hash.

Refused credentials get 401 revoked. An entry is dropped by itself once nothing it could refuse
can still be valid: for a token, when the token expires (read from its text; 10 years for a
credential that never expires, such as a Browser API Token); for a user or a client, the
longest lifetime of the site's credentials after --before (authtoken_ttl, server_token_window,
revocation.jwt_lifetime). Writing an entry again is harmless: the later --before and the later
expiry win.`,
	exitStatus: `0   the entry was written and printed.
1   the config has no revocation list, the site is unknown, or the store could not be written.
2   usage error: not exactly one of --user, --client and --token-file, a bad --before.`,
	examples: `Example 1 — sign user 42 out everywhere (a stolen laptop):
    tokenagent revoke --config /etc/tokenagent/tokenagent.yaml --site docs --user 42

Example 2 — an OAuth client whose secret leaked, for tokens issued up to a time:
    tokenagent revoke --config tokenagent.yaml --site docs --client portal --before 2026-12-07T18:00:00Z

Example 3 — one token seen in a log:
    tokenagent revoke --config tokenagent.yaml --site docs --token-file leaked.txt`,
}

var revocationsHelp = helpPage{
	name:        "tokenagent revocations — list a site's revocation entries in force",
	synopsis:    `tokenagent revocations --config FILE --site ID`,
	description: `Prints every entry of the site's revocation list that has not expired, one a line, as revoke prints them. A token entry shows only the first 8 hex digits of its hash.`,
	exitStatus: `0   the list was printed (possibly empty).
1   the config has no revocation list or the store could not be read.
2   usage error.`,
	examples: `Example — the entries of site docs:
    tokenagent revocations --config /etc/tokenagent/tokenagent.yaml --site docs`,
}

// noTokenLifetime keeps a token entry whose credential's lifetime is not in its text.
const noTokenLifetime = 10 * 365 * 24 * time.Hour

// openRevocations loads the config and its revocation list, and finds the site.
func openRevocations(configPath, siteID string) (*fleet.RevocationList, *config.Config, *config.Site, error) {
	cfg, err := config.Load(configPath)
	if err != nil {
		return nil, nil, nil, err
	}
	if !cfg.Revocation.Enabled() {
		return nil, nil, nil, fmt.Errorf("%s: no revocation list (set revocation.store: redis)", configPath)
	}
	var site *config.Site
	for i := range cfg.Sites {
		if cfg.Sites[i].ID == siteID {
			site = &cfg.Sites[i]
		}
	}
	if site == nil {
		return nil, nil, nil, fmt.Errorf("--site: %q is not a site of %s", siteID, configPath)
	}
	l, err := daemon.OpenRevocations(cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, nil, nil, err
	}
	return l, cfg, site, nil
}

func cmdRevoke(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("revoke", revokeHelp, stderr)
	configPath := fs.String("config", "tokenagent.yaml", "the agent's config file (its revocation and sites sections)")
	siteID := fs.String("site", "", "the site (required)")
	user := fs.String("user", "", "revoke a user's credentials issued before --before")
	client := fs.String("client", "", "revoke an OAuth client's tokens issued before --before")
	tokenFile := fs.String("token-file", "", "revoke the one credential whose exact text is in this file")
	beforeFlag := fs.String("before", "now", "the issue time credentials must be later than: RFC 3339, Unix seconds, or now")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	given := 0
	for _, v := range []string{*user, *client, *tokenFile} {
		if v != "" {
			given++
		}
	}
	if *siteID == "" || given != 1 {
		fmt.Fprintln(stderr, "tokenagent revoke: --site and exactly one of --user, --client and --token-file are required")
		return errUsage
	}
	now := time.Now()
	before := now
	if *beforeFlag != "now" {
		t, err := parseTime(*beforeFlag)
		if err != nil {
			fmt.Fprintf(stderr, "tokenagent revoke: --before: %v\n", err)
			return errUsage
		}
		before = t
	}
	l, cfg, site, err := openRevocations(*configPath, *siteID)
	if err != nil {
		return err
	}
	defer l.Close()
	settings := token.SiteSettings{ID: site.ID, AuthTokenTTL: site.AuthTokenTTL.D(), ServerTokenWindow: site.ServerTokenWindow.D()}
	r := fleet.Revocation{Site: site.ID, Created: now}
	switch {
	case *user != "":
		r.Kind, r.Subject, r.Before = fleet.RevokeUser, *user, before
		r.Expires = before.Add(max(settings.AuthTokenTTL, settings.ServerTokenWindow, token.ImpersonationWindow,
			cfg.Revocation.JWTLifetime.D()) + token.ClockSkew)
	case *client != "":
		r.Kind, r.Subject, r.Before = fleet.RevokeClient, *client, before
		r.Expires = before.Add(cfg.Revocation.JWTLifetime.D() + token.ClockSkew)
	default:
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		cred := strings.TrimRight(string(b), "\r\n")
		if cred == "" {
			return errors.New("--token-file: the file is empty")
		}
		expires := now.Add(noTokenLifetime)
		if until, ok := token.ValidUntil(cred, &settings); ok {
			expires = until
		}
		r = fleet.RevokeCredential(site.ID, cred, expires)
		r.Created = now
		if !r.Expires.After(now) {
			fmt.Fprintln(stderr, "tokenagent revoke: the token has expired already; writing the entry anyway")
			r.Expires = now.Add(time.Minute)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := l.Revoke(ctx, r)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, out)
	return nil
}

func cmdRevocations(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("revocations", revocationsHelp, stderr)
	configPath := fs.String("config", "tokenagent.yaml", "the agent's config file")
	siteID := fs.String("site", "", "the site (required)")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *siteID == "" {
		fmt.Fprintln(stderr, "tokenagent revocations: --site is required")
		return errUsage
	}
	l, _, site, err := openRevocations(*configPath, *siteID)
	if err != nil {
		return err
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	entries, err := l.List(ctx, site.ID)
	if err != nil {
		return err
	}
	for _, e := range entries {
		fmt.Fprintln(stdout, e)
	}
	return nil
}

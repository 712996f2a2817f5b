package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spf13/pflag"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
)

var mintHelp = helpPage{
	name: "tokenagent mint — print a token of a kind for a site",
	synopsis: `tokenagent mint authtoken     --site ID --user DECIMAL_ID (--config FILE | --key-b64 KEY) [--at TIME]
tokenagent mint server        --site ID --key NAME --user USER (--config FILE | --secret S)
                              [--unprefixed] [--at TIME]
tokenagent mint jwt           --site ID --private-key JWK_FILE --user SUB [--client-id ID] [--scope S]
                              [--issuer URL] [--audience AUD] [--ttl D] [--config FILE] [--at TIME]
tokenagent mint impersonation --site ID --user USER (--config FILE | --secret APIKEY) [--at TIME]
tokenagent mint apikey        --site ID [--user DECIMAL_ID] (--config FILE | --secret APIKEY)`,
	description: `Prints one token on stdout, for tests and integrations:

  authtoken   {userid}_{ticks}_{sig}, an Auth Token signed with the site's current Auth Token
              key generation (the newest in the key source).
  server      tkn_{key}_{epoch}_{user}_{sig}, a Server API Token signed with the server key's
              secret; --user is a decimal id or = and a username (URL-encoded as it goes).
  jwt         an OAuth access token (RFC 9068) signed with a private JWK (RSA, EC P-256,
              Ed25519, or a 32-byte oct key for HS256) whose public half the site trusts; sub is
              --user, --client-id defaults to it (give the same value for an application token);
              iss and aud default to the site's own issuer record (--config).
  impersonation  imp_{epoch}_{md5}_{user}, the legacy Impersonation Auth Token, digested with
              the site's legacy API key (the site must turn it on: legacy.impersonation).
  apikey      the query string presenting the legacy Site API Key (apikey=…[&impersonateuserid=…]).

Keys are read from the config's key source (the key file or Vault); --secret and --key-b64 sign
with a given secret instead and need no config. A minted token is a live credential: treat it
as a secret.`,
	exitStatus: `0   the token was printed.
1   the config or key source could not be read, or the site has no such key.
2   usage error: no kind, an unknown kind, a missing --site, --user or --key, an unknown flag.`,
	environment: vaultEnvironment,
	examples: `Example 1 — an Auth Token cookie for user 42 of site demo:
    tokenagent mint authtoken --config examples/dev/tokenagent.yaml --site demo --user 42

Example 2 — a Server API Token acting as the user alice:
    tokenagent mint server --config examples/dev/tokenagent.yaml --site demo --key k1 --user =alice

Example 3 — sign with a known secret, at a fixed time (no config needed):
    tokenagent mint server --site demo --key k1 --secret s3cret --user 42 --at 2026-11-21T12:00:00Z

Example 4 — an OAuth token with the write scope, signed with the issuer's private JWK:
    tokenagent mint jwt --config tokenagent.yaml --site docs --private-key issuer.jwk.json \
        --user jane --client-id portal --scope "read write" --ttl 10m`,
}

func cmdMint(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "--help" || args[0] == "-h") {
		mintHelp.write(stderr, mintFlags(newFlags("mint", mintHelp, stderr)).fs)
		return pflag.ErrHelp
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, "tokenagent mint: give a kind: authtoken or server (see tokenagent mint KIND --help)")
		return errUsage
	}
	kind, args := args[0], args[1:]
	mf := mintFlags(newFlags("mint "+kind, mintHelp, stderr))
	fs := mf.fs
	configPath, site, user, key, secret, keyB64, unprefixed, at :=
		mf.configPath, mf.site, mf.user, mf.key, mf.secret, mf.keyB64, mf.unprefixed, mf.at
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *site == "" || (*user == "" && kind != "apikey") {
		fmt.Fprintln(stderr, "tokenagent mint: --site and --user are required")
		return errUsage
	}
	when := time.Now()
	if *at != "" {
		t, err := parseTime(*at)
		if err != nil {
			return fmt.Errorf("--at: %v", err)
		}
		when = t
	}
	if kind == "jwt" && *mf.privateKey == "" {
		return fmt.Errorf("--private-key: required for jwt (a private JWK file)")
	}
	given := *secret != "" || *keyB64 != "" || (kind == "jwt" && *mf.issuer != "" && *mf.audience != "")
	store, closeStore, err := mintStore(*configPath, given)
	if err != nil {
		return err
	}
	defer closeStore()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch kind {
	case "authtoken":
		if !token.ValidUserID(*user) {
			return fmt.Errorf("--user: an Auth Token names a decimal user id, got %q", *user)
		}
		var sec *vault.Secret
		if *keyB64 != "" {
			b, err := base64.StdEncoding.DecodeString(*keyB64)
			if err != nil {
				return fmt.Errorf("--key-b64: not base64")
			}
			sec = vault.NewSecret(b)
		} else {
			keys, err := store.AuthTokenKeys(ctx, *site, 0)
			if err != nil {
				return fmt.Errorf("site %q: auth token key: %v", *site, err)
			}
			sec = keys.Current().Secret
		}
		fmt.Fprintln(stdout, token.MintAuthToken(sec, *user, when))
	case "server":
		if *key == "" {
			fmt.Fprintln(stderr, "tokenagent mint server: --key is required")
			return errUsage
		}
		var sec *vault.Secret
		if *secret != "" {
			sec = vault.NewSecret([]byte(*secret))
		} else {
			rec, err := store.ServerKey(ctx, *site, *key)
			if err != nil {
				return fmt.Errorf("site %q: server key %q: %v", *site, *key, err)
			}
			sec = rec.Secret
		}
		if *unprefixed {
			fmt.Fprintln(stdout, token.MintUnprefixedServerToken(*key, sec, *user, when))
		} else {
			fmt.Fprintln(stdout, token.MintServerToken(*key, sec, *user, when))
		}
	case "jwt":
		tok, err := mintJWT(ctx, store, *site, mf, when)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, tok)
	case "impersonation", "apikey":
		var apiKey *vault.Secret
		if *secret != "" {
			apiKey = vault.NewSecret([]byte(*secret))
		} else {
			leg, err := store.Legacy(ctx, *site)
			if err != nil {
				return fmt.Errorf("site %q: legacy api key: %v", *site, err)
			}
			apiKey = leg.APIKey
		}
		if kind == "impersonation" {
			fmt.Fprintln(stdout, token.MintImpersonationToken(apiKey, *user, when))
			break
		}
		if *user != "" && !token.ValidUserID(*user) {
			return fmt.Errorf("--user: impersonateuserid is a decimal user id, got %q", *user)
		}
		var key []byte
		key = apiKey.AppendKey(key)
		fmt.Fprintln(stdout, token.APIKeyQuery(string(key), *user))
		clear(key)
	default:
		fmt.Fprintf(stderr, "tokenagent mint: unknown kind %q (want authtoken, server, jwt, impersonation or apikey)\n", kind)
		return errUsage
	}
	return nil
}

// mintJWT signs an OAuth access token with the private JWK of --private-key.
func mintJWT(ctx context.Context, store *vault.Store, site string, mf mintFlagSet, when time.Time) (string, error) {
	b, err := os.ReadFile(*mf.privateKey)
	if err != nil {
		return "", fmt.Errorf("--private-key: %v", err)
	}
	var key jose.JSONWebKey
	if err := key.UnmarshalJSON(b); err != nil {
		return "", fmt.Errorf("--private-key %s: not a JWK: %v", *mf.privateKey, err)
	}
	iss, aud := *mf.issuer, *mf.audience
	if iss == "" || aud == "" {
		if store == nil {
			return "", fmt.Errorf("--issuer and --audience, or --config to read the site's issuer, are required")
		}
		rec, err := store.OAuthIssuer(ctx, site)
		if err != nil {
			return "", fmt.Errorf("site %q: oauth issuer record: %v (or give --issuer and --audience)", site, err)
		}
		if iss == "" {
			iss = rec.Issuer
		}
		if aud == "" {
			aud = rec.Audience
		}
	}
	clientID := *mf.clientID
	if clientID == "" {
		clientID = *mf.user
	}
	claims := map[string]any{"iss": iss, "aud": aud, "sub": *mf.user, "client_id": clientID,
		"iat": when.Unix(), "exp": when.Add(*mf.ttl).Unix()}
	if *mf.scope != "" {
		claims["scope"] = *mf.scope
	}
	return token.MintJWT(key, claims)
}

// mintFlagSet is mint's flags.
type mintFlagSet struct {
	fs                                          *pflag.FlagSet
	configPath, site, user, key, secret, keyB64 *string
	unprefixed                                  *bool
	at                                          *string
	// jwt
	privateKey, issuer, audience, clientID, scope *string
	ttl                                           *time.Duration
}

func mintFlags(fs *pflag.FlagSet) mintFlagSet {
	return mintFlagSet{fs: fs,
		configPath: fs.String("config", "", "the config file whose key source holds the site's keys"),
		site:       fs.String("site", "", "the site id (required)"),
		user:       fs.String("user", "", "the user: a decimal id, or = and a username (server tokens) (required)"),
		key:        fs.String("key", "", "server tokens: the key name (the token's public part) (required)"),
		secret:     fs.String("secret", "", "server tokens: sign with this secret instead of reading the key source"),
		keyB64:     fs.String("key-b64", "", "auth tokens: sign with this base64 key instead of reading the key source"),
		unprefixed: fs.Bool("unprefixed", false, "server tokens: the legacy form without tkn_ and separators in the signature"),
		at:         fs.String("at", "", "issue time, RFC 3339 or Unix seconds (default: now)"),
		privateKey: fs.String("private-key", "", "jwt: the issuer's private key, a JWK file (its kid goes into the header)"),
		issuer:     fs.String("issuer", "", "jwt: the iss claim (default: the site's oauth record)"),
		audience:   fs.String("audience", "", "jwt: the aud claim (default: the site's oauth record)"),
		clientID:   fs.String("client-id", "", "jwt: the client_id claim (default: --user; equal to --user means an application token)"),
		scope:      fs.String("scope", "", "jwt: the scope claim, space-separated"),
		ttl:        fs.Duration("ttl", 10*time.Minute, "jwt: lifetime (exp = issue time + ttl)"),
	}
}

// mintStore opens the config's key source, unless the secret was given on the command line.
func mintStore(configPath string, secretGiven bool) (*vault.Store, func(), error) {
	if configPath == "" {
		if secretGiven {
			return nil, func() {}, nil
		}
		return nil, nil, fmt.Errorf("--config is required to read the site's keys (or give --secret / --key-b64)")
	}
	cfg, err := config.Load(configPath)
	if err != nil {
		return nil, nil, err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	src, closer, err := daemon.OpenSource(context.Background(), cfg, nil, log)
	if err != nil {
		return nil, nil, err
	}
	// Vault logs in in the background: wait for it, so the first read is not refused.
	if w, ok := src.(interface{ WaitReady(context.Context) error }); ok {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err := w.WaitReady(ctx)
		cancel()
		if err != nil {
			closer()
			return nil, nil, fmt.Errorf("key source: not ready: %v (%v)", err, src.Ready())
		}
	}
	store, err := vault.NewStore(src, vault.StoreOptions{Logger: log})
	if err != nil {
		closer()
		return nil, nil, err
	}
	return store, func() { store.Close(); closer() }, nil
}

func parseTime(s string) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither RFC 3339 nor Unix seconds", s)
	}
	return t, nil
}

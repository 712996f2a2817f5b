package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// File names in a setup directory.
const (
	configFile  = "tokenagent.yaml" // the agent's config (SPEC §7)
	agentKeys   = "keys.yaml"       // the agent's embedded key source (public halves only)
	signingFile = "load-keys.json"  // what the load generator signs with (private)
)

// Keys is everything the load generator needs to make tokens a target trusts: the site and its
// host, the Auth Token key, the server keys' secrets, the browser keys with their origins, and
// the OAuth issuer with its private signing keys. Setup writes it as load-keys.json beside the
// agent's config.
type Keys struct {
	Site     string `json:"site"`
	Host     string `json:"host"`
	Issuer   string `json:"issuer"`
	Audience string `json:"audience"`
	// AuthTokenKey is the site's current Auth Token key.
	AuthTokenKey []byte `json:"authtoken_key"`
	// ServerKeys are the site's Server API Token keys (name → secret).
	ServerKeys []NamedSecret `json:"server_keys"`
	// BrowserKeys are the site's Browser API Token keys with the origins each may be used from.
	BrowserKeys []BrowserKey `json:"browser_keys"`
	// RSA and EC are the private JWKs (RS256, ES256) of the site's own OAuth issuer.
	RSA jose.JSONWebKey `json:"rsa"`
	EC  jose.JSONWebKey `json:"ec"`
	// HS256 is the issuer's symmetric key: 43 URL-safe characters, so that a Rego policy can
	// hold the same secret as a string (OPA's io.jwt.decode_verify takes it as raw bytes).
	// Setups written before it have none; the hs256 kind then asks for a new setup.
	HS256 jose.JSONWebKey `json:"hs256,omitzero"`
}

// NamedSecret is a server key: its public name and its secret.
type NamedSecret struct {
	Name   string `json:"name"`
	Secret string `json:"secret"`
}

// BrowserKey is a browser key and the origins the agent accepts it from. Origins are full
// origins (scheme://host), as a browser sends them.
type BrowserKey struct {
	Name    string   `json:"name"`
	Origins []string `json:"origins"`
}

// SetupOptions shape the site that Setup writes.
type SetupOptions struct {
	Dir         string
	Site        string
	Host        string
	GRPCAddr    string
	HTTPAddr    string
	ServerKeys  int
	BrowserKeys int
	// Force overwrites an existing setup.
	Force bool
	// Now is the clock (the Auth Token key's creation time is a day before it).
	Now time.Time
}

// Setup creates fresh keys and writes, into o.Dir, a complete agent config (tokenagent.yaml)
// with its key file (keys.yaml), and the private half (load-keys.json) for `load run --keys`.
// Any previously minted token cache in the directory is removed, since it was signed with the
// old keys.
func Setup(o SetupOptions) (*Keys, error) {
	if o.Dir == "" {
		return nil, errors.New("setup: --dir is required")
	}
	if o.ServerKeys < 1 || o.BrowserKeys < 1 {
		return nil, errors.New("setup: --server-keys and --browser-keys must be at least 1")
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	if !o.Force {
		for _, f := range []string{configFile, agentKeys, signingFile} {
			if _, err := os.Stat(filepath.Join(o.Dir, f)); err == nil {
				return nil, fmt.Errorf("setup: %s already exists (use --force to replace it)", filepath.Join(o.Dir, f))
			}
		}
	}
	k, err := newKeys(o)
	if err != nil {
		return nil, err
	}
	keysYAML, err := agentKeysYAML(k, o.Now)
	if err != nil {
		return nil, err
	}
	priv, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{configFile, []byte(agentConfigYAML(k, o))},
		{agentKeys, []byte(keysYAML)},
		{signingFile, append(priv, '\n')},
	} {
		if err := os.WriteFile(filepath.Join(o.Dir, f.name), f.data, 0o600); err != nil {
			return nil, fmt.Errorf("setup: %w", err)
		}
	}
	old, _ := filepath.Glob(filepath.Join(o.Dir, jwtCachePrefix+"*"))
	for _, f := range old {
		_ = os.Remove(f)
	}
	return k, nil
}

func newKeys(o SetupOptions) (*Keys, error) {
	k := &Keys{Site: o.Site, Host: o.Host, Issuer: "https://" + o.Host, Audience: o.Site,
		AuthTokenKey: randBytes(32)}
	for i := range o.ServerKeys {
		k.ServerKeys = append(k.ServerKeys, NamedSecret{Name: fmt.Sprintf("bench%d", i+1),
			Secret: base64.RawURLEncoding.EncodeToString(randBytes(24))})
	}
	for i := range o.BrowserKeys {
		k.BrowserKeys = append(k.BrowserKeys, BrowserKey{Name: fmt.Sprintf("pub%d", i+1),
			Origins: []string{fmt.Sprintf("https://app%d.example.org", i+1), fmt.Sprintf("https://portal%d.example.net:8443", i+1)}})
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	k.RSA = jose.JSONWebKey{Key: rk, KeyID: "bench-rs256", Algorithm: "RS256", Use: "sig"}
	k.EC = jose.JSONWebKey{Key: ek, KeyID: "bench-es256", Algorithm: "ES256", Use: "sig"}
	k.HS256 = jose.JSONWebKey{Key: []byte(base64.RawURLEncoding.EncodeToString(randBytes(32))), KeyID: "bench-hs256", Algorithm: "HS256", Use: "sig"}
	return k, nil
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func agentConfigYAML(k *Keys, o SetupOptions) string {
	return fmt.Sprintf(`# Written by: go run ./bench/cmd/load setup --dir %s
# A complete tokenagent config whose keys (keys.yaml) match what
# 'go run ./bench/cmd/load run --keys %s' sends. Serve it with:
#   tokenagent serve --config %s
grpc_addr: %s
http_addr: %s
keys:
  source: file
  file: %s
  refresh: 30s
  max_stale: 1h
sites:
  - id: %s
    hosts: [%s, "*.%s"]
    routes:
      - {methods: [POST, PUT, DELETE], path: "/@api/deki/pages/*", require: user, scopes: [write]}
      - {path: "/@api/deki/site/*", require: authenticated}
`, o.Dir, o.Dir, filepath.Join(o.Dir, configFile), o.GRPCAddr, o.HTTPAddr, agentKeys, k.Site, k.Host, k.Host)
}

func agentKeysYAML(k *Keys, now time.Time) (string, error) {
	var b strings.Builder
	b.WriteString("# Written by the load generator's setup: the public halves of its keys.\nsites:\n")
	fmt.Fprintf(&b, "  %s:\n    authtoken:\n      - {key: %q, created: %q}\n", k.Site,
		base64.StdEncoding.EncodeToString(k.AuthTokenKey), now.Add(-24*time.Hour).UTC().Format(time.RFC3339))
	b.WriteString("    server-tokens:\n")
	for _, s := range k.ServerKeys {
		fmt.Fprintf(&b, "      %s: {secret: %q}\n", s.Name, s.Secret)
	}
	b.WriteString("    browser-tokens:\n")
	for _, bk := range k.BrowserKeys {
		q := make([]string, len(bk.Origins))
		for i, o := range bk.Origins {
			q[i] = fmt.Sprintf("%q", o)
		}
		fmt.Fprintf(&b, "      %s: {origins: [%s]}\n", bk.Name, strings.Join(q, ", "))
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k.RSA.Public(), k.EC.Public()}}
	if k.HS256.Key != nil {
		set.Keys = append(set.Keys, k.HS256) // symmetric: the agent needs the secret itself
	}
	jwks, err := json.Marshal(set)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(&b, "    oauth:\n      issuer: %q\n      audience: %q\n      jwks: %s\n", k.Issuer, k.Audience, jwks)
	return b.String(), nil
}

// LoadKeys reads the load-keys.json that Setup wrote into dir.
func LoadKeys(dir string) (*Keys, error) {
	b, err := os.ReadFile(filepath.Join(dir, signingFile))
	if err != nil {
		return nil, fmt.Errorf("keys: %w (create them with: load setup --dir %s)", err, dir)
	}
	var k Keys
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("keys %s: %w", filepath.Join(dir, signingFile), err)
	}
	if k.Site == "" || k.Host == "" || len(k.AuthTokenKey) == 0 || len(k.ServerKeys) == 0 ||
		len(k.BrowserKeys) == 0 || k.RSA.Key == nil || k.EC.Key == nil || k.RSA.IsPublic() || k.EC.IsPublic() {
		return nil, fmt.Errorf("keys %s: incomplete (run setup again)", filepath.Join(dir, signingFile))
	}
	return &k, nil
}

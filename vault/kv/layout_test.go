package kv

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file"
)

// record is one record of SPEC §6 as written to Vault and as written in the keys file (file nil:
// the same fields). They differ where `vault kv put` stores strings the file holds typed.
type record struct {
	path  string // under sites/<site>/
	vault map[string]any
	file  map[string]any
}

const jwksJSON = `{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256","use":"sig",` +
	`"x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRjmnoTk5ikI-bzN1G_2-ZkUeKfH1v4dRL54FAQ"}]}`

func jwksObject(t testing.TB) map[string]any {
	var m map[string]any
	if err := yaml.Unmarshal([]byte(jwksJSON), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// layoutRecords is every record kind of SPEC §6, including the forms `vault kv put` writes.
func layoutRecords(t testing.TB) []record {
	jwks := jwksObject(t)
	return []record{
		{path: "server-tokens/k1", vault: map[string]any{"secret": "s3cret-one", "restricted_user": "", "disabled": false}},
		{path: "server-tokens/k2", vault: map[string]any{"secret": "s3cret-two", "restricted_user": "42", "disabled": true}},
		{path: "server-tokens/k3", // as `vault kv put … secret=… disabled=true` stores it
			vault: map[string]any{"secret": "s3cret-three", "restricted_user": "=jane%20doe", "disabled": "true"},
			file:  map[string]any{"secret": "s3cret-three", "restricted_user": "=jane%20doe", "disabled": true}},
		{path: "server-tokens/k4", vault: map[string]any{"secret": "only-a-secret"}},
		{path: "server-tokens/broken", vault: map[string]any{"restricted_user": "1"}}, // no secret: invalid
		{path: "browser-tokens/pub1", vault: map[string]any{"origins": []any{"*.example.com", "https://app.example.org"}}},
		{path: "browser-tokens/pub2", // a JSON list stored as a string by the CLI
			vault: map[string]any{"origins": `["https://a.example.com", "*.b.example.com"]`},
			file:  map[string]any{"origins": []any{"https://a.example.com", "*.b.example.com"}}},
		{path: "oauth", vault: map[string]any{"issuer": "https://docs.example.com", "audience": "docs", "jwks": jwks}},
		{path: "issuers/cxone", vault: map[string]any{"issuer": "https://cxone.example.com", "audience": "docs", "jwks_uri": "https://cxone.example.com/jwks"}},
		{path: "issuers/local", vault: map[string]any{"issuer": "http://127.0.0.1:9000", "audience": "docs", "jwks": jwks}},
		{path: "issuers/plainhttp", vault: map[string]any{"issuer": "http://evil.example.com", "audience": "docs", "jwks_uri": "http://evil.example.com/jwks"}}, // invalid
		{path: "idps/corp", vault: map[string]any{"issuer": "https://idp.example.com", "client_id": "docs-app", "max_age": 300, "jwks": jwks}},
		{path: "idps/other", // max_age as the CLI stores it
			vault: map[string]any{"issuer": "https://other.example.com", "client_id": "docs", "max_age": "600", "jwks_uri": "https://other.example.com/keys"},
			file:  map[string]any{"issuer": "https://other.example.com", "client_id": "docs", "max_age": 600, "jwks_uri": "https://other.example.com/keys"}},
		{path: "idps/nomaxage", vault: map[string]any{"issuer": "https://n.example.com", "client_id": "n", "jwks": jwksJSON}},
		{path: "legacy", vault: map[string]any{"apikey": "legacy-api-key"}},
	}
}

// authKeys are three Auth Token key generations, oldest first.
func authKeys() []string {
	var out []string
	for i := 0; i < 3; i++ {
		k := make([]byte, 32+i)
		for j := range k {
			k[j] = byte(i*31 + j)
		}
		out = append(out, base64.StdEncoding.EncodeToString(k))
	}
	return out
}

// TestLayoutMatchesFileSource writes every record kind to Vault and the same records to a keys
// file, and checks that both read back through vault.Store identically.
func TestLayoutMatchesFileSource(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, srv)
	recs := layoutRecords(t)
	for _, r := range recs {
		f.put(vault.SitePath("docs", r.path), r.vault)
	}
	// Auth Token generations: their creation times in the file are Vault's created_time.
	var gens []map[string]any // newest first, as the file lists them
	for _, k := range authKeys() {
		s, err := f.kv().Put(ctx, f.full(vault.SitePath("docs", "authtoken")), map[string]any{"key": k})
		if err != nil {
			t.Fatal(err)
		}
		gens = append([]map[string]any{{"key": k, "created": s.VersionMetadata.CreatedTime.Format(time.RFC3339Nano)}}, gens...)
	}

	site := map[string]any{"authtoken": gens}
	for _, r := range recs {
		fields := r.file
		if fields == nil {
			fields = r.vault
		}
		section, name, named := strings.Cut(r.path, "/")
		if !named {
			site[section] = fields
			continue
		}
		m, _ := site[section].(map[string]any)
		if m == nil {
			m = map[string]any{}
			site[section] = m
		}
		m[name] = fields
	}
	b, err := yaml.Marshal(map[string]any{"sites": map[string]any{"docs": site}})
	if err != nil {
		t.Fatal(err)
	}
	keysFile := filepath.Join(t.TempDir(), "keys.yaml")
	if err := os.WriteFile(keysFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	fsrc, err := file.Open(keysFile)
	if err != nil {
		t.Fatal(err)
	}

	fromVault := snapshot(ctx, t, f.store(f.src, vault.StoreOptions{}), "docs")
	fromFile := snapshot(ctx, t, f.store(fsrc, vault.StoreOptions{}), "docs")
	for k, want := range fromFile {
		if got := fromVault[k]; !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n vault: %#v\n file:  %#v", k, got, want)
		}
	}
	for k := range fromVault {
		if _, ok := fromFile[k]; !ok {
			t.Errorf("%s: only read from vault", k)
		}
	}

	// Both could be wrong the same way: check what they hold.
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"three auth token generations", len(fromVault["authtoken"].([]string)), 3},
		{"k2 disabled and restricted", fromVault["server k2"], "secret=s3cret-two restricted=\"42\" disabled=true"},
		{"k3 disabled from a string", fromVault["server k3"], "secret=s3cret-three restricted=\"=jane%20doe\" disabled=true"},
		{"k4 defaults", fromVault["server k4"], "secret=only-a-secret restricted=\"\" disabled=false"},
		{"record without secret is absent", fromVault["server broken"], "not found"},
		{"unknown key", fromVault["server nope"], "not found"},
		{"origins from a JSON string", fromVault["browser pub2"], "[https://a.example.com *.b.example.com]"},
		{"browser set", fromVault["browser set"], "pub1=[*.example.com https://app.example.org] pub2=[https://a.example.com *.b.example.com]"},
		{"issuers without the plain-http one", fromVault["issuers"], []string{"cxone https://cxone.example.com docs uri=https://cxone.example.com/jwks", "local http://127.0.0.1:9000 docs jwks=" + canonicalJWKS(t)}},
		{"idp max_age", fromVault["idps"], []string{
			"corp https://idp.example.com docs-app 5m0s jwks=" + canonicalJWKS(t),
			"nomaxage https://n.example.com n 10m0s jwks=" + jwksJSON,
			"other https://other.example.com docs 10m0s uri=https://other.example.com/keys"}},
		{"legacy", fromVault["legacy"], "legacy-api-key"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %#v, want %#v", c.name, c.got, c.want)
		}
	}
	w := fromVault["warnings"].([]string)
	if len(w) != 2 || !strings.Contains(strings.Join(w, "\n"), "issuers/plainhttp") || !strings.Contains(strings.Join(w, "\n"), "server-tokens/broken") {
		t.Errorf("warnings = %q, want the plain-http issuer and the secretless server key", w)
	}
}

func canonicalJWKS(t testing.TB) string {
	b, err := json.Marshal(jwksObject(t))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// snapshot reads every record kind of site through st into comparable strings.
func snapshot(ctx context.Context, t testing.TB, st *vault.Store, site string) map[string]any {
	t.Helper()
	out := map[string]any{}
	errText := func(err error) string {
		if errors.Is(err, vault.ErrNotFound) {
			return "not found"
		}
		return "error: " + err.Error()
	}
	if keys, err := st.AuthTokenKeys(ctx, site, 1000*time.Hour); err != nil {
		out["authtoken"] = errText(err)
	} else {
		var gens []string
		for _, g := range keys.Generations {
			gens = append(gens, fmt.Sprintf("v%d %s %s", g.Version, g.Created.UTC().Format(time.RFC3339Nano), hex.EncodeToString(g.Secret.Bytes())))
		}
		out["authtoken"] = gens
	}
	for _, n := range []string{"k1", "k2", "k3", "k4", "broken", "nope"} {
		if k, err := st.ServerKey(ctx, site, n); err != nil {
			out["server "+n] = errText(err)
		} else {
			out["server "+n] = fmt.Sprintf("secret=%s restricted=%q disabled=%v", k.Secret.Bytes(), k.RestrictedUser, k.Disabled)
		}
	}
	for _, n := range []string{"pub1", "pub2", "nope"} {
		if k, err := st.BrowserKey(ctx, site, n); err != nil {
			out["browser "+n] = errText(err)
		} else {
			out["browser "+n] = fmt.Sprint(k.Origins)
		}
	}
	if set, err := st.BrowserKeys(ctx, site); err != nil {
		out["browser set"] = errText(err)
	} else {
		var parts []string
		for _, k := range set.Keys {
			parts = append(parts, fmt.Sprintf("%s=%v", k.Name, k.Origins))
		}
		out["browser set"] = strings.Join(parts, " ")
	}
	issuer := func(i *vault.Issuer) string {
		if i.JWKSURI != "" {
			return fmt.Sprintf("%s %s %s uri=%s", i.Name, i.Issuer, i.Audience, i.JWKSURI)
		}
		return fmt.Sprintf("%s %s %s jwks=%s", i.Name, i.Issuer, i.Audience, i.JWKS)
	}
	if i, err := st.OAuthIssuer(ctx, site); err != nil {
		out["oauth"] = errText(err)
	} else {
		out["oauth"] = issuer(i)
	}
	if is, err := st.Issuers(ctx, site); err != nil {
		out["issuers"] = errText(err)
	} else {
		var l []string
		for _, i := range is {
			l = append(l, issuer(i))
		}
		out["issuers"] = l
	}
	if ps, err := st.IdPs(ctx, site); err != nil {
		out["idps"] = errText(err)
	} else {
		var l []string
		for _, p := range ps {
			src := "jwks=" + string(p.JWKS)
			if p.JWKSURI != "" {
				src = "uri=" + p.JWKSURI
			}
			l = append(l, fmt.Sprintf("%s %s %s %s %s", p.Name, p.Issuer, p.ClientID, p.MaxAge, src))
		}
		out["idps"] = l
	}
	if l, err := st.Legacy(ctx, site); err != nil {
		out["legacy"] = errText(err)
	} else {
		out["legacy"] = string(l.APIKey.Bytes())
	}
	out["warnings"] = st.Warnings()
	return out
}

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// The requests of the side-by-side comparison (bench/opaenvoy): one request per kind, the same
// bytes for every server and every call, as in the table ("same token").
var ghzKinds = []string{KindAnonymous, KindAuthToken, KindHS256, KindRS256}

// ghzPolicies are the OPA-Envoy policies of the comparison, each at data.envoy.authz.allow,
// OPA-Envoy's default decision path. Each allows what the agent allows for the same request:
// allow-all for anonymous requests (the agent's public routes), and a bearer JWT verified with
// io.jwt.decode_verify against the issuer's key, issuer and audience (the agent's OAuth checks:
// signature, iss, aud, exp, nbf).
var ghzPolicies = map[string]string{
	"allow": `package envoy.authz

import rego.v1

default allow := true
`,
	"hs256": `package envoy.authz

import rego.v1

default allow := false

allow if {
	[valid, _, _] := io.jwt.decode_verify(bearer, {"secret": {{json .Secret}}, "iss": {{json .Issuer}}, "aud": {{json .Audience}}})
	valid
}
` + ghzBearerRule,
	"rs256": `package envoy.authz

import rego.v1

default allow := false

allow if {
	[valid, _, _] := io.jwt.decode_verify(bearer, {"cert": {{json .JWKS}}, "iss": {{json .Issuer}}, "aud": {{json .Audience}}})
	valid
}
` + ghzBearerRule,
}

const ghzBearerRule = `
bearer := t if {
	v := input.attributes.request.http.headers.authorization
	startswith(v, "Bearer ")
	t := substring(v, 7, -1)
}
`

// ghzOPAConfig is OPA-Envoy's config: its gRPC server on addr with reflection (so ghz needs no
// proto files), the default path, no decision logs.
const ghzOPAConfig = `# Written by: load ghz. OPA-Envoy's config for bench/opaenvoy/compare.sh.
plugins:
  envoy_ext_authz_grpc:
    addr: %s
    path: envoy/authz/allow
    enable-reflection: true
decision_logs:
  console: false
`

// GHZFiles are what `load ghz` writes: per kind, one CheckRequest as ghz's JSON data
// (<kind>.json); per policy, an OPA-Envoy Rego policy (opa-<policy>.rego); and opa-config.yaml.
type GHZFiles map[string][]byte

// WriteGHZ builds the comparison's requests from keys and the policies that hold keys' secrets,
// and writes them into dir.
func WriteGHZ(keys *Keys, dir, opaAddr string, now time.Time) (GHZFiles, error) {
	files, err := ghzFiles(keys, opaAddr, now)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ghz: %w", err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, fmt.Errorf("ghz: %w", err)
		}
	}
	return files, nil
}

func ghzFiles(keys *Keys, opaAddr string, now time.Time) (GHZFiles, error) {
	if keys.HS256.Key == nil {
		return nil, errors.New("ghz: the keys have no HS256 secret (written by an older setup; run load setup --force)")
	}
	g, err := newGenerator(keys, MixOptions{Now: now})
	if err != nil {
		return nil, err
	}
	files := GHZFiles{}
	b := newBuilder(keys.Host, 0)
	for _, kind := range ghzKinds {
		items, err := g.valid(kind, 1, now)
		if err != nil {
			return nil, err
		}
		var req authv3.CheckRequest
		if err := proto.Unmarshal(b.encode(&items[0]), &req); err != nil {
			return nil, fmt.Errorf("ghz %s: %w", kind, err)
		}
		js, err := protojson.MarshalOptions{Indent: "  "}.Marshal(&req)
		if err != nil {
			return nil, fmt.Errorf("ghz %s: %w", kind, err)
		}
		files[kind+".json"] = append(js, '\n')
	}
	if g.err != nil {
		return nil, g.err
	}
	pub, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{keys.RSA.Public()}})
	if err != nil {
		return nil, err
	}
	vars := struct{ Secret, JWKS, Issuer, Audience string }{
		Secret: string(keys.HS256.Key.([]byte)), JWKS: string(pub), Issuer: keys.Issuer, Audience: keys.Audience}
	funcs := template.FuncMap{"json": func(s string) (string, error) {
		j, err := json.Marshal(s)
		return string(j), err
	}}
	for name, src := range ghzPolicies {
		t, err := template.New(name).Funcs(funcs).Parse(src)
		if err != nil {
			return nil, err
		}
		var out bytes.Buffer
		if err := t.Execute(&out, vars); err != nil {
			return nil, err
		}
		files["opa-"+name+".rego"] = out.Bytes()
	}
	files["opa-config.yaml"] = fmt.Appendf(nil, ghzOPAConfig, opaAddr)
	return files, nil
}

func cmdGHZ(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("ghz", `load ghz — write the side-by-side comparison's requests and OPA-Envoy policies

Writes into OUT, from the keys in DIR (load setup):
  anonymous.json authtoken.json hs256.json rs256.json
                  one CheckRequest each, as ghz's JSON data (ghz -D FILE): the same bytes
                  the agent is sent by 'load run' for that kind, one token per kind
  opa-allow.rego opa-hs256.rego opa-rs256.rego
                  OPA-Envoy policies (data.envoy.authz.allow): allow-all, and a bearer JWT
                  verified by io.jwt.decode_verify with the setup's secret or public key,
                  issuer and audience
  opa-config.yaml OPA-Envoy's config (gRPC on --opa-addr, reflection on)

bench/opaenvoy/compare.sh runs both servers with these files.`, stderr)
	var dir, out, opaAddr string
	fs.StringVar(&dir, "keys", "", "the setup directory (required)")
	fs.StringVar(&out, "out", "", "the directory to write (required)")
	fs.StringVar(&opaAddr, "opa-addr", "127.0.0.1:9391", "OPA-Envoy's gRPC listen address in opa-config.yaml")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if dir == "" || out == "" {
		fmt.Fprintln(stderr, "load ghz: --keys and --out are required")
		return errUsage
	}
	keys, err := LoadKeys(dir)
	if err != nil {
		return err
	}
	files, err := WriteGHZ(keys, out, opaAddr, time.Now())
	if err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(stdout, "wrote %s/{%s}\n", out, strings.Join(names, ","))
	return nil
}

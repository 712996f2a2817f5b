package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// specExample is SPEC §7's config, verbatim but for the policy path.
const specExample = `
grpc_addr: 127.0.0.1:9191
http_addr: 127.0.0.1:9192
keys:
  source: file            # or vault
  file: keys.yaml         # the embedded key source, relative to this file
  refresh: 30s
  max_stale: 1h
  vault:                  # address/token also from VAULT_ADDR / VAULT_TOKEN
    address: http://127.0.0.1:8200
    mount: secret
    prefix: tokenagent
    auth: {method: token}
sites:
  - id: docs
    hosts: [docs.example.com, "*.docs.example.com"]
    authtoken_ttl: 156h
    authtoken_rotation_grace: 156h
    server_token_window: 5m
    server_token_single_use: false
    legacy: {impersonation: false, apikey: false, unprefixed_server_tokens: false}
    routes:
      - {methods: [POST, PUT, DELETE], path: "/@api/deki/pages/*", require: user, scopes: [write]}
    policy: policies/docs.wasm
`

func TestParseConfigSpecExample(t *testing.T) {
	cfg, err := Parse([]byte(specExample), "/etc/tokenagent")
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Sites[0]
	switch {
	case cfg.Keys.File != "/etc/tokenagent/keys.yaml":
		t.Errorf("keys.file = %q, want it resolved against the config's directory", cfg.Keys.File)
	case cfg.Keys.Refresh.D() != 30*time.Second || cfg.Keys.MaxStale.D() != time.Hour:
		t.Errorf("refresh/max_stale = %v/%v", cfg.Keys.Refresh.D(), cfg.Keys.MaxStale.D())
	case s.AuthTokenTTL.D() != 156*time.Hour || s.ServerTokenWindow.D() != 5*time.Minute:
		t.Errorf("site durations = %v, %v", s.AuthTokenTTL.D(), s.ServerTokenWindow.D())
	case s.Policy != "/etc/tokenagent/policies/docs.wasm":
		t.Errorf("policy = %q", s.Policy)
	case s.Routes[0].Require != "user" || len(s.Routes[0].Methods) != 3 || s.Routes[0].Scopes[0] != "write":
		t.Errorf("route = %+v", s.Routes[0])
	case cfg.Keys.Vault.Mount != "secret" || cfg.Keys.Vault.Prefix != "tokenagent" || cfg.Keys.Vault.Auth.Method != "token":
		t.Errorf("vault = %+v", cfg.Keys.Vault)
	}
}

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := Parse([]byte("keys: {source: file, file: k.yaml}\nsites: [{id: a, hosts: [A.Example.COM.]}]\n"), "/x")
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Sites[0]
	if cfg.GRPCAddr != DefaultGRPCAddr || cfg.HTTPAddr != DefaultHTTPAddr {
		t.Errorf("addresses = %s %s", cfg.GRPCAddr, cfg.HTTPAddr)
	}
	if s.AuthTokenTTL.D() != 561600*time.Second || s.AuthTokenRotationGrace != s.AuthTokenTTL || s.ServerTokenWindow.D() != 300*time.Second {
		t.Errorf("site defaults = %+v", s)
	}
	if cfg.Keys.Refresh.D() != 30*time.Second || cfg.Keys.MaxStale.D() != time.Hour {
		t.Errorf("keys defaults = %+v", cfg.Keys)
	}
	if s.Hosts[0] != "a.example.com" {
		t.Errorf("host = %q, want lower case without the trailing dot", s.Hosts[0])
	}
}

func TestParseConfigErrors(t *testing.T) {
	base := "keys: {source: file, file: k.yaml}\n"
	site := "sites: [{id: docs, hosts: [docs.example.com]}]\n"
	tests := []struct {
		name, doc, want string
	}{
		{"unknown top-level field", base + site + "grpc_adr: x\n", "grpc_adr"},
		{"unknown site field", base + "sites: [{id: docs, hosts: [a.b], authtoken_tl: 1h}]\n", "authtoken_tl"},
		{"unknown route field", base + "sites: [{id: docs, hosts: [a.b], routes: [{path: /, requires: user}]}]\n", "requires"},
		{"no sites", base, "sites"},
		{"bad site id", base + "sites: [{id: Docs, hosts: [a.b]}]\n", "id"},
		{"site id too long", base + "sites: [{id: " + strings.Repeat("a", 64) + ", hosts: [a.b]}]\n", "id"},
		{"duplicate site id", base + "sites: [{id: a, hosts: [a.b]}, {id: a, hosts: [c.d]}]\n", "sites[1].id"},
		{"no hosts", base + "sites: [{id: a}]\n", "hosts"},
		{"host with a port", base + "sites: [{id: a, hosts: [\"a.b:80\"]}]\n", "hosts[0]"},
		{"wildcard inside a host", base + "sites: [{id: a, hosts: [\"a.*.b\"]}]\n", "hosts[0]"},
		{"host of two sites", base + "sites: [{id: a, hosts: [x.y]}, {id: b, hosts: [X.y]}]\n", "hosts"},
		{"bad duration", base + "sites: [{id: a, hosts: [a.b], authtoken_ttl: 6days}]\n", "6days"},
		{"negative duration", base + "sites: [{id: a, hosts: [a.b], server_token_window: -1s}]\n", "server_token_window"},
		{"bad require", base + "sites: [{id: a, hosts: [a.b], routes: [{path: /, require: admin}]}]\n", "require"},
		{"relative route path", base + "sites: [{id: a, hosts: [a.b], routes: [{path: x}]}]\n", "path"},
		{"star inside a route path", base + "sites: [{id: a, hosts: [a.b], routes: [{path: /a*/b}]}]\n", "path"},
		{"lower-case method", base + "sites: [{id: a, hosts: [a.b], routes: [{path: /, methods: [get]}]}]\n", "methods[0]"},
		{"scope with a space", base + "sites: [{id: a, hosts: [a.b], routes: [{path: /, scopes: [\"a b\"]}]}]\n", "scopes[0]"},
		{"no key source", site, "keys.source"},
		{"unknown key source", "keys: {source: consul}\n" + site, "keys.source"},
		{"file source without a file", "keys: {source: file}\n" + site, "keys.file"},
		{"max_stale below refresh", "keys: {source: file, file: k, refresh: 1m, max_stale: 30s}\n" + site, "keys.max_stale"},
		{"approle without role_id", "keys: {source: vault, vault: {auth: {method: approle, secret_id_file: f}}}\n" + site, "role_id"},
		{"kubernetes without role", "keys: {source: vault, vault: {auth: {method: kubernetes}}}\n" + site, "keys.vault.auth.role"},
		{"unknown auth method", "keys: {source: vault, vault: {auth: {method: ldap}}}\n" + site, "keys.vault.auth.method"},
		{"bad grpc_addr", base + site + "grpc_addr: nowhere\n", "grpc_addr"},
		{"relative socket path", base + site + "grpc_addr: unix://run/ta.sock\n", "grpc_addr"},
		{"unclean socket path", base + site + "grpc_addr: unix:///run/../ta.sock\n", "grpc_addr"},
		{"socket path too long", base + site + "grpc_addr: unix:///" + strings.Repeat("s", 120) + "\n", "grpc_addr"},
		{"unknown transport", base + site + "grpc_transport: netty\n", "grpc_transport"},
		{"socket mode not octal", base + site + "grpc_socket_mode: \"rw-rw----\"\n", "grpc_socket_mode"},
		{"socket mode the agent cannot use", base + site + "grpc_socket_mode: \"0060\"\n", "grpc_socket_mode"},
		{"bad log level", base + site + "log: {level: loud}\n", "log.level"},
		{"not YAML", "sites: [", "yaml"},
		{"grpc_tls without a key", base + site + "grpc_tls: {cert_file: c.pem}\n", "grpc_tls.key_file"},
		{"http_tls without a cert", base + site + "http_tls: {key_file: k.pem}\n", "http_tls.cert_file"},
		{"unknown TLS field", base + site + "grpc_tls: {cert_file: c, key_file: k, ca_file: x}\n", "ca_file"},
		{"tracing without an endpoint", base + site + "tracing: {insecure: true}\n", "tracing.otlp_endpoint"},
		{"sample ratio over 1", base + site + "tracing: {otlp_endpoint: \"127.0.0.1:4317\", sample_ratio: 1.5}\n", "tracing.sample_ratio"},
		{"negative sample ratio", base + site + "tracing: {otlp_endpoint: \"127.0.0.1:4317\", sample_ratio: -0.1}\n", "tracing.sample_ratio"},
		{"unknown replay store", base + site + "replay: {store: memcached}\n", "replay.store"},
		{"redis without an address", base + site + "replay: {store: redis}\n", "replay.redis.address"},
		{"a cluster seed that is not host:port", base + site + "replay: {store: redis, redis: {address: \"127.0.0.1:1,nowhere\"}}\n", "replay.redis.address"},
		{"unknown revocation store", base + site + "revocation: {store: etcd}\n", "revocation.store"},
		{"revocation settings without a store", base + site + "revocation: {on_stale: deny}\n", "revocation.store"},
		{"revocation without any redis", base + site + "revocation: {store: redis}\n", "revocation.redis.address"},
		{"revocation redis without an address", base + site + "revocation: {store: redis, redis: {tls: true}}\n", "revocation.redis.address"},
		{"unknown on_stale", base + site + "revocation: {store: redis, redis: {address: \"r:6379\"}, on_stale: ignore}\n", "revocation.on_stale"},
		{"max_stale under 2s", base + site + "revocation: {store: redis, redis: {address: \"r:6379\"}, max_stale: 500ms}\n", "revocation.max_stale"},
		{"negative jwt_lifetime", base + site + "revocation: {store: redis, redis: {address: \"r:6379\"}, jwt_lifetime: -1h}\n", "revocation.jwt_lifetime"},
		{"unknown mode", base + "sites: [{id: a, hosts: [a.b], mode: audit}]\n", "mode"},
		{"entrypoint without a policy", base + "sites: [{id: a, hosts: [a.b], policy_entrypoint: authz/allow}]\n", "policy_entrypoint"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc), "/x")
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not name %q", msg, tc.want)
			}
		})
	}
}

func TestLoadConfigNamesTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(p, []byte("keys: {source: file, file: k}\nsites: [{id: a, hosts: [a.b], nope: 1}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("error = %v, want the file and the field named", err)
	}
}

func TestDevExampleConfigIsValid(t *testing.T) {
	if _, err := Load("../../examples/dev/tokenagent.yaml"); err != nil {
		t.Fatal(err)
	}
}

func TestParseConfigVaultAppRoleFiles(t *testing.T) {
	cfg, err := Parse([]byte(`
keys: {source: vault, vault: {auth: {method: approle, role_id_file: role-id, secret_id_file: secret-id}}}
sites: [{id: a, hosts: [a.b]}]
`), "/etc/tokenagent")
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Keys.Vault.Auth
	if a.RoleIDFile != "/etc/tokenagent/role-id" || a.SecretIDFile != "/etc/tokenagent/secret-id" {
		t.Fatalf("auth files = %+v, want them resolved against the config's directory", a)
	}
}

// The production settings of SPEC §8, with their defaults and paths resolved.
func TestParseProductionSettings(t *testing.T) {
	cfg, err := Parse([]byte(`
keys: {source: file, file: k.yaml}
grpc_tls: {cert_file: tls/tls.crt, key_file: tls/tls.key, client_ca_file: /etc/ca.crt}
http_tls: {cert_file: tls/tls.crt, key_file: tls/tls.key}
grpc_reflection: true
tracing: {otlp_endpoint: "127.0.0.1:4317", insecure: true}
replay: {store: redis, redis: {address: "127.0.0.1:6379", password_file: redis.pass}}
sites:
  - {id: a, hosts: [a.b], mode: shadow}
  - {id: b, hosts: [c.d]}
`), "/etc/tokenagent")
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case cfg.GRPCTLS.CertFile != "/etc/tokenagent/tls/tls.crt" || cfg.GRPCTLS.ClientCAFile != "/etc/ca.crt":
		t.Errorf("grpc_tls = %+v", cfg.GRPCTLS)
	case cfg.HTTPTLS.ClientCAFile != "":
		t.Errorf("http_tls.client_ca_file = %q, want none", cfg.HTTPTLS.ClientCAFile)
	case !cfg.GRPCReflection:
		t.Error("grpc_reflection is off")
	case *cfg.Tracing.SampleRatio != DefaultSampleRatio || !cfg.Tracing.Insecure:
		t.Errorf("tracing = %+v", cfg.Tracing)
	case cfg.Replay.Store != ReplayRedis || cfg.Replay.Redis.KeyPrefix != "tokenagent:" || cfg.Replay.Redis.PasswordFile != "/etc/tokenagent/redis.pass":
		t.Errorf("replay = %+v", cfg.Replay)
	case cfg.Sites[0].Mode != ModeShadow || cfg.Sites[1].Mode != ModeEnforce:
		t.Errorf("modes = %q, %q", cfg.Sites[0].Mode, cfg.Sites[1].Mode)
	}
	plain, err := Parse([]byte("keys: {source: file, file: k.yaml}\nsites: [{id: a, hosts: [a.b]}]\n"), "/etc/tokenagent")
	if err != nil {
		t.Fatal(err)
	}
	if plain.GRPCTLS != nil || plain.Tracing != nil || plain.Replay.Store != ReplayLocal || plain.GRPCReflection {
		t.Errorf("defaults: tls %v tracing %v replay %q reflection %v", plain.GRPCTLS, plain.Tracing, plain.Replay.Store, plain.GRPCReflection)
	}
	if got := cfg.StartOnly(plain); strings.Join(got, ",") != "grpc_tls,http_tls,grpc_reflection,tracing,replay" {
		t.Errorf("StartOnly = %v", got)
	}
	if got := cfg.StartOnly(cfg); len(got) != 0 {
		t.Errorf("StartOnly of itself = %v", got)
	}
	// A reload keeps the running start-up settings and applies the rest.
	reloaded, err := Parse([]byte("keys: {source: file, file: k.yaml}\ngrpc_addr: unix:///run/ta.sock\ngrpc_transport: grpc-go\n"+
		"sites: [{id: a, hosts: [a.b]}, {id: z, hosts: [z.z]}]\n"), "/etc/tokenagent")
	if err != nil {
		t.Fatal(err)
	}
	changed := reloaded.KeepStartOnly(cfg)
	if strings.Join(changed, ",") != "grpc_addr,grpc_transport,grpc_tls,http_tls,grpc_reflection,tracing,replay" {
		t.Errorf("KeepStartOnly reports %v", changed)
	}
	if len(reloaded.StartOnly(cfg)) != 0 || len(reloaded.Sites) != 2 {
		t.Errorf("after KeepStartOnly: start-only differences %v, %d sites (want the new file's 2)", reloaded.StartOnly(cfg), len(reloaded.Sites))
	}
}

func TestParseListener(t *testing.T) {
	cfg, err := Parse([]byte("keys: {source: file, file: k.yaml}\ngrpc_addr: unix:///run/tokenagent/ext_authz.sock\n"+
		"grpc_socket_mode: \"0666\"\nsites: [{id: a, hosts: [a.b]}]\n"), "/x")
	if err != nil {
		t.Fatal(err)
	}
	network, addr := cfg.GRPCListen()
	mode, _ := cfg.SocketMode()
	if network != "unix" || addr != "/run/tokenagent/ext_authz.sock" || mode != 0o666 || cfg.GRPCTransport != TransportTokenagent {
		t.Errorf("listener: %s %s %v %s", network, addr, mode, cfg.GRPCTransport)
	}
	cfg.GRPCAddr = "unix://relative.sock" // the command line's override is checked as the file is
	if err := cfg.CheckListeners(); err == nil || !strings.Contains(err.Error(), "grpc_addr") {
		t.Errorf("CheckListeners: %v", err)
	}
}

// TestRevocationDefaults: a revocation list takes replay.redis when it names no Redis of its own,
// and its defaults; a Redis Cluster's seed list is an address; Sentinel's settings, the password
// file relative to the config's folder.
func TestRevocationDefaults(t *testing.T) {
	cfg, err := Parse([]byte("keys: {source: file, file: k}\nsites: [{id: a, hosts: [a.b]}]\n"+
		"replay: {store: redis, redis: {address: \"r1:6379,r2:6379\", username: ta, key_prefix: \"fleet:\"}}\n"+
		"revocation: {store: redis}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Revocation
	if !r.Enabled() || r.Redis == nil || r.Redis.Address != "r1:6379,r2:6379" || r.Redis.Username != "ta" ||
		r.Redis.KeyPrefix != "fleet:" || r.MaxStale.D() != DefaultRevocationMaxStale || r.OnStale != OnStaleServe ||
		r.JWTLifetime.D() != DefaultJWTLifetime {
		t.Fatalf("revocation = %+v (redis %+v)", r, r.Redis)
	}
	r.Redis.Address = "elsewhere:6379"
	if cfg.Replay.Redis.Address != "r1:6379,r2:6379" {
		t.Fatal("the revocation list's Redis settings share memory with the replay store's")
	}
	dir := t.TempDir()
	sentinel, err := Parse([]byte("keys: {source: file, file: k}\nsites: [{id: a, hosts: [a.b]}]\n"+
		"revocation: {store: redis, redis: {address: \"s1:26379,s2:26379\", sentinel_master: mymaster, "+
		"sentinel_password_file: sentinel.pw}}\n"), dir)
	if err != nil {
		t.Fatal(err)
	}
	if sr := sentinel.Revocation.Redis; sr.SentinelMaster != "mymaster" || sr.SentinelPasswordFile != filepath.Join(dir, "sentinel.pw") {
		t.Fatalf("sentinel settings = %+v", sr)
	}
	none, err := Parse([]byte("keys: {source: file, file: k}\nsites: [{id: a, hosts: [a.b]}]\n"), t.TempDir())
	if err != nil || none.Revocation.Enabled() {
		t.Fatalf("no revocation section: %+v, %v", none.Revocation, err)
	}
}

package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/agent/agenttest"
	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/bench/internal/h2client"
	"github.com/tokenagent/tokenagent/extauthz"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file/filetest"
)

// Whole checks per kind that the other files leave out: the OAuth bearer JWT through
// agent.Check (a cache hit, and a token the agent has never seen), every kind through the real
// ext_authz gRPC server and client over loopback, and the transport's own conversions.
//
//	go test ./bench -run '^$' -bench 'CheckOAuth|CheckGRPC|ExtAuthz' -benchmem

var ckNow = time.Now()

// ckKeys are one RSA, EC and Ed25519 key, generated once per benchmark binary.
var ckKeys = sync.OnceValues(func() ([]jose.JSONWebKey, error) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	_, dk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return []jose.JSONWebKey{
		{Key: rk, KeyID: "k-rs256", Algorithm: "RS256"},
		{Key: ek, KeyID: "k-es256", Algorithm: "ES256"},
		{Key: dk, KeyID: "k-eddsa", Algorithm: "EdDSA"},
	}, nil
})

// ckAgent is an agent for docs.example.com with every kind's keys: Auth Token, a server key,
// a browser key, and an OAuth issuer trusting the three JWT keys.
func ckAgent(b *testing.B) (*agent.Agent, []jose.JSONWebKey) {
	b.Helper()
	keys, pubs := ckJWTKeys(b)
	store := ckStore(b, pubs)
	cfg, err := config.Parse([]byte(`
keys: {source: file, file: keys.yaml}
sites:
  - id: docs
    hosts: [docs.example.com]
    routes:
      - {methods: [POST, PUT, DELETE], path: "/@api/deki/pages/*", require: user, scopes: [write]}
      - {path: "/@api/deki/site/*", require: authenticated}
`), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	a := agenttest.New(b, cfg, agent.RuntimeOptions{Keys: store, Logger: slog.New(slog.DiscardHandler)})
	return a, keys
}

// ckJWTKeys are the three JWT keys and their public halves as JWK JSON.
func ckJWTKeys(b *testing.B) ([]jose.JSONWebKey, []string) {
	b.Helper()
	keys, err := ckKeys()
	if err != nil {
		b.Fatal(err)
	}
	var pubs []string
	for _, k := range keys {
		j, err := k.Public().MarshalJSON()
		if err != nil {
			b.Fatal(err)
		}
		pubs = append(pubs, string(j))
	}
	return keys, pubs
}

// ckStore is a key store for docs with every kind's keys, the OAuth issuer trusting pubs.
func ckStore(b *testing.B, pubs []string) *vault.Store {
	b.Helper()
	yaml := hmKeys() + "    browser-tokens:\n      pub1: {origins: [\"https://app.example.org\"]}\n" +
		"    oauth:\n      issuer: \"https://docs.example.com\"\n      audience: docs\n" +
		"      jwks: {keys: [" + strings.Join(pubs, ", ") + "]}\n"
	return filetest.Store(b, yaml, vault.StoreOptions{Logger: slog.New(slog.DiscardHandler)})
}

// ckJWT mints an access token for user i.
func ckJWT(b *testing.B, k jose.JSONWebKey, i int) string {
	tok, err := token.MintJWT(k, map[string]any{"iss": "https://docs.example.com", "aud": "docs",
		"sub": fmt.Sprintf("user-%d", i), "client_id": "bench-app", "scope": "openid pages:read pages:write",
		"iat": ckNow.Unix(), "exp": ckNow.Add(24 * time.Hour).Unix(), "jti": fmt.Sprintf("jti-%d", i)})
	if err != nil {
		b.Fatal(err)
	}
	return tok
}

// ckPools are distinct tokens per algorithm for the first-sight benchmark, minted once on every
// core (RS256 signing takes milliseconds).
var ckPools sync.Map // alg -> []string

const ckPoolSize = 512

func ckPool(b *testing.B, k jose.JSONWebKey) []string {
	if p, ok := ckPools.Load(k.Algorithm); ok {
		return p.([]string)
	}
	toks := make([]string, ckPoolSize)
	var wg sync.WaitGroup
	n := runtime.GOMAXPROCS(0)
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(toks); i += n {
				toks[i] = ckJWT(b, k, i)
			}
		}()
	}
	wg.Wait()
	ckPools.Store(k.Algorithm, toks)
	return toks
}

func bearerRequest(tok string) *agent.Request {
	return &agent.Request{Method: "GET", Scheme: "https", Host: "docs.example.com", Path: "/@api/deki/pages/home/info",
		Headers: envoyHeaders(map[string]string{"authorization": "Bearer " + tok})}
}

// BenchmarkCheckOAuth is a whole agent.Check of a request with a bearer JWT, per algorithm:
// cache-hit is a token verified before (the verified-token cache answers); first-sight is a
// token the agent has not seen, so its signature is verified (a fresh agent, built with the
// timer stopped, every ckPoolSize tokens). The verifier alone: BenchmarkOAuthFirstSight and
// BenchmarkOAuthCacheHit in oauth_test.go.
func BenchmarkCheckOAuth(b *testing.B) {
	_, keys := ckAgent(b)
	ctx := context.Background()
	for _, k := range keys {
		b.Run(k.Algorithm+"/cache-hit", func(b *testing.B) {
			a, _ := ckAgent(b)
			req := bearerRequest(ckJWT(b, k, 0))
			for range 100 { // ristretto admits asynchronously
				if d := a.Check(ctx, req); !d.Allowed {
					b.Fatalf("denied: %s", d.Reason)
				}
				time.Sleep(time.Millisecond)
			}
			b.ReportAllocs()
			for b.Loop() {
				a.Check(ctx, req)
			}
		})
		b.Run(k.Algorithm+"/first-sight", func(b *testing.B) {
			pool := ckPool(b, k)
			reqs := make([]*agent.Request, len(pool))
			for i, t := range pool {
				reqs[i] = bearerRequest(t)
			}
			var a *agent.Agent
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%len(reqs) == 0 {
					b.StopTimer()
					a, _ = ckAgent(b)
					b.StartTimer()
				}
				if d := a.Check(ctx, reqs[i%len(reqs)]); !d.Allowed {
					b.Fatalf("denied: %s", d.Reason)
				}
			}
		})
	}
}

// envoyCheckRequest is the CheckRequest Envoy's ext_authz filter sends for a GET with extra
// headers.
func envoyCheckRequest(path string, extra map[string]string) *authv3.CheckRequest {
	h := envoyHeaders(extra)
	h[":path"] = path
	peer := func(ip string, port uint32) *authv3.AttributeContext_Peer {
		return &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: peer("203.0.113.7", 51234), Destination: peer("10.0.0.2", 443),
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: h["x-request-id"], Method: "GET", Headers: h, Path: path, Host: "docs.example.com",
			Scheme: "https", Protocol: "HTTP/2"}},
	}}
}

// ckRequests are one CheckRequest per kind (the OAuth one a cache hit once warm).
func ckRequests(b *testing.B, keys []jose.JSONWebKey) []struct {
	name string
	req  *authv3.CheckRequest
} {
	auth := token.MintAuthToken(vault.NewSecret(hmAuthKey), "42", ckNow)
	return []struct {
		name string
		req  *authv3.CheckRequest
	}{
		{"authtoken", envoyCheckRequest("/@api/deki/pages/home/contents", map[string]string{"cookie": "theme=dark; authtoken=" + auth + "; lang=en"})},
		{"server", envoyCheckRequest("/@api/deki/site/settings", map[string]string{"x-deki-token": token.MintServerToken("k1", vault.NewSecret([]byte(hmSecret)), "42", ckNow)})},
		{"browser", envoyCheckRequest("/@api/deki/pages/home/info", map[string]string{"x-deki-token": "pub1", "origin": "https://app.example.org", "cookie": "authtoken=" + auth})},
		{"oauth-es256", envoyCheckRequest("/@api/deki/pages/home/info", map[string]string{"authorization": "Bearer " + ckJWT(b, keys[1], 1)})},
		{"anonymous", envoyCheckRequest("/@api/deki/pages/home/contents", nil)},
		{"denied", envoyCheckRequest("/@api/deki/site/settings", nil)},
	}
}

// BenchmarkCheckGRPC is a whole check per kind through each ext_authz transport (tokenagent's
// own, and gRPC-Go's server) over TCP loopback, called as Envoy calls it: a client with static
// windows that sends no BDP pings (bench/internal/h2client, which allocates nothing once warm,
// so allocs/op are the server's), requests serialized once with go-control-plane's types.
// ns/op is the machine's time per check with client and server sharing its cores (1e9/ns =
// checks/s), cpu-ns/op the CPU time both used per check; 16 × GOMAXPROCS calls are in flight
// over two connections (two Envoy workers). …-serial is one call at a time (the round trip's
// latency). BenchmarkCheckGRPCClient below is the same through gRPC-Go's client.
func BenchmarkCheckGRPC(b *testing.B) {
	a, keys := ckAgent(b)
	reqs := ckRequests(b, keys)
	for _, transport := range []string{"tokenagent", "grpc-go"} {
		b.Run(transport, func(b *testing.B) {
			addr := ckServe(b, a, transport)
			var clients [2]*h2client.Client
			for i := range clients {
				c, err := h2client.Dial(addr)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { c.Close() })
				clients[i] = c
			}
			for _, c := range reqs {
				msg, err := proto.Marshal(c.req)
				if err != nil {
					b.Fatal(err)
				}
				call := func(cl *h2client.Client) {
					r, err := cl.Call("ext-authz", "/envoy.service.auth.v3.Authorization/Check", msg)
					if err != nil || r.Status != 0 {
						b.Fatalf("%s: status %d, %v", c.name, r.Status, err)
					}
				}
				for range 100 { // warm the OAuth cache, the connections and the key store
					call(clients[0])
					call(clients[1])
				}
				b.Run(c.name, func(b *testing.B) {
					b.SetParallelism(16) // 16 × GOMAXPROCS calls in flight, as many Envoy workers would
					b.ReportAllocs()
					var next atomic.Uint32
					cpu0 := cpuTime()
					b.RunParallel(func(pb *testing.PB) {
						cl := clients[next.Add(1)%2]
						for pb.Next() {
							call(cl)
						}
					})
					b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
				})
				b.Run(c.name+"-serial", func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						call(clients[0])
					}
				})
			}
		})
	}
}

// BenchmarkCheckGRPCClient is BenchmarkCheckGRPC's parallel case through gRPC-Go's client with
// go-control-plane's generated messages (both sides' allocations counted).
func BenchmarkCheckGRPCClient(b *testing.B) {
	a, keys := ckAgent(b)
	for _, transport := range []string{"tokenagent", "grpc-go"} {
		b.Run(transport, func(b *testing.B) {
			conn, err := grpc.NewClient(ckServe(b, a, transport), grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithStaticStreamWindowSize(h2client.Window), grpc.WithStaticConnWindowSize(h2client.Window))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { conn.Close() })
			client := authv3.NewAuthorizationClient(conn)
			ctx := context.Background()
			for _, c := range ckRequests(b, keys) {
				for range 100 {
					if _, err := client.Check(ctx, c.req); err != nil {
						b.Fatal(err)
					}
				}
				b.Run(c.name, func(b *testing.B) {
					b.SetParallelism(16)
					b.ReportAllocs()
					cpu0 := cpuTime()
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if _, err := client.Check(ctx, c.req); err != nil {
								b.Error(err)
								return
							}
						}
					})
					b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
				})
			}
		})
	}
}

// ckServe serves a on a loopback port with the named transport until the benchmark ends, and
// returns the address.
func ckServe(b *testing.B, a *agent.Agent, transport string) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ext := extauthz.NewServer(a)
	gs := grpc.NewServer(extauthz.ServerOptions()...) // as the daemon serves
	ext.Register(gs)
	if transport == "grpc-go" {
		go func() { _ = gs.Serve(lis) }()
		b.Cleanup(gs.Stop)
		return lis.Addr().String()
	}
	tr := ext.NewTransport(extauthz.TransportOptions{Fallback: gs})
	go func() { _ = tr.Serve(lis) }()
	b.Cleanup(tr.Close)
	return lis.Addr().String()
}

// cpuTime is the CPU time this process has used (user and system), which a busy machine
// disturbs much less than the wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkExtAuthz is the transport's own work per check, without the network: the
// CheckRequest into an agent.Request, the Decision into a CheckResponse, and encoding the
// CheckResponse as the server sends it.
func BenchmarkExtAuthz(b *testing.B) {
	a, keys := ckAgent(b)
	ctx := context.Background()
	for _, c := range ckRequests(b, keys) {
		req, err := extauthz.ToRequest(c.req)
		if err != nil {
			b.Fatal(err)
		}
		d := a.Check(ctx, req)
		b.Run("ToRequest/"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = extauthz.ToRequest(c.req)
			}
		})
		b.Run("ToCheckResponse+Marshal/"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = proto.Marshal(extauthz.ToCheckResponse(d))
			}
		})
		b.Run("UnmarshalRequest/"+c.name, func(b *testing.B) {
			raw, _ := proto.Marshal(c.req)
			b.ReportAllocs()
			for b.Loop() {
				var m authv3.CheckRequest
				_ = proto.Unmarshal(raw, &m)
			}
		})
	}
}

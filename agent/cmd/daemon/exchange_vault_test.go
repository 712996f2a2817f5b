package daemon_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/hashicorp/vault/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/agent/token/idtokentest"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/users"
	"github.com/tokenagent/tokenagent/vault/vaulttest"
)

// agentProcess is a `tokenagent serve` process started by a test.
type agentProcess struct {
	cmd      *exec.Cmd
	grpcAddr string
	httpAddr string
	client   authv3.AuthorizationClient
	logs     chan string
}

// startAgentProcess runs bin serve with the config at cfgPath on free loopback ports and
// connects a gRPC client to it. The process is stopped (SIGTERM) when the test ends.
func startAgentProcess(t *testing.T, bin, cfgPath string) *agentProcess {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--config", cfgPath, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "VAULT_TOKEN=")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &agentProcess{cmd: cmd, logs: make(chan string, 1000)}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	// Every log line goes to p.logs (dropped when nobody reads); the serving line gives the
	// addresses.
	serving := make(chan map[string]any, 1)
	go func() {
		lines := bufio.NewScanner(stderr)
		lines.Buffer(make([]byte, 64<<10), 1<<20)
		for lines.Scan() {
			var rec map[string]any
			if json.Unmarshal(lines.Bytes(), &rec) == nil && rec["msg"] == "tokenagent serving" {
				serving <- rec
			}
			select {
			case p.logs <- lines.Text():
			default:
			}
		}
		close(serving)
	}()
	select {
	case rec, ok := <-serving:
		if !ok {
			drain(t, p)
			t.Fatal("the agent exited before serving")
		}
		p.grpcAddr, _ = rec["grpc"].(string)
		p.httpAddr, _ = rec["http"].(string)
	case <-time.After(60 * time.Second):
		drain(t, p)
		t.Fatal("the agent never said it was serving")
	}
	conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p.client = authv3.NewAuthorizationClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := get(t, "http://"+p.httpAddr+"/readyz")
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent never became ready: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Ready, and reading keys: a session checks (a read refused while logging in would keep
	// the source marked down for a moment).
	session := map[string]string{"cookie": "authtoken=" + token.MintAuthToken(vault.NewSecret(authKey), "1", time.Now())}
	for {
		resp, err := p.client.Check(context.Background(), envoyRequest("GET", "docs.example.com", "/", session))
		if err == nil && resp.GetOkResponse() != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent never verified a session: %v %v", resp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

// TestExchangeTwoAgentsOneVault: two tokenagent processes sharing one real Vault (logged in
// with a token of the example least-privilege policy) each exchange id_tokens of the same 50
// new users, concurrently, and of 50 users of their own: every (provider, sub) gets exactly
// one id, no id is given to two users, Vault's directory holds exactly those, and a session
// from one agent is accepted by the other.
func TestExchangeTwoAgentsOneVault(t *testing.T) {
	v := vaulttest.Start(t)
	ctx := context.Background()
	dir := t.TempDir()

	bin := filepath.Join(dir, "tokenagent")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/tokenagent/tokenagent/agent/cmd/tokenagent").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}

	p := idtokentest.NewProvider(t, "https://idp.example.com", "docs-app")
	kv := v.Client.KVv2("secret")
	for path, data := range map[string]map[string]any{
		"tokenagent/sites/docs/authtoken": {"key": base64.StdEncoding.EncodeToString(authKey)},
		"tokenagent/sites/docs/idps/corp": {"issuer": p.Issuer, "client_id": p.ClientID, "jwks": p.JWKS(t, true)},
	} {
		if _, err := kv.Put(ctx, path, data); err != nil {
			t.Fatalf("seed %s: %v", path, err)
		}
	}
	// The agents log in with a token of the example policy, so the test also checks that the
	// policy allows the directory's layout.
	policy, err := os.ReadFile("../../../examples/vault/tokenagent-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Client.Sys().PutPolicy("tokenagent", string(policy)); err != nil {
		t.Fatal(err)
	}
	sec, err := v.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"tokenagent"}, TTL: "1h", NoDefaultPolicy: false})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "vault-token"), sec.Auth.ClientToken)
	cfgPath := filepath.Join(dir, "tokenagent.yaml")
	writeFile(t, cfgPath, `
keys:
  source: vault
  vault: {address: "`+v.Addr+`", auth: {method: token, token_file: vault-token}}
sites:
  - id: docs
    hosts: [docs.example.com]
`)
	agents := []*agentProcess{startAgentProcess(t, bin, cfgPath), startAgentProcess(t, bin, cfgPath)}

	type result struct {
		sub, id, session string
	}
	var mu sync.Mutex
	var results []result
	var wg sync.WaitGroup
	for i, a := range agents {
		for n := range 50 {
			for _, sub := range []string{fmt.Sprint("shared-", n), fmt.Sprintf("own-%d-%d", i, n)} {
				wg.Go(func() {
					tok := p.Mint(t, p.Claims(time.Now(), sub, nil))
					cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
					defer cancel()
					resp, err := a.client.Check(cctx, exchangeRequest("docs.example.com", "application/jwt", tok, true))
					if err != nil {
						t.Errorf("%s: %v", sub, err)
						return
					}
					dr := resp.GetDeniedResponse()
					if dr.GetStatus().GetCode() != 200 {
						t.Errorf("%s at agent %d: %d %s", sub, i, dr.GetStatus().GetCode(), dr.GetBody())
						return
					}
					var u map[string]string
					if err := json.Unmarshal([]byte(dr.GetBody()), &u); err != nil || u["username"] != sub {
						t.Errorf("%s: body %s", sub, dr.GetBody())
						return
					}
					m := sessionCookie.FindStringSubmatch(deniedHeaders(resp)["set-cookie"])
					if m == nil {
						t.Errorf("%s: set-cookie %q", sub, deniedHeaders(resp)["set-cookie"])
						return
					}
					mu.Lock()
					results = append(results, result{sub, u["@id"], m[1]})
					mu.Unlock()
				})
			}
		}
	}
	wg.Wait()
	if t.Failed() {
		for _, a := range agents {
			drain(t, a)
		}
		t.FailNow()
	}
	if len(results) != 200 {
		t.Fatalf("%d exchanges answered, want 200", len(results))
	}
	idOf := map[string]string{}
	subOf := map[string]string{}
	for _, r := range results {
		if prev, ok := idOf[r.sub]; ok && prev != r.id {
			t.Errorf("%s got two ids: %s and %s", r.sub, prev, r.id)
		}
		idOf[r.sub] = r.id
		if other, ok := subOf[r.id]; ok && other != r.sub {
			t.Errorf("id %s given to %s and to %s", r.id, other, r.sub)
		}
		subOf[r.id] = r.sub
	}
	if len(idOf) != 150 || len(subOf) != 150 {
		t.Fatalf("%d identities with %d ids, want 150 and 150", len(idOf), len(subOf))
	}

	// Vault's directory holds exactly these bindings.
	list, err := v.Client.Logical().List("secret/metadata/tokenagent/sites/docs/users/by-subject/corp")
	if err != nil || list == nil {
		t.Fatalf("list by-subject: %v", err)
	}
	if keys, _ := list.Data["keys"].([]any); len(keys) != 150 {
		t.Errorf("%d by-subject records, want 150", len(keys))
	}
	for sub, id := range idOf {
		s, err := kv.Get(ctx, "tokenagent/"+users.SubjectPath("docs", "corp", sub))
		if err != nil || s.Data["id"] != id {
			t.Errorf("%s: Vault says %v (%v), handed out %s", sub, s, err, id)
		}
	}

	// A session one agent made is accepted by the other, as that user.
	for i, r := range results[:4] {
		other := agents[(i+1)%2]
		resp, err := other.client.Check(ctx, envoyRequest("GET", "docs.example.com", "/", map[string]string{"cookie": "authtoken=" + r.session}))
		if err != nil {
			t.Fatal(err)
		}
		ok := resp.GetOkResponse()
		if ok == nil {
			t.Fatalf("%s's session refused by the other agent: %v", r.sub, resp)
		}
		for _, h := range ok.GetHeaders() {
			if h.GetHeader().GetKey() == "x-auth-user" && h.GetHeader().GetValue() != r.id {
				t.Errorf("%s's session is user %s, want %s", r.sub, h.GetHeader().GetValue(), r.id)
			}
		}
	}
}

// drain copies what an agent logged into the test log (after a failure).
func drain(t *testing.T, a *agentProcess) {
	t.Helper()
	for {
		select {
		case l := <-a.logs:
			t.Log(strings.TrimSpace(l))
		default:
			return
		}
	}
}

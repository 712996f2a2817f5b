package daemon_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/hashicorp/vault/api"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/agent/token/idtokentest"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/users"
	"github.com/tokenagent/tokenagent/vault/vaulttest"
)

// startAgentProcess runs `tokenagent serve` on the config at cfgPath (daemontest.Process) and
// waits until it is ready and reading keys: a session checks (a read refused while logging in
// would keep the source marked down for a moment).
func startAgentProcess(t *testing.T, cfgPath string) (*daemontest.Process, authv3.AuthorizationClient) {
	t.Helper()
	p := daemontest.StartProcess(t, cfgPath, nil)
	client := p.Client(t)
	daemontest.Eventually(t, "the agent to be ready", p.Ready)
	session := map[string]string{"cookie": "authtoken=" + token.MintAuthToken(vault.NewSecret(authKey), "1", time.Now())}
	daemontest.Eventually(t, "the agent to verify a session", func() bool {
		resp, err := client.Check(context.Background(), daemontest.CheckRequest("GET", "docs.example.com", "/", session))
		return err == nil && resp.GetOkResponse() != nil
	})
	return p, client
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
	daemontest.WriteFile(t, filepath.Join(dir, "vault-token"), sec.Auth.ClientToken)
	cfgPath := filepath.Join(dir, "tokenagent.yaml")
	daemontest.WriteFile(t, cfgPath, `
keys:
  source: vault
  vault: {address: "`+v.Addr+`", auth: {method: token, token_file: vault-token}}
sites:
  - id: docs
    hosts: [docs.example.com]
`)
	_, first := startAgentProcess(t, cfgPath)
	_, second := startAgentProcess(t, cfgPath)
	agents := []authv3.AuthorizationClient{first, second}

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
					resp, err := a.Check(cctx, exchangeRequest("docs.example.com", "application/jwt", tok, true))
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
		t.FailNow() // the agents' logs are in the test log (daemontest)
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
		resp, err := other.Check(ctx, daemontest.CheckRequest("GET", "docs.example.com", "/", map[string]string{"cookie": "authtoken=" + r.session}))
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

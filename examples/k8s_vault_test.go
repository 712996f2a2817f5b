package examples_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/vaulttest"
)

// TestK8sVaultKubernetesAuth runs vault-kubernetes-auth.sh against a real Vault dev server,
// then runs the real agent with the ConfigMap's config: it logs in with Kubernetes auth using
// the pod's projected token, reads a key and allows a request signed with it. No Kubernetes API
// server can run here, so a small TokenReview endpoint stands in for it (as the API server
// does, it accepts the reviewer's token, and the pod token for the audience it was issued for).
func TestK8sVaultKubernetesAuth(t *testing.T) {
	srv := vaulttest.Start(t)
	ctx := context.Background()
	const ns, sa = "tokenagent", "tokenagent"

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mint := func(ns, sa, aud string) string {
		s, err := jwt.Signed(signer).Claims(map[string]any{
			"iss": "https://kubernetes.default.svc.cluster.local", "sub": "system:serviceaccount:" + ns + ":" + sa,
			"aud": []string{aud}, "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(),
			"kubernetes.io": map[string]any{"namespace": ns, "serviceaccount": map[string]any{"name": sa, "uid": "uid-" + sa}},
		}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	podToken := mint(ns, sa, "vault")
	reviewer := mint(ns, "vault-token-reviewer", "https://kubernetes.default.svc.cluster.local")
	tokens := map[string][3]string{ // token → namespace, service account, audience
		podToken:                        {ns, sa, "vault"},
		mint("default", "app", "vault"): {"default", "app", "vault"},
		mint(ns, sa, "other"):           {ns, sa, "other"},
	}
	var reviews, unauthorized atomic.Int32
	kube := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+reviewer {
			unauthorized.Add(1)
			http.Error(w, `{"kind":"Status","status":"Failure","code":401}`, http.StatusUnauthorized)
			return
		}
		reviews.Add(1)
		var req struct {
			Spec struct {
				Token     string   `json:"token"`
				Audiences []string `json:"audiences"`
			} `json:"spec"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		st := map[string]any{"authenticated": false}
		if who, ok := tokens[req.Spec.Token]; ok {
			auds := req.Spec.Audiences
			if len(auds) == 0 {
				auds = []string{"https://kubernetes.default.svc.cluster.local"}
			}
			if slices.Contains(auds, who[2]) {
				st = map[string]any{"authenticated": true, "audiences": []string{who[2]}, "user": map[string]any{
					"username": "system:serviceaccount:" + who[0] + ":" + who[1], "uid": "uid-" + who[1],
					"groups": []string{"system:serviceaccounts", "system:serviceaccounts:" + who[0]}}}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": st})
	}))
	defer kube.Close()

	// The script, twice: a second run changes nothing that matters.
	for run := 1; run <= 2; run++ {
		cmd := exec.Command("sh", filepath.Join(k8sDir, "vault-kubernetes-auth.sh"))
		cmd.Env = append(os.Environ(), "VAULT_ADDR="+srv.Addr, "VAULT_TOKEN="+srv.Token, "VAULT_BIN="+vaulttest.BinaryPath(),
			"KUBERNETES_HOST="+kube.URL, "TOKEN_REVIEWER_JWT="+reviewer, "DISABLE_LOCAL_CA_JWT=true")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("vault-kubernetes-auth.sh (run %d): %v\n%s\n%s", run, err, out, srv.Logs())
		}
		if strings.Contains(string(out), reviewer[:40]) {
			t.Fatal("the script printed the reviewer token")
		}
		if run == 1 {
			t.Logf("vault-kubernetes-auth.sh:\n%s", out)
		}
	}

	// A key for the ConfigMap's site, in Vault.
	const secret = "k8s-example-secret"
	if _, err := srv.Client.KVv2("secret").Put(ctx, "tokenagent/"+vault.SitePath("docs", "server-tokens", "k1"),
		map[string]any{"secret": secret}); err != nil {
		t.Fatal(err)
	}

	// The agent, with the ConfigMap's config: only Vault's address and where the projected
	// token lives differ.
	o := loadK8s(t)
	cm := o.configMaps["tokenagent/tokenagent-config"]
	cfg, err := config.Parse([]byte(cm.Data["tokenagent.yaml"]), "/etc/tokenagent")
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeFiles(t, filepath.Dir(tokenFile), map[string]string{"token": podToken})
	cfg.Keys.Vault.Address = srv.Addr
	cfg.Keys.Vault.Auth.TokenFile = tokenFile
	cfg.Policies.CacheDir = t.TempDir()
	// The Secret cert-manager would write (certificates.yaml): the agent's pair for its Service
	// name and the CA, which also signs the client certificate the check below presents.
	ca := daemontest.NewCA(t, "tokenagent CA")
	crt, crtKey := ca.Issue(t, "tokenagent.tokenagent.svc", false)
	ccrt, ckey := ca.Issue(t, "envoy-gateway", true)
	tlsDir := t.TempDir()
	writeFiles(t, tlsDir, map[string]string{"tls.crt": string(crt), "tls.key": string(crtKey), "ca.crt": string(ca.PEM())})
	for _, f := range []*string{&cfg.GRPCTLS.CertFile, &cfg.GRPCTLS.KeyFile, &cfg.GRPCTLS.ClientCAFile} {
		*f = filepath.Join(tlsDir, filepath.Base(*f))
	}
	pair, err := tls.X509KeyPair(ccrt, ckey)
	if err != nil {
		t.Fatal(err)
	}
	// Waits for /readyz: the Kubernetes login worked.
	ag := daemontest.StartConfig(t, cfg, daemontest.Options{WaitReady: true, ClientTLS: &tls.Config{
		RootCAs: ca.Pool(), Certificates: []tls.Certificate{pair}, ServerName: "tokenagent.tokenagent.svc"}})

	tok := token.MintServerToken("k1", vault.NewSecret([]byte(secret)), "=jane_doe", time.Now())
	resp := ag.Check(t, "POST", "docs.example.com", "/@api/deki/pages/home", map[string]string{"x-deki-token": tok})
	if got := allowedAs(t, resp); got != "=jane_doe" {
		t.Errorf("allowed as %q, want =jane_doe", got)
	}
	if reviews.Load() == 0 || unauthorized.Load() != 0 {
		t.Errorf("TokenReview: %d reviews, %d without the reviewer token", reviews.Load(), unauthorized.Load())
	}

	// The role admits only the agent's service account, with a token for the audience "vault".
	for tok, who := range tokens {
		sec, err := srv.Client.Logical().Write("auth/kubernetes/login", map[string]any{"role": cfg.Keys.Vault.Auth.Role, "jwt": tok})
		ok := err == nil && sec != nil && sec.Auth != nil
		if want := tok == podToken; ok != want {
			t.Errorf("login as %s/%s for audience %s: admitted %v, want %v (%v)", who[0], who[1], who[2], ok, want, err)
		}
		if ok && !slices.Contains(sec.Auth.TokenPolicies, "tokenagent") {
			t.Errorf("the role's token has policies %v, want tokenagent", sec.Auth.TokenPolicies)
		}
	}
}

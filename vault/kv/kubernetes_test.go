package kv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/hashicorp/vault/api"

	"github.com/tokenagent/tokenagent/vault"
)

// TestKubernetesAuth logs in with Vault's real Kubernetes auth method. No Kubernetes API server
// can run here, so a small TokenReview endpoint stands in for it (Vault itself is real): it
// accepts the one service account token the test mints.
func TestKubernetesAuth(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const ns, sa, uid = "tokenagent", "tokenagent", "6a4b1c3e-0000-4000-8000-000000000001"
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	saJWT, err := jwt.Signed(signer).Claims(map[string]any{
		"iss":                                    "kubernetes/serviceaccount",
		"sub":                                    "system:serviceaccount:" + ns + ":" + sa,
		"kubernetes.io/serviceaccount/namespace": ns,
		"kubernetes.io/serviceaccount/service-account.name": sa,
		"kubernetes.io/serviceaccount/service-account.uid":  uid,
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	var reviews atomic.Int32
	kube := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
			http.NotFound(w, r)
			return
		}
		var req struct {
			Spec struct {
				Token string `json:"token"`
			} `json:"spec"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		reviews.Add(1)
		status := map[string]any{"authenticated": false}
		if req.Spec.Token == saJWT {
			status = map[string]any{"authenticated": true, "user": map[string]any{
				"username": "system:serviceaccount:" + ns + ":" + sa, "uid": uid}}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})
	}))
	t.Cleanup(kube.Close)

	c := srv.Client
	mount := "k8s-" + testPrefix(t)[2:]
	if err := c.Sys().EnableAuthWithOptions(mount, &api.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Logical().Write("auth/"+mount+"/config", map[string]any{
		"kubernetes_host": kube.URL, "disable_local_ca_jwt": true,
	}); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, srv)
	if err := c.Sys().PutPolicy(mount, `path "secret/data/`+f.prefix+`/*" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Logical().Write("auth/"+mount+"/role/agent", map[string]any{
		"bound_service_account_names": sa, "bound_service_account_namespaces": ns,
		"token_policies": mount, "token_ttl": "1h",
	}); err != nil {
		t.Fatal(err)
	}
	p := vault.SitePath("docs", "server-tokens", "k1")
	f.put(p, map[string]any{"secret": "s"})

	src := f.newSource(Options{Auth: Auth{Method: AuthKubernetes, Role: "agent", MountPath: mount,
		TokenFile: writeFile(t, "sa-token", saJWT)}})
	if _, err := src.Read(ctx, p); err != nil {
		t.Fatalf("read after kubernetes login: %v", err)
	}
	if reviews.Load() == 0 {
		t.Error("Vault never asked the TokenReview endpoint")
	}

	// A wrong service account token: the login fails and Ready says why.
	bad, err := New(Options{Address: srv.Addr, Prefix: f.prefix, Logger: quietLogger(),
		Auth:       Auth{Method: AuthKubernetes, Role: "agent", MountPath: mount, TokenFile: writeFile(t, "bad-token", saJWT[:len(saJWT)-4]+"AAAA")},
		minBackoff: 10 * time.Millisecond, maxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	bad.Start(ctx)
	defer bad.Close()
	eventually(t, "a failed kubernetes login reported by Ready", func() error {
		err := bad.Ready()
		if err == nil {
			t.Fatal("login with a wrong service account token succeeded")
		}
		if got := err.Error(); !strings.Contains(got, "kubernetes") || !strings.Contains(got, "403") {
			return err
		}
		return nil
	})
	if strings.Contains(bad.Ready().Error(), saJWT[:20]) {
		t.Error("Ready leaks the service account token")
	}
}

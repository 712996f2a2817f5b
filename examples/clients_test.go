package examples_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
)

const (
	docsHost      = "docs.example.com"
	clientsKey    = "k1"
	clientsSecret = "s3cret-ü_with unicode" // the secret is UTF-8 bytes, as stored
)

// snippet is one client snippet, run as a real process.
type snippet struct {
	name string
	argv []string // the command up to KEY SECRET USER
	// epochFlag and urlFlag are its option names.
	epochFlag, urlFlag string
}

// snippets finds the interpreters and builds the Go snippet. A missing interpreter fails the
// test: CI machines have python3 and node.
func snippets(t *testing.T) []snippet {
	t.Helper()
	var out []snippet
	for _, s := range []struct{ tool, name, file string }{
		{"python3", "python", "clients/python/server_token.py"},
		{"node", "node", "clients/node/server_token.mjs"},
	} {
		bin, err := exec.LookPath(s.tool)
		if err != nil {
			t.Fatalf("%s is needed to test %s: %v (install it: CI machines have it)", s.tool, s.file, err)
		}
		abs, err := filepath.Abs(s.file)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, snippet{s.name, []string{bin, abs}, "--epoch", "--url"})
	}
	gobin := filepath.Join(t.TempDir(), "server-token")
	if b, err := exec.Command("go", "build", "-o", gobin, "./clients/go").CombinedOutput(); err != nil {
		t.Fatalf("go build ./examples/clients/go: %v\n%s", err, b)
	}
	return append(out, snippet{"go", []string{gobin}, "-epoch", "-url"})
}

// run runs the snippet with options and KEY SECRET USER, and returns its standard output.
func (s snippet) run(opts []string, key, secret, user string) (string, error) {
	argv := append(append(append([]string{}, s.argv...), opts...), key, secret, user)
	cmd := exec.Command(argv[0], argv[1:]...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), errors.New(err.Error() + ": " + stderr.String())
	}
	return string(out), nil
}

// clientUsers are the users the snippets sign for: a numeric id, and usernames with "_" (the
// token's separator), spaces, non-ASCII letters and the characters URL encoders disagree on.
var clientUsers = []string{
	"42",
	"=jane_doe",
	"=Jürgen Müller_2",
	"=李 小龍",
	"=o'brien (ops)!*~+x@example.com",
}

// TestClientSnippets mints tokens with each snippet as a real process and sends them through a
// real agent's gRPC Check: each is allowed as the right user. A fixed epoch also makes each
// snippet's token byte for byte the one `tokenagent mint server` makes.
//
// Each snippet also sends one real HTTP request with its token to a small front that asks the
// agent over gRPC, as Envoy would, and answers with the user (or the agent's denial).
func TestClientSnippets(t *testing.T) {
	ag := startAgent(t, docsSiteConfig(t))
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		headers := map[string]string{}
		for k, v := range r.Header {
			headers[strings.ToLower(k)] = strings.Join(v, ",")
		}
		resp, err := ag.Client.Check(r.Context(), daemontest.CheckRequest(r.Method, docsHost, r.URL.RequestURI(), headers))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		if d := resp.GetDeniedResponse(); d != nil {
			w.WriteHeader(int(d.GetStatus().GetCode()))
			_, _ = w.Write([]byte(d.GetBody()))
			return
		}
		var user string
		for _, h := range resp.GetOkResponse().GetHeaders() {
			if h.GetHeader().GetKey() == "x-auth-user" {
				user = h.GetHeader().GetValue()
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"user": user})
	}))
	defer front.Close()

	for _, s := range snippets(t) {
		t.Run(s.name, func(t *testing.T) {
			for _, user := range clientUsers {
				want := token.MintServerToken(clientsKey, vault.NewSecret([]byte(clientsSecret)), user, time.Unix(1700000000, 0))
				got, err := s.run([]string{s.epochFlag, "1700000000"}, clientsKey, clientsSecret, user)
				if err != nil {
					t.Fatalf("%s: %v", user, err)
				}
				if strings.TrimSpace(got) != want {
					t.Errorf("%s at a fixed epoch:\n got %s\nwant %s (tokenagent's own MintServerToken)", user, strings.TrimSpace(got), want)
				}

				tok, err := s.run(nil, clientsKey, clientsSecret, user)
				if err != nil {
					t.Fatalf("%s: %v", user, err)
				}
				tok = strings.TrimSpace(tok)
				resp := ag.Check(t, "POST", docsHost, "/@api/deki/pages/home", map[string]string{"x-deki-token": tok})
				if got, want := allowedAs(t, resp), expectedUser(user); got != want {
					t.Errorf("%s: allowed as x-auth-user %q, want %q", user, got, want)
				}
			}
			// A wrong secret is refused: the agent really checks what the snippets sign.
			tok, err := s.run(nil, clientsKey, "not-the-secret", "42")
			if err != nil {
				t.Fatal(err)
			}
			resp := ag.Check(t, "GET", docsHost, "/", map[string]string{"x-deki-token": strings.TrimSpace(tok)})
			if codes.Code(resp.GetStatus().GetCode()) != codes.Unauthenticated {
				t.Errorf("a token signed with a wrong secret: status %d, want UNAUTHENTICATED", resp.GetStatus().GetCode())
			}

			// One request through the front: allowed as the user; a bad token gets the
			// agent's 401 and JSON body, and the snippet exits non-zero.
			user := "=Jürgen Müller_2"
			out, err := s.run([]string{s.urlFlag, front.URL + "/@api/deki/users/current?dream.out.format=json"}, clientsKey, clientsSecret, user)
			if err != nil {
				t.Fatalf("request: %v\n%s", err, out)
			}
			status, body, _ := strings.Cut(out, "\n")
			var answer struct{ User string }
			if status != "HTTP 200" || json.Unmarshal([]byte(body), &answer) != nil || answer.User != expectedUser(user) {
				t.Errorf("answer %q, want HTTP 200 and user %q", out, expectedUser(user))
			}
			out, err = s.run([]string{s.urlFlag, front.URL + "/"}, clientsKey, "not-the-secret", user)
			if err == nil || !strings.HasPrefix(out, "HTTP 401\n") || !strings.Contains(out, `"bad_signature"`) {
				t.Errorf("a refused request: %q (%v), want HTTP 401 with the agent's JSON and a non-zero exit", out, err)
			}

			// Bad input is refused by the snippet itself, with a non-zero exit.
			for _, bad := range [][2]string{{"k_1", "42"}, {clientsKey, "4x2"}, {clientsKey, "="}} {
				if out, err := s.run(nil, bad[0], clientsSecret, bad[1]); err == nil {
					t.Errorf("key %q user %q: accepted (%s)", bad[0], bad[1], out)
				}
			}
		})
	}
}

// expectedUser is the x-auth-user of a token for user: the id, or "=" and the URL-encoded name.
func expectedUser(user string) string {
	if strings.HasPrefix(user, "=") {
		return "=" + url.QueryEscape(user[1:])
	}
	return user
}

// docsSiteConfig is one site (docsHost) with one server key, from an embedded key file.
func docsSiteConfig(t *testing.T) *config.Config {
	t.Helper()
	dir := t.TempDir()
	secret, _ := json.Marshal(clientsSecret)
	writeFiles(t, dir, map[string]string{
		"keys.yaml": "sites:\n  docs:\n    server-tokens:\n      " + clientsKey + ": {secret: " + string(secret) + "}\n",
		"tokenagent.yaml": `
keys: {source: file, file: keys.yaml}
sites:
  - id: docs
    hosts: [` + docsHost + `]
    routes:
      - {methods: [POST], path: "/@api/deki/pages/*", require: user}
`,
	})
	cfg, err := config.Load(filepath.Join(dir, "tokenagent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

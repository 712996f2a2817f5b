package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tokenagent/tokenagent/plugins/opatest"
)

// TestGHZRequestsAllowedByBoth checks the side-by-side comparison (bench/opaenvoy/compare.sh)
// compares like with like: every request it sends is allowed by the OPA-Envoy policy it is sent
// with, as written (evaluated by the real opa on OPA-Envoy's input, the request as protojson),
// and by tokenagent over real gRPC with the setup's config; and each JWT policy refuses the
// requests it is not meant for, so that an allow-all policy by mistake would fail.
func TestGHZRequestsAllowedByBoth(t *testing.T) {
	if _, err := opatest.Binary(); err != nil {
		t.Fatal(err)
	}
	dir, keys := testSetup(t)
	out := t.TempDir()
	files, err := WriteGHZ(keys, out, "127.0.0.1:9391", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if disk, err := os.ReadFile(filepath.Join(out, name)); err != nil || string(disk) != string(b) {
			t.Errorf("%s: not written as returned (%v)", name, err)
		}
	}
	if !strings.Contains(string(files["opa-config.yaml"]), "addr: 127.0.0.1:9391") {
		t.Errorf("opa-config.yaml lacks the address:\n%s", files["opa-config.yaml"])
	}
	// The pairs compare.sh runs, and the pairs that must be refused.
	tests := []struct {
		policy, request string
		allow           bool
	}{
		{"allow", KindAnonymous, true},
		{"allow", KindAuthToken, true},
		{"hs256", KindHS256, true},
		{"rs256", KindRS256, true},
		{"hs256", KindRS256, false},
		{"hs256", KindAnonymous, false},
		{"rs256", KindHS256, false},
		{"rs256", KindAnonymous, false},
	}
	for _, tc := range tests {
		t.Run(tc.policy+"/"+tc.request, func(t *testing.T) {
			var input any
			if err := json.Unmarshal(files[tc.request+".json"], &input); err != nil {
				t.Fatal(err)
			}
			rego := map[string]string{"policy.rego": string(files["opa-"+tc.policy+".rego"])}
			got := string(opatest.Eval(t, rego, input, "data.envoy.authz.allow"))
			want := `[{"result":false}]`
			if tc.allow {
				want = `[{"result":true}]`
			}
			if strings.Join(strings.Fields(got), "") != want {
				t.Errorf("opa eval: %s, want %s", got, want)
			}
		})
	}

	// tokenagent: every request kind is allowed as sent.
	conn, err := grpc.NewClient(startAgent(t, dir), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	for _, kind := range ghzKinds {
		var req authv3.CheckRequest
		if err := protojson.Unmarshal(files[kind+".json"], &req); err != nil {
			t.Fatalf("%s.json: %v", kind, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := client.Check(ctx, &req)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if codes.Code(resp.GetStatus().GetCode()) != codes.OK {
			t.Errorf("%s: tokenagent denied it: %v", kind, resp.GetDeniedResponse())
		}
	}
}

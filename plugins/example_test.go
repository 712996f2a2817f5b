package plugins_test

import (
	"context"
	"log"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/plugins"
)

// An engine for the agent: compiled modules kept on disk, metrics registered.
func ExampleNewEngine() {
	ctx := context.Background()
	e, err := plugins.NewEngine(ctx, plugins.EngineOptions{
		CacheDir:   "/var/cache/tokenagent/wasm",
		Registerer: prometheus.DefaultRegisterer,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close(ctx)
}

// Loading a site's policy, watched for changes.
func ExampleEngine_Load() {
	ctx := context.Background()
	e, err := plugins.NewEngine(ctx, plugins.EngineOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close(ctx)
	m, err := e.Load(ctx, "policies/docs.wasm", plugins.ModuleOptions{
		Name:     "docs",
		Deadline: 5 * time.Millisecond,
		Watch:    true,
	})
	if err != nil {
		log.Fatal(err) // names the file and what is wrong with it
	}
	log.Println(m.Status().Hash)
}

// Evaluating a request after its credential is verified and route rules passed.
func ExampleModule_Evaluate() {
	var m *plugins.Module // from Engine.Load
	out, err := m.Evaluate(context.Background(), &plugins.Input{
		Site: "docs", Kind: "authtoken", User: "42",
		Method: "PUT", Path: "/@api/deki/pages/1/contents", Host: "docs.example.com",
		Headers: [][2]string{{"accept", "application/json"}},
	})
	switch {
	case err != nil:
		// deny: policy_error (fail closed)
	case !out.Allow:
		// deny: policy_denied, with out.Status (403 by default), out.Reason, out.ResponseHeaders
	default:
		// allow: add out.Headers to the upstream request, out.ResponseHeaders to the response
	}
}

// Package deploytest tests what tokenagent ships for deployment: the Helm chart
// (examples/helm/tokenagent), rendered with Helm's own Go library for its default values and
// variants, linted, and every object parsed into the real Kubernetes, cert-manager and
// Prometheus Operator types; and the alerts and dashboard, whose every expression is parsed with
// Prometheus' own PromQL parser and whose every metric is served by a running agent.
//
// It is a module of its own so that Helm, Prometheus and cert-manager stay out of tokenagent's
// dependencies; .ci/test runs it.
package deploytest

// Package deploytest tests what tokenagent ships for deployment: the Helm chart
// (examples/helm/tokenagent), rendered with Helm's own Go library for its default values and
// variants, linted, and every object parsed into the real Kubernetes, cert-manager and
// Prometheus Operator types; the alerts and dashboard, whose every expression is parsed with
// Prometheus' own PromQL parser and whose every metric is served by a running agent; and the
// mesh examples (examples/istio, examples/gateway), parsed into Istio's, the Gateway API's and
// Envoy Gateway's own types, their references checked against the chart rendered with their
// values.
//
// It is a module of its own so that Helm, Prometheus, cert-manager, Istio and Envoy Gateway stay
// out of tokenagent's dependencies; .ci/test runs it.
package deploytest

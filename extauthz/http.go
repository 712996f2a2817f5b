package extauthz

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/token"
)

// The HTTP front's fixed endpoints; Envoy's is HTTPOptions.EnvoyPathPrefix (default
// config.DefaultEnvoyPathPrefix).
const (
	// NginxPath answers nginx `auth_request` subrequests.
	NginxPath = "/nginx"
	// TraefikPath answers Traefik `forwardAuth` requests.
	TraefikPath = "/traefik"
	// AnswerPrefix serves the requests the agent answers itself (the identity token exchange,
	// CORS preflights) as an upstream: the proxy forwards the client's request under it.
	AnswerPrefix = "/answer"
)

// Endpoint names one convention of the HTTP front (a metric label and a log field).
type Endpoint string

// The HTTP front's endpoints.
const (
	EndpointEnvoy   Endpoint = "envoy"
	EndpointNginx   Endpoint = "nginx"
	EndpointTraefik Endpoint = "traefik"
	EndpointAnswer  Endpoint = "answer"
	// EndpointUnknown is a path that is none of the above (answered 404).
	EndpointUnknown Endpoint = "unknown"
)

// Headers the HTTP front reads or writes besides the agent's own.
const (
	// HeaderDecisionID carries the decision id (agent.DecisionID) on every answer of the front.
	HeaderDecisionID = "x-auth-decision-id"
	// HeaderStatus carries, on the nginx endpoint, the real status of an answer that nginx can
	// only be told as 403 (auth_request understands 2xx, 401 and 403 only).
	HeaderStatus = "x-auth-status"
	// HeaderEnvoyRemove lists the client-sent x-auth-* headers Envoy must remove upstream
	// (Envoy's HTTP ext_authz reads it from an allowing answer).
	HeaderEnvoyRemove = "x-envoy-auth-headers-to-remove"
	// headerEnvoyPartialBody is set by Envoy when it sent only part of the body.
	headerEnvoyPartialBody = "x-envoy-auth-partial-body"

	headerOriginalMethod = "x-original-method"
	headerOriginalURI    = "x-original-uri"
	headerOriginalHost   = "x-original-host"
	headerForwardedProto = "x-forwarded-proto"
	headerForwardedHost  = "x-forwarded-host"
	headerForwardedURI   = "x-forwarded-uri"
	headerForwardedMeth  = "x-forwarded-method"
)

// MaxHTTPBody is the most of a request body the HTTP front reads: one byte over the identity
// token exchange's 16 KiB limit, so an oversized body is seen as such (413).
const MaxHTTPBody = 16<<10 + 1

// HTTPOptions tune an HTTPHandler.
type HTTPOptions struct {
	// EnvoyPathPrefix is the path_prefix of Envoy's http_service (default "/envoy").
	EnvoyPathPrefix string
	// Metrics count the front's answers (nil: unregistered ones).
	Metrics *HTTPMetrics
	// Logger receives the front's problem logs (requests a proxy should never send); decisions
	// are logged by the agent. Nil: the front logs nothing (as the gRPC Server without
	// WithLogger); it never writes to the process-wide slog.Default().
	Logger *slog.Logger
}

// HTTPHandler is the HTTP authorization front: a second transport over the same
// agent.Check as the gRPC Server, for proxies that speak HTTP to their auth service.
//
//	h := extauthz.NewHTTPHandler(a, extauthz.HTTPOptions{})
//	http.ListenAndServe("127.0.0.1:9193", h)
//
// It serves four endpoints, each with its own trusted headers (see extauthz/README.md, "HTTP front"
// section for the proxy configurations):
//
//   - {EnvoyPathPrefix}/<original path> — Envoy's HTTP ext_authz service: the original method,
//     path (after the prefix) and Host, and the headers Envoy's allowed_headers let through.
//     Allowed: 200 with the x-auth-* headers to set upstream, x-envoy-auth-headers-to-remove
//     for spoofed ones, and the CORS response headers. Denied: the denial's status, headers and
//     JSON body.
//   - /nginx — nginx auth_request: X-Original-Method, X-Original-URI (required) and
//     X-Original-Host (else Host). Allowed: 200 with x-auth-* headers. Denied: 401 as it is;
//     every other status as 403 with x-auth-status holding the real one (nginx turns anything
//     but 2xx, 401 and 403 into a 500). The front's own errors (404 not_found, 400
//     invalid_request: a proxy misconfiguration) go as they are, so nginx fails with a 500.
//   - /traefik — Traefik forwardAuth: X-Forwarded-Method, -Proto, -Host and -Uri (Host and Uri
//     required). Allowed: 200 with x-auth-* headers. Denied: status, headers and JSON body.
//   - /answer/<original path> — the proxy forwards the client's request itself: the agent's
//     own answers (token exchange, CORS preflight) and denials are sent as they are; a request
//     the agent would let through is not its to answer (421).
//
// An own answer that a convention would take for "allowed" (any 2xx on nginx and Traefik, 200
// on Envoy) is never sent as one: a request the agent answers itself must not reach the
// upstream. It is 421 misdirected_request there (nginx: 403 with x-auth-status 421), and the
// proxy should route those requests to /answer.
//
// # Notes
//
//   - Safe for concurrent use; SetChecker swaps the checker (config reload), in-flight
//     requests finish on the one they started with.
//   - The front trusts the forwarding headers of the endpoint it is called on, and only those:
//     it must be reachable only by the proxy, which must overwrite those headers.
type HTTPHandler struct {
	checker     atomic.Pointer[checkerBox]
	envoyPrefix string
	metrics     *HTTPMetrics
	log         *slog.Logger
}

// NewHTTPHandler returns an HTTPHandler deciding with c.
func NewHTTPHandler(c Checker, opts HTTPOptions) *HTTPHandler {
	if opts.EnvoyPathPrefix == "" {
		opts.EnvoyPathPrefix = config.DefaultEnvoyPathPrefix
	}
	if opts.Metrics == nil {
		opts.Metrics = NewHTTPMetrics(nil)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	h := &HTTPHandler{envoyPrefix: strings.TrimSuffix(opts.EnvoyPathPrefix, "/"),
		metrics: opts.Metrics, log: opts.Logger}
	h.SetChecker(c)
	return h
}

// SetChecker swaps the checker (for example after a config reload).
func (h *HTTPHandler) SetChecker(c Checker) { h.checker.Store(&checkerBox{c}) }

// ServeHTTP implements http.Handler.
func (h *HTTPHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ep, rest := h.route(r)
	if ep == EndpointUnknown {
		h.writeError(w, ep, false, http.StatusNotFound, "not_found", "this is tokenagent's HTTP authorization front: use "+
			h.envoyPrefix+"/…, "+NginxPath+", "+TraefikPath+" or "+AnswerPrefix+"/…")
		return
	}
	req, problem := h.toRequest(ep, rest, r)
	if problem != "" {
		h.log.Warn("HTTP front: unusable authorization request; check the proxy's configuration",
			"endpoint", string(ep), "problem", problem)
		h.writeError(w, ep, false, http.StatusBadRequest, "invalid_request", problem)
		return
	}
	d := h.checker.Load().Check(r.Context(), req)
	h.write(w, ep, d)
}

// route finds the endpoint of r and, for the prefix endpoints, the original request target
// that follows the prefix.
func (h *HTTPHandler) route(r *http.Request) (Endpoint, string) {
	switch r.URL.Path {
	case NginxPath:
		return EndpointNginx, ""
	case TraefikPath:
		return EndpointTraefik, ""
	}
	target := r.RequestURI
	if !strings.HasPrefix(target, "/") {
		target = r.URL.RequestURI() // absolute-form request target
	}
	if rest, ok := cutPathPrefix(target, AnswerPrefix); ok {
		return EndpointAnswer, rest
	}
	if rest, ok := cutPathPrefix(target, h.envoyPrefix); ok {
		return EndpointEnvoy, rest
	}
	return EndpointUnknown, ""
}

// cutPathPrefix removes prefix from the request target when it is a whole path segment
// prefix: "/envoy/a?b" → "/a?b", "/envoy" → "/", "/envoy?x" → "/?x", "/envoyx" → no.
func cutPathPrefix(target, prefix string) (string, bool) {
	if !strings.HasPrefix(target, prefix) {
		return "", false
	}
	rest := target[len(prefix):]
	switch {
	case rest == "":
		return "/", true
	case rest[0] == '/':
		return rest, true
	case rest[0] == '?':
		return "/" + rest, true
	}
	return "", false
}

// toRequest turns the authorization request into an agent.Request by the endpoint's
// convention. problem is non-empty when the request lacks what its convention requires.
func (h *HTTPHandler) toRequest(ep Endpoint, rest string, r *http.Request) (*agent.Request, string) {
	headers := flattenHTTPHeader(r.Header)
	req := &agent.Request{Method: r.Method, Host: r.Host, Path: rest, Headers: headers,
		Scheme: headers[headerForwardedProto]}
	switch ep {
	case EndpointNginx:
		req.Path = headers[headerOriginalURI]
		if req.Path == "" {
			return nil, "X-Original-URI is missing: nginx must send proxy_set_header X-Original-URI $request_uri"
		}
		if m := headers[headerOriginalMethod]; m != "" {
			req.Method = m
		}
		if oh := headers[headerOriginalHost]; oh != "" {
			req.Host = oh
		}
	case EndpointTraefik:
		req.Path, req.Host = headers[headerForwardedURI], headers[headerForwardedHost]
		if req.Path == "" || req.Host == "" {
			return nil, "X-Forwarded-Uri or X-Forwarded-Host is missing: this endpoint is for Traefik's forwardAuth"
		}
		if m := headers[headerForwardedMeth]; m != "" {
			req.Method = m
		}
	}
	// The target goes to the agent as the proxy forwarded it: the agent refuses what is not a
	// plain path (an absolute-form target, a fragment, control characters; SPEC §2a), exactly
	// as over gRPC.
	if req.Scheme == "" {
		req.Scheme = "http"
		if r.TLS != nil {
			req.Scheme = "https"
		}
	}
	// The pseudo-headers Envoy's gRPC CheckRequest carries, so the agent (and a site policy)
	// sees one shape whichever transport asked.
	headers[":authority"], headers["host"] = req.Host, req.Host
	headers[":method"], headers[":path"], headers[":scheme"] = req.Method, req.Path, req.Scheme

	if r.Body != nil && r.Body != http.NoBody {
		b, _ := io.ReadAll(io.LimitReader(r.Body, MaxHTTPBody+1))
		if len(b) > MaxHTTPBody {
			b, req.BodyTruncated = b[:MaxHTTPBody], true
		}
		req.Body = b
	}
	if strings.EqualFold(headers[headerEnvoyPartialBody], "true") {
		req.BodyTruncated = true
	}
	return req, ""
}

// flattenHTTPHeader lower-cases header names and joins repeated headers with "," (cookies
// with "; "), as Envoy does for a CheckRequest.
func flattenHTTPHeader(h http.Header) map[string]string {
	out := make(map[string]string, len(h)+5)
	for k, vs := range h {
		if len(vs) == 0 {
			continue
		}
		name := strings.ToLower(k)
		sep := ","
		if name == "cookie" {
			sep = "; "
		}
		out[name] = strings.Join(vs, sep)
	}
	return out
}

// write sends the decision by the endpoint's convention.
func (h *HTTPHandler) write(w http.ResponseWriter, ep Endpoint, d *agent.Decision) {
	hdr := w.Header()
	if id := d.ID.String(); id != "" {
		hdr.Set(HeaderDecisionID, id)
	}
	switch {
	case d.Allowed && ep == EndpointAnswer:
		h.writeError(w, ep, true, http.StatusMisdirectedRequest, "misdirected_request",
			"this request is not one the agent answers itself: send it through an authorization endpoint")
	case d.Allowed:
		for _, x := range d.UpstreamHeaders {
			hdr.Set(x.Name, x.Value)
		}
		if ep == EndpointEnvoy && len(d.RemoveHeaders) > 0 {
			hdr.Set(HeaderEnvoyRemove, strings.Join(d.RemoveHeaders, ","))
		}
		for _, x := range d.ResponseHeaders {
			hdr.Set(x.Name, x.Value)
		}
		hdr.Set("content-length", "0")
		h.status(w, ep, http.StatusOK)
	case d.Answered && readAsAllow(ep, d.Status):
		h.writeError(w, ep, true, http.StatusMisdirectedRequest, "misdirected_request",
			"the agent answers this request itself, which it cannot do through "+string(ep)+
				": route it to the HTTP front's "+AnswerPrefix+" endpoint")
	default:
		h.writeAnswer(w, ep, true, d.Status, d.Headers, d.Body)
	}
}

// readAsAllow reports whether the endpoint's proxy takes status for "allowed".
func readAsAllow(ep Endpoint, status int) bool {
	switch ep {
	case EndpointEnvoy:
		return status == http.StatusOK
	case EndpointNginx, EndpointTraefik:
		return status >= 200 && status < 300
	}
	return false
}

// writeAnswer sends a denial or an own answer as it is. With nginxStatus, nginx is told 401
// or 403 only, the real status going in x-auth-status; without, the front's own errors reach
// nginx as they are (it answers them 500 and logs the status: a configuration problem).
func (h *HTTPHandler) writeAnswer(w http.ResponseWriter, ep Endpoint, nginxStatus bool, status int, headers []token.Header, body []byte) {
	hdr := w.Header()
	for _, x := range headers {
		hdr.Add(x.Name, x.Value)
	}
	if nginxStatus && ep == EndpointNginx && status != http.StatusUnauthorized && status != http.StatusForbidden {
		hdr.Set(HeaderStatus, strconv.Itoa(status))
		status = http.StatusForbidden
	}
	hdr.Set("content-length", strconv.Itoa(len(body)))
	h.status(w, ep, status)
	_, _ = w.Write(body)
}

// writeError sends the front's own error (not a decision of the agent) as a JSON body of the
// denial's shape; nginxStatus as for writeAnswer.
func (h *HTTPHandler) writeError(w http.ResponseWriter, ep Endpoint, nginxStatus bool, status int, code, text string) {
	body, _ := json.Marshal(struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}{code, text})
	h.writeAnswer(w, ep, nginxStatus, status, []token.Header{{Name: "content-type", Value: "application/json"}}, body)
}

func (h *HTTPHandler) status(w http.ResponseWriter, ep Endpoint, status int) {
	h.metrics.count(ep, status)
	w.WriteHeader(status)
}

// HTTPMetrics are the HTTP front's Prometheus collectors.
type HTTPMetrics struct {
	// Responses counts the front's answers by endpoint and HTTP status code.
	Responses *prometheus.CounterVec

	bound sync.Map // httpLabels -> prometheus.Counter
}

type httpLabels struct {
	ep   Endpoint
	code int
}

// NewHTTPMetrics creates the front's collectors and registers them with reg (nil: not
// registered).
func NewHTTPMetrics(reg prometheus.Registerer) *HTTPMetrics {
	m := &HTTPMetrics{Responses: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenagent_http_authz_responses_total",
		Help: "Answers of the HTTP authorization front, by endpoint (envoy, nginx, traefik, answer, unknown) and HTTP status code.",
	}, []string{"endpoint", "code"})}
	if reg != nil {
		reg.MustRegister(m.Responses)
	}
	return m
}

func (m *HTTPMetrics) count(ep Endpoint, code int) {
	k := httpLabels{ep, code}
	c, ok := m.bound.Load(k)
	if !ok {
		c, _ = m.bound.LoadOrStore(k, m.Responses.WithLabelValues(string(ep), strconv.Itoa(code)))
	}
	c.(prometheus.Counter).Inc()
}

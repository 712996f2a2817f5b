package examples_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	// Every extension the example configs name in a typed_config, so that each Any resolves.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/formatter/req_without_query/v3"
)

// pathWithQuery finds access log operators that print the path with its query.
var pathWithQuery = regexp.MustCompile(`%REQ\([^)]*PATH\)%|%PATH%`)

// extAuthzName is the ext_authz filter's name; Envoy files the agent's dynamic metadata under
// it, and per-route settings are keyed by it.
const extAuthzName = "envoy.filters.http.ext_authz"

// loadBootstrap reads an Envoy bootstrap in YAML the strict way: YAML (duplicate keys refused)
// to JSON, protojson into the Bootstrap type (unknown fields and unresolvable typed_config
// types refused), then Envoy's protoc-gen-validate rules on the bootstrap and on every message
// packed in an Any, at any depth.
func loadBootstrap(src []byte) (*bootstrapv3.Bootstrap, error) {
	b := &bootstrapv3.Bootstrap{}
	if err := loadEnvoyYAML(src, b, "bootstrap"); err != nil {
		return nil, err
	}
	return b, nil
}

// loadEnvoyYAML reads any Envoy config message (a bootstrap, an SDS file's DiscoveryResponse)
// from YAML into m, the strict way loadBootstrap describes.
func loadEnvoyYAML(src []byte, m proto.Message, where string) error {
	var doc any
	dec := yaml.NewDecoder(bytes.NewReader(src))
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("yaml: %w", err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("yaml to json: %w", err)
	}
	if err := protojson.Unmarshal(js, m); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	return validateDeep(m, where)
}

type validator interface{ ValidateAll() error }

// validateDeep runs m's validation rules and those of every Any inside it (protoc-gen-validate
// stops at an Any: it checks the type URL, never the packed message).
func validateDeep(m proto.Message, where string) error {
	if v, ok := m.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
	}
	var walkErr error
	var walk func(protoreflect.Message, string)
	walk = func(msg protoreflect.Message, path string) {
		if walkErr != nil {
			return
		}
		if a, ok := msg.Interface().(*anypb.Any); ok {
			inner, err := a.UnmarshalNew()
			if err != nil {
				walkErr = fmt.Errorf("%s: typed_config %s: %w", path, a.GetTypeUrl(), err)
				return
			}
			walkErr = validateDeep(inner, path+"<"+string(inner.ProtoReflect().Descriptor().FullName())+">")
			return
		}
		msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			p := path + "." + string(fd.Name())
			switch {
			case fd.IsList() && fd.Message() != nil:
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					walk(l.Get(i).Message(), fmt.Sprintf("%s[%d]", p, i))
				}
			case fd.IsMap() && fd.MapValue().Message() != nil:
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					walk(mv.Message(), fmt.Sprintf("%s[%s]", p, k.String()))
					return walkErr == nil
				})
			case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
				walk(v.Message(), p)
			}
			return walkErr == nil
		})
	}
	walk(m.ProtoReflect(), where)
	return walkErr
}

// mustLoadBootstrap is loadBootstrap for a config that must be valid.
func mustLoadBootstrap(t *testing.T, name string, src []byte) *bootstrapv3.Bootstrap {
	t.Helper()
	b, err := loadBootstrap(src)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b
}

// unpack unmarshals a typed_config into m.
func unpack(t *testing.T, a *anypb.Any, m proto.Message) {
	t.Helper()
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatalf("typed_config %s: %v", a.GetTypeUrl(), err)
	}
}

// envoyParts are the pieces of a one-listener edge config the tests look at.
type envoyParts struct {
	hcm      *hcmv3.HttpConnectionManager
	filters  []*hcmv3.HttpFilter
	extAuthz *extauthzv3.ExtAuthz
	routes   []*routev3.Route
	clusters map[string]*clusterv3.Cluster
}

// edgeParts finds the HTTP connection manager of the bootstrap's only listener, its ext_authz
// filter, its routes and the clusters.
func edgeParts(t *testing.T, b *bootstrapv3.Bootstrap) envoyParts {
	t.Helper()
	var p envoyParts
	ls := b.GetStaticResources().GetListeners()
	if len(ls) != 1 || len(ls[0].GetFilterChains()) != 1 {
		t.Fatalf("want one listener with one filter chain, have %d listeners", len(ls))
	}
	for _, f := range ls[0].GetFilterChains()[0].GetFilters() {
		if f.GetName() == "envoy.filters.network.http_connection_manager" {
			p.hcm = &hcmv3.HttpConnectionManager{}
			unpack(t, f.GetTypedConfig(), p.hcm)
		}
	}
	if p.hcm == nil {
		t.Fatal("no http_connection_manager on the listener")
	}
	p.filters = p.hcm.GetHttpFilters()
	for _, f := range p.filters {
		if f.GetName() == extAuthzName {
			p.extAuthz = &extauthzv3.ExtAuthz{}
			unpack(t, f.GetTypedConfig(), p.extAuthz)
		}
	}
	if p.extAuthz == nil {
		t.Fatalf("no http filter named %s", extAuthzName)
	}
	for _, vh := range p.hcm.GetRouteConfig().GetVirtualHosts() {
		p.routes = append(p.routes, vh.GetRoutes()...)
	}
	p.clusters = map[string]*clusterv3.Cluster{}
	for _, c := range b.GetStaticResources().GetClusters() {
		p.clusters[c.GetName()] = c
	}
	return p
}

// checkEdge asserts what every edge config of the examples must hold, and returns the
// tokenagent cluster's one endpoint address.
func checkEdge(t *testing.T, p envoyParts, exchangePath string) (agentAddr *corev3.Address) {
	t.Helper()
	ea := p.extAuthz
	if ea.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		t.Errorf("ext_authz transport_api_version = %v, want V3", ea.GetTransportApiVersion())
	}
	if ea.GetFailureModeAllow() {
		t.Error("ext_authz failure_mode_allow is true: requests would pass when the agent is down")
	}
	if ea.GetIncludePeerCertificate() {
		t.Error("ext_authz include_peer_certificate is on")
	}
	if ea.GetWithRequestBody() != nil {
		t.Error("ext_authz buffers every request body; only the exchange route should")
	}
	gs := ea.GetGrpcService()
	if gs == nil || gs.GetEnvoyGrpc() == nil {
		t.Fatal("ext_authz must call tokenagent through grpc_service.envoy_grpc")
	}
	if d := gs.GetTimeout(); d == nil || d.AsDuration() <= 0 || d.AsDuration().Milliseconds() > 1000 {
		t.Errorf("ext_authz grpc_service.timeout = %v, want a few hundred ms", d.AsDuration())
	}
	if last := p.filters[len(p.filters)-1]; last.GetName() != "envoy.filters.http.router" {
		t.Errorf("the last http filter is %s, want the router", last.GetName())
	}
	if p.filters[0].GetName() != extAuthzName {
		t.Errorf("the first http filter is %s, want ext_authz (nothing may act before the check)", p.filters[0].GetName())
	}

	// The agent's cluster: HTTP/2 (gRPC), one endpoint.
	c := p.clusters[gs.GetEnvoyGrpc().GetClusterName()]
	if c == nil {
		t.Fatalf("ext_authz names cluster %q, which does not exist", gs.GetEnvoyGrpc().GetClusterName())
	}
	po := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if po == nil {
		t.Fatalf("cluster %s has no HttpProtocolOptions: gRPC needs HTTP/2", c.GetName())
	}
	var hpo httpv3.HttpProtocolOptions
	unpack(t, po, &hpo)
	if hpo.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Errorf("cluster %s does not speak HTTP/2 to the agent", c.GetName())
	}
	eps := c.GetLoadAssignment().GetEndpoints()
	if len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1 {
		t.Fatalf("cluster %s: want exactly one endpoint (the node-local agent)", c.GetName())
	}
	agentAddr = eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress()

	// Routes: every cluster exists; the exchange route (POST only) buffers its body as
	// SPEC §2/§3.5 ask; no other route buffers or turns the check off.
	var exchange *routev3.Route
	for _, r := range p.routes {
		cl := r.GetRoute().GetCluster()
		if cl == "" || p.clusters[cl] == nil {
			t.Errorf("route %s goes to cluster %q, which does not exist", r.GetName(), cl)
		}
		var per *extauthzv3.ExtAuthzPerRoute
		if a := r.GetTypedPerFilterConfig()[extAuthzName]; a != nil {
			per = &extauthzv3.ExtAuthzPerRoute{}
			unpack(t, a, per)
			if per.GetDisabled() {
				t.Errorf("route %s turns ext_authz off", r.GetName())
			}
		}
		for k := range r.GetTypedPerFilterConfig() {
			if k != extAuthzName {
				t.Errorf("route %s has per-filter config for %q, a filter that is not in the chain under that name", r.GetName(), k)
			}
		}
		if r.GetMatch().GetPath() == exchangePath {
			exchange = r
			var post bool
			for _, h := range r.GetMatch().GetHeaders() {
				post = post || h.GetName() == ":method" && h.GetStringMatch().GetExact() == "POST"
			}
			if !post {
				t.Errorf("the exchange route matches every method; the agent answers POST only")
			}
			wb := per.GetCheckSettings().GetWithRequestBody()
			if wb == nil {
				t.Fatalf("the exchange route does not send its body to the agent")
			}
			if wb.GetMaxRequestBytes() != 16384 || !wb.GetAllowPartialMessage() || !wb.GetPackAsBytes() {
				t.Errorf("exchange route with_request_body = %v, want max_request_bytes 16384, allow_partial_message, pack_as_bytes", wb)
			}
		} else if per.GetCheckSettings().GetWithRequestBody() != nil {
			t.Errorf("route %s buffers its body; only the exchange route should", r.GetName())
		}
	}
	if exchange == nil {
		t.Fatalf("no route matches the exchange path %s exactly", exchangePath)
	}
	if p.routes[0] != exchange {
		t.Error("the exchange route must come before the catch-all route")
	}

	// The access log records the agent's decision from the ext_authz namespace, and never the
	// query (it may hold a credential).
	var logged strings.Builder
	for _, al := range p.hcm.GetAccessLog() {
		var so streamv3.StdoutAccessLog
		unpack(t, al.GetTypedConfig(), &so)
		js, _ := protojson.Marshal(so.GetLogFormat())
		logged.Write(js)
	}
	for _, k := range []string{"site", "kind", "user", "client_id", "scopes", "reason"} {
		if op := "%DYNAMIC_METADATA(" + extAuthzName + ":" + k + ")%"; !strings.Contains(logged.String(), op) {
			t.Errorf("the access log does not record %s", op)
		}
	}
	if m := pathWithQuery.FindString(logged.String()); m != "" {
		t.Errorf("the access log records the path with its query (%s); use %%REQ_WITHOUT_QUERY(...)%%", m)
	}
	if !strings.Contains(logged.String(), "%REQ_WITHOUT_QUERY(") {
		t.Error("the access log records no path")
	}
	return agentAddr
}

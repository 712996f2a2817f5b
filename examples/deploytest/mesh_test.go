package deploytest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingapi "istio.io/api/networking/v1alpha3"
	securityapi "istio.io/api/security/v1beta1"
	istionetworking "istio.io/client-go/pkg/apis/networking/v1"
	istiosecurity "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/tokenagent/tokenagent/agent/exchange"
)

// The mesh examples install the chart as release "tokenagent" in namespace "tokenagent" (their
// README commands say so); their objects name the Service that gives.
const meshRelease, meshNamespace = "tokenagent", "tokenagent"

// meshObjects are the objects of one mesh example's files, parsed strictly into their projects'
// Go types, keyed by namespace/name.
type meshObjects struct {
	authzPolicies map[string]*istiosecurity.AuthorizationPolicy
	peerAuths     map[string]*istiosecurity.PeerAuthentication
	destRules     map[string]*istionetworking.DestinationRule
	classes       map[string]*gwapiv1.GatewayClass
	gateways      map[string]*gwapiv1.Gateway
	routes        map[string]*gwapiv1.HTTPRoute
	grants        map[string]*gwapiv1beta1.ReferenceGrant
	backendTLS    map[string]*gwapiv1.BackendTLSPolicy
	envoyProxies  map[string]*egv1a1.EnvoyProxy
	secPolicies   map[string]*egv1a1.SecurityPolicy
}

// readMesh parses every document of the files. Kubernetes objects are decoded with unknown
// fields refused; an Istio object's spec, whose generated JSON decoder accepts unknown fields,
// is decoded once more with protojson, which refuses them.
func readMesh(t *testing.T, files ...string) *meshObjects {
	t.Helper()
	m := &meshObjects{
		authzPolicies: map[string]*istiosecurity.AuthorizationPolicy{},
		peerAuths:     map[string]*istiosecurity.PeerAuthentication{},
		destRules:     map[string]*istionetworking.DestinationRule{},
		classes:       map[string]*gwapiv1.GatewayClass{}, gateways: map[string]*gwapiv1.Gateway{},
		routes: map[string]*gwapiv1.HTTPRoute{}, grants: map[string]*gwapiv1beta1.ReferenceGrant{},
		backendTLS:   map[string]*gwapiv1.BackendTLSPolicy{},
		envoyProxies: map[string]*egv1a1.EnvoyProxy{}, secPolicies: map[string]*egv1a1.SecurityPolicy{},
	}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitYAML(b) {
			where := file + " document " + strconv.Itoa(i+1)
			var tm metav1.TypeMeta
			if err := sigsyaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			strict := func(v any) {
				t.Helper()
				if err := sigsyaml.UnmarshalStrict(doc, v); err != nil {
					t.Fatalf("%s (%s %s): %v", where, tm.APIVersion, tm.Kind, err)
				}
			}
			key := func(meta metav1.ObjectMeta, namespaced bool) string {
				t.Helper()
				if namespaced && meta.Namespace == "" {
					t.Errorf("%s: %s %s has no namespace", where, tm.Kind, meta.Name)
				}
				return meta.Namespace + "/" + meta.Name
			}
			switch tm.APIVersion + " " + tm.Kind {
			case "security.istio.io/v1 AuthorizationPolicy":
				v := &istiosecurity.AuthorizationPolicy{}
				strict(v)
				strictSpec(t, where, doc, &securityapi.AuthorizationPolicy{})
				m.authzPolicies[key(v.ObjectMeta, true)] = v
			case "security.istio.io/v1 PeerAuthentication":
				v := &istiosecurity.PeerAuthentication{}
				strict(v)
				strictSpec(t, where, doc, &securityapi.PeerAuthentication{})
				m.peerAuths[key(v.ObjectMeta, true)] = v
			case "networking.istio.io/v1 DestinationRule":
				v := &istionetworking.DestinationRule{}
				strict(v)
				strictSpec(t, where, doc, &networkingapi.DestinationRule{})
				m.destRules[key(v.ObjectMeta, true)] = v
			case "gateway.networking.k8s.io/v1 GatewayClass":
				v := &gwapiv1.GatewayClass{}
				strict(v)
				m.classes[v.Name] = v
			case "gateway.networking.k8s.io/v1 Gateway":
				v := &gwapiv1.Gateway{}
				strict(v)
				m.gateways[key(v.ObjectMeta, true)] = v
			case "gateway.networking.k8s.io/v1 HTTPRoute":
				v := &gwapiv1.HTTPRoute{}
				strict(v)
				m.routes[key(v.ObjectMeta, true)] = v
			case "gateway.networking.k8s.io/v1beta1 ReferenceGrant":
				v := &gwapiv1beta1.ReferenceGrant{}
				strict(v)
				m.grants[key(v.ObjectMeta, true)] = v
			case "gateway.networking.k8s.io/v1 BackendTLSPolicy":
				v := &gwapiv1.BackendTLSPolicy{}
				strict(v)
				m.backendTLS[key(v.ObjectMeta, true)] = v
			case "gateway.envoyproxy.io/v1alpha1 EnvoyProxy":
				v := &egv1a1.EnvoyProxy{}
				strict(v)
				m.envoyProxies[key(v.ObjectMeta, true)] = v
			case "gateway.envoyproxy.io/v1alpha1 SecurityPolicy":
				v := &egv1a1.SecurityPolicy{}
				strict(v)
				m.secPolicies[key(v.ObjectMeta, true)] = v
			default:
				t.Fatalf("%s: unexpected object %s %s", where, tm.APIVersion, tm.Kind)
			}
		}
	}
	return m
}

// strictSpec decodes the document's spec into msg with protojson, which refuses unknown fields
// and values of the wrong type.
func strictSpec(t *testing.T, where string, doc []byte, msg proto.Message) {
	t.Helper()
	var obj struct {
		Spec json.RawMessage `json:"spec"`
	}
	if err := sigsyaml.Unmarshal(doc, &obj); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	if err := protojson.Unmarshal(obj.Spec, msg); err != nil {
		t.Fatalf("%s: spec: %v", where, err)
	}
}

// meshChart renders the chart with a mesh example's values file as its README installs it.
func meshChart(t *testing.T, valuesFile string) (*objects, *corev1.Service, map[string]any) {
	t.Helper()
	vals := valuesFromFile(t, valuesFile)
	o := parse(t, renderAs(t, vals, meshRelease, meshNamespace))
	svc := o.services[meshNamespace+"/"+meshRelease]
	if svc == nil {
		t.Fatalf("the chart renders no Service %s/%s; have %v", meshNamespace, meshRelease, keysOf(o.services))
	}
	if p := svc.Spec.InternalTrafficPolicy; p == nil || *p != corev1.ServiceInternalTrafficPolicyLocal {
		t.Errorf("Service %s is not node-local (internalTrafficPolicy: Local)", svc.Name)
	}
	return o, svc, vals
}

func valuesFromFile(t *testing.T, file string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	v := map[string]any{}
	if err := sigsyaml.UnmarshalStrict(b, &v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return v
}

func servicePort(svc *corev1.Service, port int32) *corev1.ServicePort {
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == port {
			return &svc.Spec.Ports[i]
		}
	}
	return nil
}

// agentPod is the rendered workload's pod template.
func agentPod(t *testing.T, o *objects) *corev1.PodTemplateSpec {
	t.Helper()
	kind, pod, _ := workload(t, o)
	if kind != "DaemonSet" {
		t.Errorf("the mesh examples run a %s, want a DaemonSet (one agent per node)", kind)
	}
	return pod
}

// serverCertificate is the agent's own cert-manager Certificate in the rendered chart.
func serverCertificate(t *testing.T, o *objects) []string {
	t.Helper()
	c := o.certs[meshNamespace+"/"+meshRelease]
	if c == nil {
		t.Fatalf("no Certificate %s/%s; have %v", meshNamespace, meshRelease, keysOf(o.certs))
	}
	return c.Spec.DNSNames
}

// clientCertificateSecret reports whether the chart issues a client certificate into the
// Secret namespace/name.
func clientCertificateSecret(o *objects, namespace, name string) bool {
	for _, c := range o.certs {
		if c.Namespace == namespace && c.Spec.SecretName == name && c.Name != meshRelease {
			return true
		}
	}
	return false
}

// istioProviders parses istiod-values.yaml's meshConfig into Istio's MeshConfig.
func istioProviders(t *testing.T) map[string]*meshv1alpha1.MeshConfig_ExtensionProvider {
	t.Helper()
	b, err := os.ReadFile("../istio/istiod-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var vals struct {
		MeshConfig json.RawMessage `json:"meshConfig"`
	}
	if err := sigsyaml.UnmarshalStrict(b, &vals); err != nil {
		t.Fatalf("istiod-values.yaml: %v", err)
	}
	mc := &meshv1alpha1.MeshConfig{}
	if err := protojson.Unmarshal(vals.MeshConfig, mc); err != nil {
		t.Fatalf("istiod-values.yaml: meshConfig: %v", err)
	}
	out := map[string]*meshv1alpha1.MeshConfig_ExtensionProvider{}
	for _, p := range mc.GetExtensionProviders() {
		out[p.GetName()] = p
	}
	return out
}

// TestIstio checks examples/istio: every object parses into Istio's types; the CUSTOM policy
// names a provider of the mesh config; the provider is the chart's node-local Service and gRPC
// port (rendered with values.yaml, as the README installs it), fails closed with 503, and its
// body settings fit the token exchange; the DENY example reads a header the agent sets; the
// PeerAuthentication selects the agent's pods and requires mutual TLS on the gRPC port.
func TestIstio(t *testing.T) {
	providers := istioProviders(t)
	m := readMesh(t, "../istio/authorizationpolicy.yaml", "../istio/peerauthentication.yaml")
	o, svc, _ := meshChart(t, "../istio/values.yaml")
	pod := agentPod(t, o)

	var custom int
	for k, ap := range m.authzPolicies {
		switch ap.Spec.GetAction() {
		case securityapi.AuthorizationPolicy_CUSTOM:
			custom++
			p := providers[ap.Spec.GetProvider().GetName()]
			if p == nil {
				t.Fatalf("%s: provider %q is not in the mesh config (have %v)", k, ap.Spec.GetProvider().GetName(), keysOf(providers))
			}
			// Every request, so a client's x-auth-* never skips the agent.
			if r := ap.Spec.GetRules(); len(r) != 1 || !proto.Equal(r[0], &securityapi.Rule{}) {
				t.Errorf("%s: rules %v, want one empty rule (every request)", k, r)
			}
			g := p.GetEnvoyExtAuthzGrpc()
			if g == nil {
				t.Fatalf("provider %s is not envoyExtAuthzGrpc", p.GetName())
			}
			if want := svc.Name + "." + svc.Namespace + ".svc.cluster.local"; g.GetService() != want {
				t.Errorf("provider service %q, want the chart's Service %q", g.GetService(), want)
			}
			sp := servicePort(svc, int32(g.GetPort()))
			if sp == nil || sp.Name != "grpc" {
				t.Errorf("provider port %d is not the Service's grpc port (%v)", g.GetPort(), svc.Spec.Ports)
			} else if sp.AppProtocol == nil || *sp.AppProtocol != "kubernetes.io/h2c" {
				t.Error("the grpc port's appProtocol is not kubernetes.io/h2c: Istio would not speak HTTP/2 to it")
			}
			if g.GetFailOpen() || g.GetStatusOnError() != "503" {
				t.Errorf("provider failOpen %v statusOnError %q, want fail closed with 503", g.GetFailOpen(), g.GetStatusOnError())
			}
			if d := g.GetTimeout().AsDuration(); d <= 0 || d > 1e9 {
				t.Errorf("provider timeout %v, want a bound under a second", d)
			}
			if b := g.GetIncludeRequestBodyInCheck(); b == nil || b.GetMaxRequestBytes() < 16384 || !b.GetAllowPartialMessage() || !b.GetPackAsBytes() {
				t.Errorf("provider body settings %v: the token exchange needs 16 KiB, partial, as bytes", b)
			}
			if !labelsMatch(ap.Spec.GetSelector().GetMatchLabels(), map[string]string{"app": "docs"}) {
				t.Errorf("%s selects %v", k, ap.Spec.GetSelector().GetMatchLabels())
			}
		case securityapi.AuthorizationPolicy_DENY:
			for _, r := range ap.Spec.GetRules() {
				for _, c := range r.GetWhen() {
					if !strings.HasPrefix(c.GetKey(), "request.headers[x-auth-") {
						t.Errorf("%s: condition on %s, want one on a header tokenagent sets", k, c.GetKey())
					}
					if c.GetKey() == "request.headers[x-auth-kind]" {
						for _, v := range append(c.GetValues(), c.GetNotValues()...) {
							if !slices.Contains([]string{"authtoken", "browser", "server", "oauth", "impersonation", "apikey", "anonymous"}, v) {
								t.Errorf("%s: x-auth-kind %q is not a kind of SPEC §4", k, v)
							}
						}
					}
				}
			}
		}
	}
	if custom != 1 {
		t.Errorf("%d CUSTOM policies for the workload, want 1 (Istio allows one provider per workload)", custom)
	}

	// Istio's mutual TLS, required on the gRPC port; the agent's own TLS off.
	if pod.Labels["sidecar.istio.io/inject"] != "true" {
		t.Errorf("the agent's pods are not in the mesh: labels %v", pod.Labels)
	}
	cfg := mountedConfig(t, o, &pod.Spec, pod.Spec.Containers[0])
	if cfg.GRPCTLS != nil {
		t.Error("the agent terminates TLS itself inside the mesh: Istio's sidecar would see ciphertext")
	}
	if len(m.peerAuths) != 1 {
		t.Fatalf("%d PeerAuthentications", len(m.peerAuths))
	}
	for k, pa := range m.peerAuths {
		if pa.Namespace != svc.Namespace || !labelsMatch(pa.Spec.GetSelector().GetMatchLabels(), pod.Labels) {
			t.Errorf("%s does not select the agent's pods (%v)", k, pod.Labels)
		}
		if pa.Spec.GetMtls().GetMode() != securityapi.PeerAuthentication_MutualTLS_STRICT {
			t.Errorf("%s: mode %v, want STRICT", k, pa.Spec.GetMtls().GetMode())
		}
		for port, mt := range pa.Spec.GetPortLevelMtls() {
			if sp := servicePort(svc, int32(port)); sp == nil || (sp.Name == "grpc" && mt.GetMode() != securityapi.PeerAuthentication_MutualTLS_STRICT) {
				t.Errorf("%s: port %d (%v) is not a Service port, or the gRPC port is not STRICT", k, port, sp)
			}
		}
	}
	checkClientsAdmitted(t, o, pod, "docs")
}

// TestIstioAgentTLS checks the variant with the agent outside the mesh: its own mutual TLS,
// and a DestinationRule that makes the workload's sidecar present the client certificate the
// chart issues into the workload's namespace, for a name on the agent's certificate.
func TestIstioAgentTLS(t *testing.T) {
	providers := istioProviders(t)
	m := readMesh(t, "../istio/destinationrule-tls.yaml", "../istio/authorizationpolicy.yaml")
	o, _, _ := meshChart(t, "../istio/values-tls.yaml")
	pod := agentPod(t, o)
	if pod.Labels["sidecar.istio.io/inject"] != "false" {
		t.Errorf("the agent's pods get a sidecar: labels %v", pod.Labels)
	}
	cfg := mountedConfig(t, o, &pod.Spec, pod.Spec.Containers[0])
	if cfg.GRPCTLS == nil || cfg.GRPCTLS.ClientCAFile == "" {
		t.Fatalf("grpc_tls %+v, want mutual TLS", cfg.GRPCTLS)
	}
	names := serverCertificate(t, o)
	if len(m.destRules) != 1 {
		t.Fatalf("%d DestinationRules", len(m.destRules))
	}
	for k, dr := range m.destRules {
		if want := providers["tokenagent"].GetEnvoyExtAuthzGrpc().GetService(); dr.Spec.GetHost() != want {
			t.Errorf("%s: host %q, want the provider's service %q", k, dr.Spec.GetHost(), want)
		}
		if dr.Spec.GetWorkloadSelector() == nil {
			t.Errorf("%s: no workloadSelector: a sidecar would ignore credentialName", k)
		}
		tls := dr.Spec.GetTrafficPolicy().GetTls()
		if tls.GetMode() != networkingapi.ClientTLSSettings_MUTUAL {
			t.Errorf("%s: TLS mode %v, want MUTUAL", k, tls.GetMode())
		}
		if !clientCertificateSecret(o, dr.Namespace, tls.GetCredentialName()) {
			t.Errorf("%s: credentialName %s/%s is not a client certificate the chart issues", k, dr.Namespace, tls.GetCredentialName())
		}
		if !slices.Contains(names, tls.GetSni()) {
			t.Errorf("%s: SNI %q is not on the agent's certificate %v", k, tls.GetSni(), names)
		}
		for _, san := range tls.GetSubjectAltNames() {
			if !slices.Contains(names, san) {
				t.Errorf("%s: subjectAltName %q is not on the agent's certificate %v", k, san, names)
			}
		}
	}
	checkClientsAdmitted(t, o, pod, "docs")
}

// checkClientsAdmitted: the chart's NetworkPolicy admits pods with the client labels to the
// gRPC port, so the README's instruction (label the clients) is enough.
func checkClientsAdmitted(t *testing.T, o *objects, pod *corev1.PodTemplateSpec, clientNamespace string) map[string]string {
	t.Helper()
	if len(o.netpols) != 1 {
		t.Fatalf("%d NetworkPolicies, want 1", len(o.netpols))
	}
	for k, np := range o.netpols {
		if !labelsMatch(np.Spec.PodSelector.MatchLabels, pod.Labels) {
			t.Errorf("%s does not select the agent's pods", k)
		}
		for _, rule := range np.Spec.Ingress {
			for _, p := range rule.Ports {
				if p.Port != nil && p.Port.StrVal == "grpc" {
					for _, from := range rule.From {
						if from.PodSelector != nil && from.NamespaceSelector != nil && len(from.NamespaceSelector.MatchLabels) == 0 {
							return from.PodSelector.MatchLabels
						}
					}
				}
			}
		}
	}
	t.Fatalf("no NetworkPolicy rule admits clients in namespace %s to the gRPC port", clientNamespace)
	return nil
}

// TestEnvoyGateway checks examples/gateway: every object parses into the Gateway API's and Envoy
// Gateway's types; the class names the EnvoyProxy, the routes the Gateway, the policies their
// targets; the ext auth backend is the chart's node-local Service and gRPC port (rendered with
// values.yaml), allowed across namespaces by the ReferenceGrant; TLS to it is checked against a
// name on the agent's certificate, and the client certificate is one the chart issues where
// the Envoys run; the Envoys carry the labels the NetworkPolicy admits; the policies fail closed
// with 503, send every header, and only the token exchange's route sends the body.
func TestEnvoyGateway(t *testing.T) {
	m := readMesh(t, "../gateway/envoyproxy.yaml", "../gateway/gateway.yaml", "../gateway/securitypolicy.yaml")
	o, svc, _ := meshChart(t, "../gateway/values.yaml")
	pod := agentPod(t, o)

	// GatewayClass → EnvoyProxy: Service routing, a DaemonSet, the client labels and certificate.
	if len(m.classes) != 1 || len(m.envoyProxies) != 1 {
		t.Fatalf("%d GatewayClasses, %d EnvoyProxies", len(m.classes), len(m.envoyProxies))
	}
	var proxy *egv1a1.EnvoyProxy
	for _, gc := range m.classes {
		ref := gc.Spec.ParametersRef
		if ref == nil || ref.Namespace == nil || ref.Kind != "EnvoyProxy" {
			t.Fatalf("GatewayClass %s: parametersRef %+v", gc.Name, ref)
		}
		proxy = m.envoyProxies[string(*ref.Namespace)+"/"+ref.Name]
		if proxy == nil {
			t.Fatalf("GatewayClass %s names EnvoyProxy %s/%s, not in the example", gc.Name, *ref.Namespace, ref.Name)
		}
	}
	if rt := proxy.Spec.RoutingType; rt == nil || *rt != egv1a1.ServiceRoutingType {
		t.Errorf("EnvoyProxy routingType is not Service: endpoint routing bypasses internalTrafficPolicy Local")
	}
	if proxy.Spec.Provider == nil || proxy.Spec.Provider.Kubernetes == nil || proxy.Spec.BackendTLS == nil {
		t.Fatal("EnvoyProxy has no Kubernetes provider or no backendTLS")
	}
	k8s := proxy.Spec.Provider.Kubernetes
	if k8s.EnvoyDaemonSet == nil || k8s.EnvoyDaemonSet.Pod == nil {
		t.Fatal("EnvoyProxy does not run the Envoys as a DaemonSet with pod settings")
	}
	clientLabels := checkClientsAdmitted(t, o, pod, proxy.Namespace)
	if !labelsMatch(clientLabels, k8s.EnvoyDaemonSet.Pod.Labels) {
		t.Errorf("the Envoys' labels %v are not the client labels %v the NetworkPolicy admits", k8s.EnvoyDaemonSet.Pod.Labels, clientLabels)
	}
	cc := proxy.Spec.BackendTLS.ClientCertificateRef
	if cc == nil || cc.Namespace == nil || !clientCertificateSecret(o, string(*cc.Namespace), string(cc.Name)) {
		t.Errorf("EnvoyProxy's client certificate %+v is not one the chart issues", cc)
	}

	// Gateway → class; routes → Gateway and listener.
	for k, gw := range m.gateways {
		if m.classes[string(gw.Spec.GatewayClassName)] == nil {
			t.Errorf("%s: class %s not in the example", k, gw.Spec.GatewayClassName)
		}
	}
	exchangeRoute := ""
	for k, r := range m.routes {
		for _, pr := range r.Spec.ParentRefs {
			gw := m.gateways[r.Namespace+"/"+string(pr.Name)]
			if gw == nil {
				t.Errorf("%s: parent %s not in the example", k, pr.Name)
				continue
			}
			if pr.SectionName != nil && !slices.ContainsFunc(gw.Spec.Listeners, func(l gwapiv1.Listener) bool { return l.Name == *pr.SectionName }) {
				t.Errorf("%s: listener %s is not on Gateway %s", k, *pr.SectionName, gw.Name)
			}
		}
		for _, rule := range r.Spec.Rules {
			for _, mt := range rule.Matches {
				if mt.Path != nil && mt.Path.Value != nil && *mt.Path.Value == exchange.Path {
					if mt.Method == nil || *mt.Method != "POST" || mt.Path.Type == nil || *mt.Path.Type != gwapiv1.PathMatchExact {
						t.Errorf("%s: the exchange's match %+v, want POST on the exact path", k, mt)
					}
					exchangeRoute = k
				}
			}
		}
	}
	if exchangeRoute == "" {
		t.Fatalf("no route matches the token exchange's path %s", exchange.Path)
	}

	// SecurityPolicies → their targets; the ext auth backend is the agent, allowed by a grant.
	var onGateway, onExchange bool
	for k, sp := range m.secPolicies {
		for _, ref := range sp.Spec.TargetRefs {
			target := sp.Namespace + "/" + string(ref.Name)
			switch ref.Kind {
			case "Gateway":
				onGateway = onGateway || m.gateways[target] != nil
			case "HTTPRoute":
				if m.routes[target] == nil {
					t.Errorf("%s: target route %s not in the example", k, target)
				}
				onExchange = onExchange || target == exchangeRoute
			default:
				t.Errorf("%s: target kind %s", k, ref.Kind)
			}
		}
		ea := sp.Spec.ExtAuth
		if ea == nil || ea.GRPC == nil || len(ea.GRPC.BackendRefs) != 1 {
			t.Fatalf("%s: extAuth %+v, want one gRPC backend", k, ea)
		}
		be := ea.GRPC.BackendRefs[0].BackendObjectReference
		ns := sp.Namespace
		if be.Namespace != nil {
			ns = string(*be.Namespace)
		}
		if ns != svc.Namespace || string(be.Name) != svc.Name || be.Port == nil {
			t.Fatalf("%s: backend %s/%s, want the chart's Service %s/%s", k, ns, be.Name, svc.Namespace, svc.Name)
		}
		if p := servicePort(svc, int32(*be.Port)); p == nil || p.Name != "grpc" {
			t.Errorf("%s: backend port %d is not the Service's grpc port", k, *be.Port)
		}
		if ns != sp.Namespace && !granted(m, sp.Namespace, svc) {
			t.Errorf("%s: no ReferenceGrant lets namespace %s name Service %s/%s", k, sp.Namespace, svc.Namespace, svc.Name)
		}
		if ea.FailOpen == nil || *ea.FailOpen || ea.StatusOnError == nil || *ea.StatusOnError != 503 {
			t.Errorf("%s: failOpen %v statusOnError %v, want fail closed with 503", k, ea.FailOpen, ea.StatusOnError)
		}
		if len(ea.HeadersToExtAuth) != 0 {
			t.Errorf("%s: headersToExtAuth %v would hide credentials from the agent", k, ea.HeadersToExtAuth)
		}
		if ea.Timeout == nil {
			t.Errorf("%s: no timeout (Envoy Gateway's default is 10 s)", k)
		}
		sendsBody := ea.BodyToExtAuth != nil && ea.BodyToExtAuth.MaxRequestBytes >= 16384
		targetsExchange := len(sp.Spec.TargetRefs) == 1 && sp.Namespace+"/"+string(sp.Spec.TargetRefs[0].Name) == exchangeRoute
		if sendsBody != targetsExchange {
			t.Errorf("%s: sends the body %v, targets the exchange's route %v: only that route needs it", k, sendsBody, targetsExchange)
		}
	}
	if !onGateway || !onExchange {
		t.Errorf("a policy on the Gateway %v, on the exchange's route %v: want both", onGateway, onExchange)
	}

	// BackendTLSPolicy: the agent's Service and gRPC port, a name on its certificate.
	names := serverCertificate(t, o)
	if len(m.backendTLS) != 1 {
		t.Fatalf("%d BackendTLSPolicies", len(m.backendTLS))
	}
	for k, bt := range m.backendTLS {
		for _, ref := range bt.Spec.TargetRefs {
			if bt.Namespace != svc.Namespace || string(ref.Name) != svc.Name || ref.SectionName == nil || *ref.SectionName != "grpc" {
				t.Errorf("%s: targets %s/%s section %v, want the chart's Service's grpc port", k, bt.Namespace, ref.Name, ref.SectionName)
			}
		}
		if h := string(bt.Spec.Validation.Hostname); !slices.Contains(names, h) {
			t.Errorf("%s: hostname %q is not on the agent's certificate %v", k, h, names)
		}
	}
}

// granted reports whether a ReferenceGrant in the Service's namespace lets SecurityPolicies of
// namespace from name it.
func granted(m *meshObjects, from string, svc *corev1.Service) bool {
	for _, g := range m.grants {
		if g.Namespace != svc.Namespace {
			continue
		}
		okFrom := slices.ContainsFunc(g.Spec.From, func(f gwapiv1beta1.ReferenceGrantFrom) bool {
			return f.Group == egv1a1.GroupName && f.Kind == egv1a1.KindSecurityPolicy && string(f.Namespace) == from
		})
		okTo := slices.ContainsFunc(g.Spec.To, func(to gwapiv1beta1.ReferenceGrantTo) bool {
			return to.Group == "" && to.Kind == "Service" && (to.Name == nil || string(*to.Name) == svc.Name)
		})
		if okFrom && okTo {
			return true
		}
	}
	return false
}

// TestMeshExamplesListed: every file of examples/istio and examples/gateway is read by a test
// above (a new file must be added to one).
func TestMeshExamplesListed(t *testing.T) {
	tested := []string{"istiod-values.yaml", "values.yaml", "values-tls.yaml", "authorizationpolicy.yaml",
		"peerauthentication.yaml", "destinationrule-tls.yaml", "envoyproxy.yaml", "gateway.yaml", "securitypolicy.yaml"}
	for _, dir := range []string{"../istio", "../gateway"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if !slices.Contains(tested, filepath.Base(f)) {
				t.Errorf("%s is not checked by mesh_test.go", f)
			}
		}
	}
}

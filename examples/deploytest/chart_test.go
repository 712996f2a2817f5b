package deploytest

import (
	"bytes"
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/tokenagent/tokenagent/agent/config"
)

const chartDir = "../helm/tokenagent"

// variants are the values the chart is rendered and linted with: its defaults and others.
var variants = map[string]string{
	"default": ``,
	// A Deployment with a Secret the operator manages, TLS on the HTTP listener too, tracing,
	// reflection, a shadow-mode site, and every Prometheus Operator object.
	"deployment": `
kind: Deployment
replicas: 3
tls: {existingSecret: agent-tls, http: true}
tracing: {enabled: true, otlpEndpoint: "otel-collector.observability.svc:4317", sampleRatio: 0.05}
grpcReflection: true
sites:
  - {id: docs, hosts: [docs.example.com], mode: shadow}
  - id: api
    hosts: [api.example.com]
    routes: [{path: "/admin/*", require: user}]
config:
  log: {level: debug, allow_sample: 100}
keys: {vault: {caConfigMap: vault-ca}}
serviceMonitor: {enabled: true, labels: {release: prometheus}}
prometheusRule: {enabled: true}
dashboard: {enabled: true}
`,
	// Plaintext, no NetworkPolicy.
	"plaintext": `
tls: {enabled: false}
networkPolicy: {enabled: false}
`,
	// The checks on a Unix socket in a hostPath directory of the node (no TLS on it).
	"socket": `
socket: {enabled: true, mode: "0666"}
tls: {enabled: false}
`,
	// Client certificates for Envoy in another namespace, from the agent's issuer.
	"clients": `
tls:
  mutual: true
  certManager:
    clientCertificates:
      - {namespace: edge, secretName: tokenagent-client-tls, commonName: envoy-gateway}
`,
}

// variantFiles are variants whose values are an example's file: the mesh examples.
var variantFiles = map[string]string{
	"istio":     "../istio/values.yaml",
	"istio-tls": "../istio/values-tls.yaml",
	"gateway":   "../gateway/values.yaml",
}

// variantNames lists every variant, inline or from a file.
func variantNames() []string {
	names := append(keysOf(variants), keysOf(variantFiles)...)
	sort.Strings(names)
	return names
}

func values(t *testing.T, name string) map[string]any {
	t.Helper()
	if f, ok := variantFiles[name]; ok {
		return valuesFromFile(t, f)
	}
	v := map[string]any{}
	if err := sigsyaml.Unmarshal([]byte(variants[name]), &v); err != nil {
		t.Fatalf("variant %s: %v", name, err)
	}
	return v
}

// render renders the chart with the variant's values as helm install would, for release
// "edge-auth" in namespace "tokenagent", and returns the documents of every template.
func render(t *testing.T, variant string) map[string][]byte {
	t.Helper()
	return renderAs(t, values(t, variant), "edge-auth", "tokenagent")
}

// renderAs renders the chart with the values for the release and namespace.
func renderAs(t *testing.T, values map[string]any, release, namespace string) map[string][]byte {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := chartutil.ToRenderValues(ch, values,
		common.ReleaseOptions{Name: release, Namespace: namespace, IsInstall: true}, nil)
	if err != nil {
		t.Fatalf("values: %v", err)
	}
	out, err := engine.Render(ch, vals)
	if err != nil {
		t.Fatalf("render %s: %v", release, err)
	}
	docs := map[string][]byte{}
	for name, body := range out {
		if path.Ext(name) != ".yaml" {
			continue
		}
		for i, doc := range splitYAML([]byte(body)) {
			docs[name+"#"+string(rune('0'+i))] = doc
		}
	}
	return docs
}

// splitYAML cuts a multi-document stream into its non-empty documents.
func splitYAML(b []byte) [][]byte {
	var out [][]byte
	for _, d := range bytes.Split(b, []byte("\n---")) {
		if len(strings.TrimSpace(stripComments(string(d)))) > 0 {
			out = append(out, d)
		}
	}
	return out
}

func stripComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// objects are the rendered objects, parsed strictly into their real types.
type objects struct {
	configMaps  map[string]*corev1.ConfigMap
	services    map[string]*corev1.Service
	accounts    map[string]*corev1.ServiceAccount
	daemonSets  map[string]*appsv1.DaemonSet
	deployments map[string]*appsv1.Deployment
	netpols     map[string]*networkingv1.NetworkPolicy
	pdbs        map[string]*policyv1.PodDisruptionBudget
	certs       map[string]*cmv1.Certificate
	monitors    map[string]*monitoringv1.ServiceMonitor
	rules       map[string]*monitoringv1.PrometheusRule
}

func parse(t *testing.T, docs map[string][]byte) *objects {
	t.Helper()
	o := &objects{configMaps: map[string]*corev1.ConfigMap{}, services: map[string]*corev1.Service{},
		accounts: map[string]*corev1.ServiceAccount{}, daemonSets: map[string]*appsv1.DaemonSet{},
		deployments: map[string]*appsv1.Deployment{}, netpols: map[string]*networkingv1.NetworkPolicy{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, certs: map[string]*cmv1.Certificate{},
		monitors: map[string]*monitoringv1.ServiceMonitor{}, rules: map[string]*monitoringv1.PrometheusRule{}}
	names := make([]string, 0, len(docs))
	for n := range docs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		doc := docs[name]
		var tm metav1.TypeMeta
		if err := sigsyaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, doc)
		}
		strict := func(v any) {
			if err := sigsyaml.UnmarshalStrict(doc, v); err != nil {
				t.Fatalf("%s (%s %s): %v\n%s", name, tm.APIVersion, tm.Kind, err, doc)
			}
		}
		key := func(m metav1.ObjectMeta) string {
			if m.Namespace == "" {
				t.Errorf("%s: %s %s has no namespace", name, tm.Kind, m.Name)
			}
			return m.Namespace + "/" + m.Name
		}
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 ConfigMap":
			v := &corev1.ConfigMap{}
			strict(v)
			o.configMaps[key(v.ObjectMeta)] = v
		case "v1 Service":
			v := &corev1.Service{}
			strict(v)
			o.services[key(v.ObjectMeta)] = v
		case "v1 ServiceAccount":
			v := &corev1.ServiceAccount{}
			strict(v)
			o.accounts[key(v.ObjectMeta)] = v
		case "apps/v1 DaemonSet":
			v := &appsv1.DaemonSet{}
			strict(v)
			o.daemonSets[key(v.ObjectMeta)] = v
		case "apps/v1 Deployment":
			v := &appsv1.Deployment{}
			strict(v)
			o.deployments[key(v.ObjectMeta)] = v
		case "networking.k8s.io/v1 NetworkPolicy":
			v := &networkingv1.NetworkPolicy{}
			strict(v)
			o.netpols[key(v.ObjectMeta)] = v
		case "policy/v1 PodDisruptionBudget":
			v := &policyv1.PodDisruptionBudget{}
			strict(v)
			o.pdbs[key(v.ObjectMeta)] = v
		case "cert-manager.io/v1 Certificate":
			v := &cmv1.Certificate{}
			strict(v)
			o.certs[key(v.ObjectMeta)] = v
		case "monitoring.coreos.com/v1 ServiceMonitor":
			v := &monitoringv1.ServiceMonitor{}
			strict(v)
			o.monitors[key(v.ObjectMeta)] = v
		case "monitoring.coreos.com/v1 PrometheusRule":
			v := &monitoringv1.PrometheusRule{}
			strict(v)
			o.rules[key(v.ObjectMeta)] = v
		default:
			t.Errorf("%s: unexpected object %s %s", name, tm.APIVersion, tm.Kind)
		}
	}
	return o
}

// TestChartLint runs Helm's linter on the chart with every variant's values: no warning, no
// error.
func TestChartLint(t *testing.T) {
	for _, name := range variantNames() {
		t.Run(name, func(t *testing.T) {
			l := action.NewLint()
			l.Namespace = "tokenagent"
			res := l.Run([]string{chartDir}, values(t, name))
			for _, m := range res.Messages {
				t.Log(m.Error())
			}
			if action.HasWarningsOrErrors(res) {
				t.Fatalf("helm lint: %v", res.Errors)
			}
		})
	}
}

// workload is the agent's pod template and kind, whichever the variant renders.
func workload(t *testing.T, o *objects) (string, *corev1.PodTemplateSpec, *metav1.LabelSelector) {
	t.Helper()
	if len(o.daemonSets)+len(o.deployments) != 1 {
		t.Fatalf("%d DaemonSets and %d Deployments, want one workload", len(o.daemonSets), len(o.deployments))
	}
	for _, ds := range o.daemonSets {
		return "DaemonSet", &ds.Spec.Template, ds.Spec.Selector
	}
	for _, d := range o.deployments {
		return "Deployment", &d.Spec.Template, d.Spec.Selector
	}
	return "", nil, nil
}

// TestChartRenders renders every variant and checks that the objects fit together: the config
// the pods mount is a valid tokenagent config whose files are where the pods mount them, the
// Service and the NetworkPolicy select the pods, the pods are locked down, TLS comes from the
// Secret the Certificate writes, and the Prometheus Operator objects point at real ports and
// carry the shipped alerts.
func TestChartRenders(t *testing.T) {
	for _, name := range variantNames() {
		t.Run(name, func(t *testing.T) {
			o := parse(t, render(t, name))
			vals := values(t, name)
			kind, pod, sel := workload(t, o)
			if want := strOr(vals["kind"], "DaemonSet"); kind != want {
				t.Fatalf("workload kind %s, want %s", kind, want)
			}
			if !labelsMatch(sel.MatchLabels, pod.Labels) {
				t.Fatalf("the workload's selector %v does not match its pods %v", sel.MatchLabels, pod.Labels)
			}
			ps := &pod.Spec
			if len(ps.Containers) != 1 {
				t.Fatalf("%d containers", len(ps.Containers))
			}
			c := ps.Containers[0]
			cfg := mountedConfig(t, o, ps, c)
			checkLockedDown(t, ps, c)
			checkFilesMounted(t, cfg, ps, c)

			// The Service reaches the pods' named ports; node-local for a DaemonSet.
			if len(o.services) != 1 {
				t.Fatalf("%d Services", len(o.services))
			}
			for _, svc := range o.services {
				if !labelsMatch(svc.Spec.Selector, pod.Labels) {
					t.Errorf("Service %s does not select the pods", svc.Name)
				}
				for _, p := range svc.Spec.Ports {
					if containerPort(c, p.TargetPort.StrVal) == 0 {
						t.Errorf("Service port %s targets %q, not a port of the container", p.Name, p.TargetPort.StrVal)
					}
				}
				local := svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
				if local != (kind == "DaemonSet") {
					t.Errorf("internalTrafficPolicy Local = %v for a %s", local, kind)
				}
				if name == "socket" {
					continue // no gRPC port: checkSocket
				}
				if grpcAddr := cfg.GRPCAddr; !strings.HasSuffix(grpcAddr, ":9191") || containerPort(c, "grpc") != 9191 {
					t.Errorf("grpc_addr %s and the container's grpc port %d disagree", grpcAddr, containerPort(c, "grpc"))
				}
			}
			checkSocket(t, o, cfg, ps, c, name == "socket")
			if np, _ := vals["networkPolicy"].(map[string]any); np == nil || np["enabled"] != false {
				if len(o.netpols) != 1 {
					t.Fatalf("%d NetworkPolicies, want 1", len(o.netpols))
				}
				for _, np := range o.netpols {
					if !labelsMatch(np.Spec.PodSelector.MatchLabels, pod.Labels) {
						t.Errorf("the NetworkPolicy does not select the pods")
					}
				}
			} else if len(o.netpols) != 0 {
				t.Error("networkPolicy.enabled false still renders one")
			}
			if (len(o.pdbs) == 1) != (kind == "Deployment") {
				t.Errorf("%d PodDisruptionBudgets for a %s (a Deployment gets one, a DaemonSet none)", len(o.pdbs), kind)
			}
			for _, pdb := range o.pdbs {
				if !labelsMatch(pdb.Spec.Selector.MatchLabels, pod.Labels) {
					t.Error("the PodDisruptionBudget does not select the pods")
				}
			}
			checkTLS(t, o, cfg, ps, vals)
			checkMonitoring(t, o, pod, c, vals)
			if cfg.GRPCReflection != (name == "deployment") {
				t.Errorf("grpc_reflection = %v", cfg.GRPCReflection)
			}
			if (cfg.Tracing != nil) != (name == "deployment") {
				t.Errorf("tracing = %+v", cfg.Tracing)
			}
			if name == "deployment" && (cfg.Sites[0].Mode != config.ModeShadow || cfg.Log.Level != "debug") {
				t.Errorf("values not carried into the config: site mode %q, log level %q", cfg.Sites[0].Mode, cfg.Log.Level)
			}
		})
	}
}

// checkSocket: with socket.enabled the agent serves on a Unix socket (the path
// examples/envoy-socket.yaml's cluster names) in a hostPath directory the container mounts,
// with the socket mode of the values, and nothing of gRPC is on TCP: no container port, no
// Service port, no NetworkPolicy rule; a rollout stops a node's agent before it starts the next.
func checkSocket(t *testing.T, o *objects, cfg *config.Config, ps *corev1.PodSpec, c corev1.Container, on bool) {
	t.Helper()
	network, path := cfg.GRPCListen()
	if (network == "unix") != on {
		t.Fatalf("grpc_addr %s with socket.enabled %v", cfg.GRPCAddr, on)
	}
	ds := firstDaemonSet(o)
	if !on {
		if ds != nil && ds.Spec.UpdateStrategy.RollingUpdate.MaxSurge.IntValue() != 1 {
			t.Error("a TCP DaemonSet should surge: the new agent starts before the old one stops")
		}
		return
	}
	envoy, err := os.ReadFile("../envoy-socket.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(envoy), "pipe: {path: "+path+"}") {
		t.Errorf("examples/envoy-socket.yaml does not name the chart's socket %s", path)
	}
	v := mountFor(ps, c, path)
	if v == nil || v.HostPath == nil || v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectoryOrCreate {
		t.Fatalf("the socket %s is not in a hostPath directory the container mounts: %+v", path, v)
	}
	if mode, _ := cfg.SocketMode(); mode != 0o666 {
		t.Errorf("grpc_socket_mode = %v, want the values' 0666", mode)
	}
	if containerPort(c, "grpc") != 0 || cfg.GRPCTLS != nil {
		t.Error("the socket variant still has a gRPC port or TLS")
	}
	for _, svc := range o.services {
		for _, p := range svc.Spec.Ports {
			if p.Name == "grpc" {
				t.Error("the Service still has a gRPC port")
			}
		}
	}
	for _, np := range o.netpols {
		for _, r := range np.Spec.Ingress {
			for _, p := range r.Ports {
				if p.Port != nil && p.Port.StrVal == "grpc" {
					t.Error("the NetworkPolicy still opens the gRPC port")
				}
			}
		}
	}
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ru.MaxSurge.IntValue() != 0 || ru.MaxUnavailable.IntValue() != 1 {
		t.Errorf("the socket DaemonSet's rollout: maxSurge %v maxUnavailable %v, want 0 and 1 (one socket per node)", ru.MaxSurge, ru.MaxUnavailable)
	}
}

func firstDaemonSet(o *objects) *appsv1.DaemonSet {
	for _, ds := range o.daemonSets {
		return ds
	}
	return nil
}

// TestChartRefuses: values that cannot work stop the render with a message naming them.
func TestChartRefuses(t *testing.T) {
	for name, vals := range map[string]string{
		"socket with a Deployment": "kind: Deployment\nsocket: {enabled: true}\ntls: {enabled: false}\n",
		"socket with gRPC TLS":     "socket: {enabled: true}\n",
	} {
		t.Run(name, func(t *testing.T) {
			ch, err := loader.Load(chartDir)
			if err != nil {
				t.Fatal(err)
			}
			v := map[string]any{}
			if err := sigsyaml.Unmarshal([]byte(vals), &v); err != nil {
				t.Fatal(err)
			}
			rv, err := chartutil.ToRenderValues(ch, v, common.ReleaseOptions{Name: "edge-auth", Namespace: "tokenagent", IsInstall: true}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := engine.Render(ch, rv); err == nil || !strings.Contains(err.Error(), "socket.enabled") {
				t.Fatalf("render: %v, want a refusal naming socket.enabled", err)
			}
		})
	}
}

// mountedConfig finds the ConfigMap file the container's --config names and parses it as the
// agent would.
func mountedConfig(t *testing.T, o *objects, ps *corev1.PodSpec, c corev1.Container) *config.Config {
	t.Helper()
	i := slices.Index(c.Args, "--config")
	if i < 0 || i+1 >= len(c.Args) {
		t.Fatalf("container args %v do not name --config", c.Args)
	}
	cfgPath := c.Args[i+1]
	v := mountFor(ps, c, cfgPath)
	if v == nil || v.ConfigMap == nil {
		t.Fatalf("%s is not on a mounted ConfigMap", cfgPath)
	}
	cm := o.configMaps["tokenagent/"+v.ConfigMap.Name]
	if cm == nil {
		t.Fatalf("ConfigMap %s is not rendered", v.ConfigMap.Name)
	}
	key := filepath.Base(cfgPath)
	body, ok := cm.Data[key]
	if !ok {
		t.Fatalf("ConfigMap %s has no %s", cm.Name, key)
	}
	cfg, err := config.Parse([]byte(body), filepath.Dir(cfgPath))
	if err != nil {
		t.Fatalf("the rendered tokenagent.yaml: %v\n%s", err, body)
	}
	return cfg
}

func checkLockedDown(t *testing.T, ps *corev1.PodSpec, c corev1.Container) {
	t.Helper()
	psc, sc := ps.SecurityContext, c.SecurityContext
	switch {
	case psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot:
		t.Error("the pod may run as root")
	case psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Error("no RuntimeDefault seccomp profile")
	case sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("privilege escalation allowed")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("the root filesystem is writable")
	case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL"):
		t.Error("capabilities not dropped")
	case ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken:
		t.Error("the Kubernetes API token is mounted")
	case c.Resources.Limits.Memory().IsZero():
		t.Error("no memory limit (GOMEMLIMIT follows it)")
	}
	for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
		if p == nil || p.HTTPGet == nil || containerPort(c, p.HTTPGet.Port.StrVal) == 0 {
			t.Errorf("a probe does not reach a named port of the container: %+v", p)
		}
	}
	if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("readiness is not /readyz")
	}
}

// checkFilesMounted: every file the config names (Vault's token, TLS files, the policy cache)
// is under a volume the container mounts, and the Vault token is a projected token for the
// audience Vault's role expects.
func checkFilesMounted(t *testing.T, cfg *config.Config, ps *corev1.PodSpec, c corev1.Container) {
	t.Helper()
	tok := cfg.Keys.Vault.Auth.TokenFile
	v := mountFor(ps, c, tok)
	if v == nil || v.Projected == nil || len(v.Projected.Sources) != 1 || v.Projected.Sources[0].ServiceAccountToken == nil {
		t.Fatalf("keys.vault.auth.token_file %s is not a projected service account token", tok)
	}
	if aud := v.Projected.Sources[0].ServiceAccountToken.Audience; aud != "vault" {
		t.Errorf("the Vault token's audience is %q", aud)
	}
	if cfg.Keys.Source != "vault" || cfg.Keys.Vault.Auth.Method != "kubernetes" {
		t.Errorf("keys = %+v, want Vault with Kubernetes auth", cfg.Keys)
	}
	if m := mountFor(ps, c, cfg.Policies.CacheDir+"/x"); m == nil || m.EmptyDir == nil {
		t.Errorf("policies.cache_dir %s is not on a writable emptyDir", cfg.Policies.CacheDir)
	}
}

func checkTLS(t *testing.T, o *objects, cfg *config.Config, ps *corev1.PodSpec, vals map[string]any) {
	t.Helper()
	tlsVals, _ := vals["tls"].(map[string]any)
	if tlsVals != nil && tlsVals["enabled"] == false {
		if cfg.GRPCTLS != nil || cfg.HTTPTLS != nil || len(o.certs) != 0 {
			t.Error("tls.enabled false still configures TLS")
		}
		return
	}
	if cfg.GRPCTLS == nil || cfg.GRPCTLS.ClientCAFile == "" {
		t.Fatalf("grpc_tls = %+v, want mutual TLS (the default)", cfg.GRPCTLS)
	}
	if (cfg.HTTPTLS != nil) != (tlsVals != nil && tlsVals["http"] == true) {
		t.Errorf("http_tls = %+v", cfg.HTTPTLS)
	}
	if cfg.HTTPTLS != nil && cfg.HTTPTLS.ClientCAFile != "" {
		t.Error("http_tls asks for client certificates: the kubelet's probes could not connect")
	}
	c := ps.Containers[0]
	var secret string
	for _, f := range []string{cfg.GRPCTLS.CertFile, cfg.GRPCTLS.KeyFile, cfg.GRPCTLS.ClientCAFile} {
		v := mountFor(ps, c, f)
		if v == nil || v.Secret == nil {
			t.Fatalf("%s is not on a mounted Secret", f)
		}
		if secret != "" && v.Secret.SecretName != secret {
			t.Errorf("TLS files come from two Secrets")
		}
		secret = v.Secret.SecretName
		for _, m := range c.VolumeMounts {
			if m.Name == v.Name && m.SubPath != "" {
				t.Errorf("the TLS Secret is mounted with subPath: renewals would never reach the pod")
			}
		}
	}
	if existing, _ := tlsVals["existingSecret"].(string); existing != "" {
		if secret != existing || len(o.certs) != 0 {
			t.Errorf("with existingSecret %s: mounted %s, %d Certificates", existing, secret, len(o.certs))
		}
		return
	}
	server := o.certs["tokenagent/edge-auth-tokenagent"]
	if server == nil {
		t.Fatalf("no Certificate for the agent; have %v", keysOf(o.certs))
	}
	if server.Spec.SecretName != secret {
		t.Errorf("the Certificate writes %s, the pods mount %s", server.Spec.SecretName, secret)
	}
	for _, svc := range o.services {
		if fqdn := svc.Name + "." + svc.Namespace + ".svc"; !slices.Contains(server.Spec.DNSNames, fqdn) {
			t.Errorf("the agent's certificate does not name its Service %s: %v", fqdn, server.Spec.DNSNames)
		}
	}
	if !slices.Contains(server.Spec.Usages, cmv1.UsageServerAuth) {
		t.Error("the agent's certificate is not for server auth")
	}
	for k, cert := range o.certs {
		if cert == server {
			continue
		}
		if !slices.Contains(cert.Spec.Usages, cmv1.UsageClientAuth) || cert.Spec.IssuerRef != server.Spec.IssuerRef {
			t.Errorf("client certificate %s: usages %v, issuer %v (want client auth from the agent's issuer)", k, cert.Spec.Usages, cert.Spec.IssuerRef)
		}
	}
}

func checkMonitoring(t *testing.T, o *objects, pod *corev1.PodTemplateSpec, c corev1.Container, vals map[string]any) {
	t.Helper()
	on := func(k string) bool { m, _ := vals[k].(map[string]any); return m != nil && m["enabled"] == true }
	if (len(o.monitors) == 1) != on("serviceMonitor") || (len(o.rules) == 1) != on("prometheusRule") {
		t.Fatalf("%d ServiceMonitors, %d PrometheusRules", len(o.monitors), len(o.rules))
	}
	for _, sm := range o.monitors {
		var svc *corev1.Service
		for _, s := range o.services {
			if labelsMatch(sm.Spec.Selector.MatchLabels, s.Labels) {
				svc = s
			}
		}
		if svc == nil {
			t.Fatal("the ServiceMonitor selects no Service")
		}
		for _, ep := range sm.Spec.Endpoints {
			found := false
			for _, p := range svc.Spec.Ports {
				found = found || p.Name == ep.Port
			}
			if !found || ep.Path != "/metrics" {
				t.Errorf("ServiceMonitor endpoint %s%s is not the Service's metrics port", ep.Port, ep.Path)
			}
		}
	}
	for _, r := range o.rules {
		shipped := loadAlerts(t)
		got, err := json.Marshal(r.Spec.Groups)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Spec.Groups) != len(shipped.Groups) || len(r.Spec.Groups[0].Rules) != len(shipped.Groups[0].Rules) {
			t.Errorf("the PrometheusRule holds %s, not files/alerts.yaml", got)
		}
		for i, rule := range r.Spec.Groups[0].Rules {
			if rule.Alert != shipped.Groups[0].Rules[i].Alert || rule.Expr.String() != shipped.Groups[0].Rules[i].Expr {
				t.Errorf("rule %d: %s %q, want %s %q", i, rule.Alert, rule.Expr.String(), shipped.Groups[0].Rules[i].Alert, shipped.Groups[0].Rules[i].Expr)
			}
		}
	}
	for k, cm := range o.configMaps {
		if body, ok := cm.Data["tokenagent.json"]; ok {
			var d map[string]any
			if err := json.Unmarshal([]byte(body), &d); err != nil || d["uid"] != "tokenagent" {
				t.Errorf("dashboard ConfigMap %s: %v", k, err)
			}
			if cm.Labels["grafana_dashboard"] != "1" {
				t.Errorf("dashboard ConfigMap %s lacks Grafana's sidecar label", k)
			}
		}
	}
}

func strOr(v any, def string) string {
	if s, ok := v.(string); ok {
		return s
	}
	return def
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// mountFor returns the volume the container mounts at or above file, or nil.
func mountFor(ps *corev1.PodSpec, c corev1.Container, file string) *corev1.Volume {
	best := ""
	var name string
	for _, m := range c.VolumeMounts {
		if (file == m.MountPath || strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")) && len(m.MountPath) > len(best) {
			best, name = m.MountPath, m.Name
		}
	}
	for i := range ps.Volumes {
		if ps.Volumes[i].Name == name {
			return &ps.Volumes[i]
		}
	}
	return nil
}

func labelsMatch(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func containerPort(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

package examples_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/exchange"
)

const k8sDir = "k8s"

// k8sObjects are the parsed manifests, by kind.
type k8sObjects struct {
	namespaces      map[string]*corev1.Namespace
	serviceAccounts map[string]*corev1.ServiceAccount // namespace/name
	secrets         map[string]*corev1.Secret
	configMaps      map[string]*corev1.ConfigMap
	services        map[string]*corev1.Service
	daemonSets      map[string]*appsv1.DaemonSet
	deployments     map[string]*appsv1.Deployment
	networkPolicies map[string]*networkingv1.NetworkPolicy
	bindings        map[string]*rbacv1.ClusterRoleBinding
	certificates    map[string]*certificate // cert-manager (k8s_tls_test.go)
	clusterIssuers  map[string]*clusterIssuer
}

// parseManifest decodes one YAML document into the real Kubernetes type of its apiVersion and
// kind, refusing unknown and duplicate fields, and files it.
func (o *k8sObjects) parseManifest(doc []byte) (string, error) {
	var tm metav1.TypeMeta
	if err := sigsyaml.Unmarshal(doc, &tm); err != nil {
		return "", err
	}
	strict := func(v any) error { return sigsyaml.UnmarshalStrict(doc, v) }
	key := func(m metav1.ObjectMeta) string { return m.Namespace + "/" + m.Name }
	var err error
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 Namespace":
		v := &corev1.Namespace{}
		if err = strict(v); err == nil {
			o.namespaces[v.Name] = v
		}
	case "v1 ServiceAccount":
		v := &corev1.ServiceAccount{}
		if err = strict(v); err == nil {
			o.serviceAccounts[key(v.ObjectMeta)] = v
		}
	case "v1 Secret":
		v := &corev1.Secret{}
		if err = strict(v); err == nil {
			o.secrets[key(v.ObjectMeta)] = v
		}
	case "v1 ConfigMap":
		v := &corev1.ConfigMap{}
		if err = strict(v); err == nil {
			o.configMaps[key(v.ObjectMeta)] = v
		}
	case "v1 Service":
		v := &corev1.Service{}
		if err = strict(v); err == nil {
			o.services[key(v.ObjectMeta)] = v
		}
	case "apps/v1 DaemonSet":
		v := &appsv1.DaemonSet{}
		if err = strict(v); err == nil {
			o.daemonSets[key(v.ObjectMeta)] = v
		}
	case "apps/v1 Deployment":
		v := &appsv1.Deployment{}
		if err = strict(v); err == nil {
			o.deployments[key(v.ObjectMeta)] = v
		}
	case "networking.k8s.io/v1 NetworkPolicy":
		v := &networkingv1.NetworkPolicy{}
		if err = strict(v); err == nil {
			o.networkPolicies[key(v.ObjectMeta)] = v
		}
	case "rbac.authorization.k8s.io/v1 ClusterRoleBinding":
		v := &rbacv1.ClusterRoleBinding{}
		if err = strict(v); err == nil {
			o.bindings[v.Name] = v
		}
	case "cert-manager.io/v1 Certificate":
		v := &certificate{}
		if err = strict(v); err == nil {
			o.certificates[key(v.ObjectMeta)] = v
		}
	case "cert-manager.io/v1 ClusterIssuer":
		v := &clusterIssuer{}
		if err = strict(v); err == nil {
			o.clusterIssuers[v.Name] = v
		}
	default:
		return "", fmt.Errorf("apiVersion %q kind %q: not a kind this test knows", tm.APIVersion, tm.Kind)
	}
	return tm.Kind, err
}

// splitYAML splits a multi-document YAML file on its "---" lines.
func splitYAML(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(b), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(d, "")) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

// loadK8s parses every manifest kustomization.yaml lists, and checks that it lists every
// manifest of the folder.
func loadK8s(t *testing.T) *k8sObjects {
	t.Helper()
	var kust struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	b, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sigsyaml.UnmarshalStrict(b, &kust); err != nil || kust.Kind != "Kustomization" {
		t.Fatalf("kustomization.yaml: %v (kind %q)", err, kust.Kind)
	}
	files, _ := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	var manifests []string
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" {
			manifests = append(manifests, base)
		}
	}
	listed := slices.Clone(kust.Resources)
	sort.Strings(listed)
	if !slices.Equal(listed, manifests) {
		t.Errorf("kustomization.yaml lists %v; the folder holds %v", listed, manifests)
	}

	o := &k8sObjects{namespaces: map[string]*corev1.Namespace{}, serviceAccounts: map[string]*corev1.ServiceAccount{},
		secrets: map[string]*corev1.Secret{}, configMaps: map[string]*corev1.ConfigMap{}, services: map[string]*corev1.Service{},
		daemonSets: map[string]*appsv1.DaemonSet{}, deployments: map[string]*appsv1.Deployment{},
		networkPolicies: map[string]*networkingv1.NetworkPolicy{}, bindings: map[string]*rbacv1.ClusterRoleBinding{},
		certificates: map[string]*certificate{}, clusterIssuers: map[string]*clusterIssuer{}}
	for _, f := range kust.Resources {
		b, err := os.ReadFile(filepath.Join(k8sDir, f))
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitYAML(b) {
			if _, err := o.parseManifest(doc); err != nil {
				t.Errorf("%s, document %d: %v", f, i+1, err)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return o
}

// TestK8sStrictParsing proves the parsing above refuses the mistakes it is there for.
func TestK8sStrictParsing(t *testing.T) {
	o := &k8sObjects{daemonSets: map[string]*appsv1.DaemonSet{}, configMaps: map[string]*corev1.ConfigMap{}}
	for _, tc := range []struct{ name, doc, want string }{
		{"misspelt field", "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec: {selektor: {}}\n", "selektor"},
		{"field at the wrong level", "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec: {template: {spec: {containers: [{name: a, readOnlyRootFilesystem: true}]}}}\n", "readOnlyRootFilesystem"},
		{"duplicate field", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\ndata: {c: d}\n", "already set"},
		{"wrong type", "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec: {minReadySeconds: soon}\n", "minReadySeconds"},
		{"unknown kind", "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n", "Pod"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := o.parseManifest([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %q", err, tc.want)
			}
		})
	}
}

func TestK8sManifests(t *testing.T) {
	o := loadK8s(t)

	for _, want := range []string{"tokenagent", "edge"} {
		if o.namespaces[want] == nil {
			t.Fatalf("no Namespace %s", want)
		}
	}
	for name, ns := range o.namespaces {
		if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
			t.Errorf("namespace %s does not enforce the restricted Pod Security Standard", name)
		}
	}
	checkNamespaced := func(kind string, m metav1.ObjectMeta) {
		if m.Namespace == "" || o.namespaces[m.Namespace] == nil {
			t.Errorf("%s %s: namespace %q is not one of the manifests' namespaces", kind, m.Name, m.Namespace)
		}
	}
	for _, v := range o.serviceAccounts {
		checkNamespaced("ServiceAccount", v.ObjectMeta)
	}
	for _, v := range o.secrets {
		checkNamespaced("Secret", v.ObjectMeta)
		if v.Type == corev1.SecretTypeServiceAccountToken {
			sa := v.Annotations[corev1.ServiceAccountNameKey]
			if o.serviceAccounts[v.Namespace+"/"+sa] == nil {
				t.Errorf("Secret %s is a token of service account %q, which does not exist", v.Name, sa)
			}
		}
	}
	for _, v := range o.configMaps {
		checkNamespaced("ConfigMap", v.ObjectMeta)
	}
	for _, b := range o.bindings {
		for _, s := range b.Subjects {
			if s.Kind == rbacv1.ServiceAccountKind && o.serviceAccounts[s.Namespace+"/"+s.Name] == nil {
				t.Errorf("ClusterRoleBinding %s binds service account %s/%s, which does not exist", b.Name, s.Namespace, s.Name)
			}
		}
		if b.RoleRef.Name != "system:auth-delegator" {
			t.Errorf("ClusterRoleBinding %s grants %s; the reviewer needs system:auth-delegator and nothing more", b.Name, b.RoleRef.Name)
		}
	}

	// Workloads: every reference resolves, and every pod meets the restricted profile.
	type workload struct {
		kind     string
		meta     metav1.ObjectMeta
		selector *metav1.LabelSelector
		pod      corev1.PodTemplateSpec
	}
	var workloads []workload
	for _, d := range o.daemonSets {
		workloads = append(workloads, workload{"DaemonSet", d.ObjectMeta, d.Spec.Selector, d.Spec.Template})
	}
	for _, d := range o.deployments {
		workloads = append(workloads, workload{"Deployment", d.ObjectMeta, d.Spec.Selector, d.Spec.Template})
	}
	for _, w := range workloads {
		what := w.kind + " " + w.meta.Name
		checkNamespaced(w.kind, w.meta)
		if w.selector == nil || !labelsMatch(w.selector.MatchLabels, w.pod.Labels) {
			t.Errorf("%s: the selector does not match the pod template's labels", what)
		}
		checkPodSpec(t, what, w.meta.Namespace, &w.pod.Spec, o)
	}

	// Services select a workload of their namespace and name its ports.
	for _, s := range o.services {
		checkNamespaced("Service", s.ObjectMeta)
		var matched bool
		for _, w := range workloads {
			if w.meta.Namespace != s.Namespace || !labelsMatch(s.Spec.Selector, w.pod.Labels) {
				continue
			}
			matched = true
			for _, p := range s.Spec.Ports {
				if !hasPort(w.pod.Spec.Containers, p.TargetPort) {
					t.Errorf("Service %s: targetPort %s is not a port of %s %s", s.Name, p.TargetPort.String(), w.kind, w.meta.Name)
				}
			}
		}
		if !matched {
			t.Errorf("Service %s selects no workload of the manifests", s.Name)
		}
	}

	// The agent: a DaemonSet behind a node-local Service, reachable from the gateway only.
	ds := o.daemonSets["tokenagent/tokenagent"]
	svc := o.services["tokenagent/tokenagent"]
	gw := o.deployments["edge/envoy-gateway"]
	if ds == nil || svc == nil || gw == nil {
		t.Fatal("want DaemonSet tokenagent/tokenagent, Service tokenagent/tokenagent and Deployment edge/envoy-gateway")
	}
	if p := svc.Spec.InternalTrafficPolicy; p == nil || *p != corev1.ServiceInternalTrafficPolicyLocal {
		t.Error("Service tokenagent must be node-local (internalTrafficPolicy: Local)")
	}
	if ds.Spec.Template.Spec.HostNetwork {
		t.Error("the agent runs on the host network; the node-local Service makes that unnecessary")
	}
	np := o.networkPolicies["tokenagent/tokenagent"]
	if np == nil || !labelsMatch(np.Spec.PodSelector.MatchLabels, ds.Spec.Template.Labels) {
		t.Fatal("no NetworkPolicy selecting the agent's pods")
	}
	var gatewayAllowed bool
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port != nil && !hasPort(ds.Spec.Template.Spec.Containers, *p.Port) {
				t.Errorf("NetworkPolicy %s: port %s is not a port of the agent", np.Name, p.Port.String())
			}
		}
		for _, from := range rule.From {
			if from.PodSelector != nil && labelsMatch(from.PodSelector.MatchLabels, gw.Spec.Template.Labels) {
				gatewayAllowed = true
			}
		}
	}
	if !gatewayAllowed {
		t.Error("the NetworkPolicy does not let the Envoy gateway's pods reach the agent")
	}

	cfg, c := checkAgentPod(t, o, ds)
	checkAgentVaultSetup(t, cfg, ds)
	checkGateway(t, o, gw, svc)
	checkMutualTLS(t, o, cfg, ds, gw)
	checkDockerfile(t, c, ds)
}

// checkPodSpec checks a pod's references (service account, config maps, volumes, probe ports)
// and the restricted Pod Security Standard's rules, plus resources.
func checkPodSpec(t *testing.T, what, ns string, ps *corev1.PodSpec, o *k8sObjects) {
	t.Helper()
	if sa := ps.ServiceAccountName; sa != "" && o.serviceAccounts[ns+"/"+sa] == nil {
		t.Errorf("%s: service account %q does not exist in %s", what, sa, ns)
	}
	if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
		t.Errorf("%s: mounts a Kubernetes API token it has no use for", what)
	}
	if ps.HostPID || ps.HostIPC || ps.HostNetwork {
		t.Errorf("%s: shares a host namespace", what)
	}
	sc := ps.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		t.Errorf("%s: the pod must run as a non-root user (runAsNonRoot, runAsUser)", what)
	}
	if sc == nil || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: seccompProfile must be RuntimeDefault", what)
	}
	volumes := map[string]*corev1.Volume{}
	for i := range ps.Volumes {
		v := &ps.Volumes[i]
		volumes[v.Name] = v
		if v.HostPath != nil {
			t.Errorf("%s: volume %s is a hostPath", what, v.Name)
		}
		if cm := v.ConfigMap; cm != nil {
			obj := o.configMaps[ns+"/"+cm.Name]
			if obj == nil {
				t.Errorf("%s: volume %s mounts ConfigMap %q, which does not exist in %s", what, v.Name, cm.Name, ns)
				continue
			}
			for _, it := range cm.Items {
				if _, ok := obj.Data[it.Key]; !ok {
					t.Errorf("%s: volume %s mounts key %q, which ConfigMap %s does not have", what, v.Name, it.Key, cm.Name)
				}
			}
		}
	}
	for _, c := range ps.Containers {
		cwhat := what + " container " + c.Name
		for _, m := range c.VolumeMounts {
			if volumes[m.Name] == nil {
				t.Errorf("%s: mounts volume %q, which the pod does not have", cwhat, m.Name)
			}
		}
		for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
			if p == nil {
				if name != "startup" {
					t.Errorf("%s: no %s probe", cwhat, name)
				}
				continue
			}
			var port intstr.IntOrString
			switch {
			case p.HTTPGet != nil:
				port = p.HTTPGet.Port
			case p.TCPSocket != nil:
				port = p.TCPSocket.Port
			case p.GRPC != nil:
				port = intstr.FromInt32(p.GRPC.Port)
			default:
				t.Errorf("%s: %s probe has no handler", cwhat, name)
				continue
			}
			if !hasPort([]corev1.Container{c}, port) {
				t.Errorf("%s: %s probe port %s is not one of its ports", cwhat, name, port.String())
			}
		}
		csc := c.SecurityContext
		switch {
		case csc == nil:
			t.Errorf("%s: no securityContext", cwhat)
		default:
			if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
				t.Errorf("%s: allowPrivilegeEscalation must be false", cwhat)
			}
			if csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
				t.Errorf("%s: the root filesystem must be read-only", cwhat)
			}
			if csc.Privileged != nil && *csc.Privileged {
				t.Errorf("%s: privileged", cwhat)
			}
			if csc.Capabilities == nil || !slices.Equal(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(csc.Capabilities.Add) > 0 {
				t.Errorf("%s: capabilities must drop ALL and add none", cwhat)
			}
		}
		r := c.Resources
		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if q, ok := r.Requests[res]; !ok || q.IsZero() {
				t.Errorf("%s: no %s request", cwhat, res)
			}
		}
		if q, ok := r.Limits[corev1.ResourceMemory]; !ok || q.Cmp(r.Requests[corev1.ResourceMemory]) < 0 {
			t.Errorf("%s: no memory limit at or above the request", cwhat)
		}
	}
}

// checkAgentPod checks the agent's container against its own config file, which it loads
// with the agent's own parser.
func checkAgentPod(t *testing.T, o *k8sObjects, ds *appsv1.DaemonSet) (*config.Config, corev1.Container) {
	t.Helper()
	ps := ds.Spec.Template.Spec
	if len(ps.Containers) != 1 {
		t.Fatalf("the agent's pod has %d containers, want 1", len(ps.Containers))
	}
	c := ps.Containers[0]

	// --config names a file that a ConfigMap volume mounts, and that file loads.
	i := slices.Index(c.Args, "--config")
	if len(c.Args) < 3 || c.Args[0] != "serve" || i < 0 || i+1 >= len(c.Args) {
		t.Fatalf("agent args %q: want serve --config FILE", c.Args)
	}
	cfgPath := c.Args[i+1]
	cm, key := mountedConfigMapFile(t, o, ds.Namespace, ps, c, cfgPath)
	cfg, err := config.Parse([]byte(cm.Data[key]), filepath.Dir(cfgPath))
	if err != nil {
		t.Fatalf("ConfigMap %s key %s: %v", cm.Name, key, err)
	}

	// The listen addresses are the container's named ports, on the pod's address.
	for name, addr := range map[string]string{"grpc": cfg.GRPCAddr, "http": cfg.HTTPAddr} {
		host, port, _ := net.SplitHostPort(addr)
		if !hasPort([]corev1.Container{c}, intstr.FromString(name)) || strconv.Itoa(int(containerPort(c, name))) != port {
			t.Errorf("%s_addr %s does not listen on the container port named %s", name, addr, name)
		}
		if host != "0.0.0.0" && host != "" && host != "::" {
			t.Errorf("%s_addr %s listens on %s only; the Service and the kubelet reach the pod's address", name, addr, host)
		}
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port.String() != "http" {
		t.Error("the readiness probe must be GET /readyz on the http port")
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || p.HTTPGet.Port.String() != "http" {
		t.Error("the liveness probe must be GET /healthz on the http port")
	}

	// The policy cache is on a writable volume: the root filesystem is read-only.
	if cfg.Policies.CacheDir == "" || mountFor(ps, c, cfg.Policies.CacheDir) == nil || mountFor(ps, c, cfg.Policies.CacheDir).EmptyDir == nil {
		t.Errorf("policies.cache_dir %q is not on an emptyDir volume", cfg.Policies.CacheDir)
	}
	return cfg, c
}

// checkAgentVaultSetup checks that the config logs in to Vault with the projected token the pod
// gets, for the role, service account and audience vault-kubernetes-auth.sh sets up.
func checkAgentVaultSetup(t *testing.T, cfg *config.Config, ds *appsv1.DaemonSet) {
	t.Helper()
	ps := ds.Spec.Template.Spec
	c := ps.Containers[0]
	v := cfg.Keys.Vault
	if cfg.Keys.Source != "vault" || v.Auth.Method != "kubernetes" {
		t.Fatalf("keys.source %q auth %q: want vault with kubernetes auth", cfg.Keys.Source, v.Auth.Method)
	}
	script, err := os.ReadFile(filepath.Join(k8sDir, "vault-kubernetes-auth.sh"))
	if err != nil {
		t.Fatal(err)
	}
	def := func(name string) string {
		m := regexp.MustCompile(`(?m)^\w+=\$\{` + name + `:-([^}]*)\}$`).FindSubmatch(script)
		if m == nil {
			t.Fatalf("vault-kubernetes-auth.sh has no default for %s", name)
		}
		return string(m[1])
	}
	if v.Auth.Role != def("ROLE") {
		t.Errorf("keys.vault.auth.role %q, the script's role %q", v.Auth.Role, def("ROLE"))
	}
	if ds.Namespace != def("NAMESPACE") || ps.ServiceAccountName != def("SERVICE_ACCOUNT") {
		t.Errorf("the agent runs as %s/%s; the script binds %s/%s", ds.Namespace, ps.ServiceAccountName, def("NAMESPACE"), def("SERVICE_ACCOUNT"))
	}
	if m := v.Auth.MountPath; m != "" && m != def("AUTH_MOUNT") {
		t.Errorf("keys.vault.auth.mount_path %q, the script's %q", m, def("AUTH_MOUNT"))
	}
	if v.Mount != def("KV_MOUNT") {
		t.Errorf("keys.vault.mount %q, the script's %q", v.Mount, def("KV_MOUNT"))
	}
	if !regexp.MustCompile(`"` + regexp.QuoteMeta(v.Mount) + `/(data|metadata)/` + regexp.QuoteMeta(v.Prefix) + `/`).Match(mustRead(t, "vault/tokenagent-policy.hcl")) {
		t.Errorf("the Vault policy does not cover keys.vault.prefix %q", v.Prefix)
	}
	vol := mountFor(ps, c, v.Auth.TokenFile)
	if vol == nil || vol.Projected == nil {
		t.Fatalf("keys.vault.auth.token_file %s is not on a projected volume", v.Auth.TokenFile)
	}
	var sat *corev1.ServiceAccountTokenProjection
	for _, s := range vol.Projected.Sources {
		if s.ServiceAccountToken != nil {
			sat = s.ServiceAccountToken
		}
	}
	if sat == nil || filepath.Base(v.Auth.TokenFile) != sat.Path {
		t.Fatalf("token_file %s is not the projected service account token", v.Auth.TokenFile)
	}
	if sat.Audience != def("AUDIENCE") {
		t.Errorf("the projected token's audience %q, the Vault role's %q", sat.Audience, def("AUDIENCE"))
	}
	if sat.ExpirationSeconds == nil || *sat.ExpirationSeconds > 24*3600 {
		t.Error("the projected token should be short-lived")
	}
}

// checkGateway loads the gateway's envoy.yaml like examples/envoy.yaml and checks that it asks
// the node-local agent Service.
func checkGateway(t *testing.T, o *k8sObjects, gw *appsv1.Deployment, svc *corev1.Service) {
	t.Helper()
	ps := gw.Spec.Template.Spec
	c := ps.Containers[0]
	i := slices.Index(c.Args, "-c")
	if i < 0 || i+1 >= len(c.Args) {
		t.Fatalf("envoy args %q: want -c FILE", c.Args)
	}
	cm, key := mountedConfigMapFile(t, o, gw.Namespace, ps, c, c.Args[i+1])
	b := mustLoadBootstrap(t, "ConfigMap "+cm.Name+" key "+key, []byte(cm.Data[key]))
	p := edgeParts(t, b)
	addr := checkEdge(t, p, exchange.Path).GetSocketAddress()
	if want := svc.Name + "." + svc.Namespace + ".svc.cluster.local"; addr.GetAddress() != want {
		t.Errorf("the gateway asks %s, want the node-local Service %s", addr.GetAddress(), want)
	}
	if addr.GetPortValue() != uint32(svc.Spec.Ports[0].Port) {
		t.Errorf("the gateway asks port %d, the Service serves %d", addr.GetPortValue(), svc.Spec.Ports[0].Port)
	}
	if c := p.clusters[p.extAuthz.GetGrpcService().GetEnvoyGrpc().GetClusterName()]; c.GetType().String() != "STRICT_DNS" {
		t.Errorf("the agent's cluster is %s; a Service name needs STRICT_DNS", c.GetType())
	}
	ls := b.GetStaticResources().GetListeners()[0].GetAddress().GetSocketAddress()
	if ls.GetPortValue() != uint32(containerPort(c, "http")) {
		t.Errorf("envoy listens on %d, the container port http is %d", ls.GetPortValue(), containerPort(c, "http"))
	}
	// The image is the Envoy release of the API the config was checked against.
	gcp := regexp.MustCompile(`github.com/envoyproxy/go-control-plane/envoy v(\d+\.\d+)\.`).FindSubmatch(mustRead(t, "../go.mod"))
	if gcp == nil || !strings.HasPrefix(c.Image, "envoyproxy/envoy:v"+string(gcp[1])+"-") && !strings.HasPrefix(c.Image, "envoyproxy/envoy:v"+string(gcp[1])+".") {
		t.Errorf("envoy image %s; the config is validated against go-control-plane's envoy %s", c.Image, gcp)
	}
}

// checkDockerfile checks that the image the DaemonSet runs is built as the user it runs as, with
// the Go release go.mod names, from a package that exists.
func checkDockerfile(t *testing.T, c corev1.Container, ds *appsv1.DaemonSet) {
	t.Helper()
	df := mustRead(t, filepath.Join(k8sDir, "Dockerfile"))
	user := regexp.MustCompile(`(?m)^USER (\d+):(\d+)$`).FindSubmatch(df)
	sc := ds.Spec.Template.Spec.SecurityContext
	if user == nil || sc.RunAsUser == nil || string(user[1]) != strconv.FormatInt(*sc.RunAsUser, 10) ||
		sc.RunAsGroup == nil || string(user[2]) != strconv.FormatInt(*sc.RunAsGroup, 10) {
		t.Errorf("the Dockerfile's USER line %q differs from the pod's runAsUser/runAsGroup", regexp.MustCompile(`(?m)^USER .*$`).Find(df))
	}
	gover := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mustRead(t, "../go.mod"))
	if gover == nil || !bytes.Contains(df, []byte("FROM golang:"+string(gover[1])+"-")) {
		t.Errorf("the Dockerfile does not build with Go %s (go.mod)", gover)
	}
	pkg := regexp.MustCompile(`go build [^\n]* (\./\S+)\n`).FindSubmatch(df)
	if pkg == nil {
		t.Fatal("the Dockerfile builds no package")
	}
	if _, err := os.Stat(filepath.Join("..", string(pkg[1]), "main.go")); err != nil {
		t.Errorf("the Dockerfile builds %s: %v", pkg[1], err)
	}
	if !bytes.Contains(df, []byte(`ENTRYPOINT ["/usr/local/bin/tokenagent"]`)) || c.Command != nil {
		t.Error("the container's args must go to the image's tokenagent entrypoint")
	}
}

// mountedConfigMapFile finds the ConfigMap key a container sees at path.
func mountedConfigMapFile(t *testing.T, o *k8sObjects, ns string, ps corev1.PodSpec, c corev1.Container, path string) (*corev1.ConfigMap, string) {
	t.Helper()
	for _, m := range c.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, path)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		for _, v := range ps.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			key := rel
			for _, it := range v.ConfigMap.Items {
				if it.Path == rel {
					key = it.Key
				}
			}
			cm := o.configMaps[ns+"/"+v.ConfigMap.Name]
			if cm == nil {
				t.Fatalf("%s is mounted from ConfigMap %s, which does not exist", path, v.ConfigMap.Name)
			}
			if _, ok := cm.Data[key]; !ok {
				t.Fatalf("%s: ConfigMap %s has no key %s", path, cm.Name, key)
			}
			return cm, key
		}
	}
	t.Fatalf("container %s: no ConfigMap volume is mounted at %s", c.Name, path)
	return nil, ""
}

// mountFor returns the volume a container sees at path (the longest mount path holding it).
func mountFor(ps corev1.PodSpec, c corev1.Container, path string) *corev1.Volume {
	var best *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		if path == m.MountPath || strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
			if best == nil || len(m.MountPath) > len(best.MountPath) {
				best = &c.VolumeMounts[i]
			}
		}
	}
	if best == nil {
		return nil
	}
	for i := range ps.Volumes {
		if ps.Volumes[i].Name == best.Name {
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

func hasPort(cs []corev1.Container, p intstr.IntOrString) bool {
	for _, c := range cs {
		for _, cp := range c.Ports {
			if p.Type == intstr.String && cp.Name == p.StrVal || p.Type == intstr.Int && cp.ContainerPort == p.IntVal {
				return true
			}
		}
	}
	return false
}

func containerPort(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

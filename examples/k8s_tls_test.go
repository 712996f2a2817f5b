package examples_test

import (
	"path/filepath"
	"slices"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tokenagent/tokenagent/agent/config"
)

// certificate and clusterIssuer are the fields of cert-manager's Certificate and ClusterIssuer
// (cert-manager.io/v1) the manifests use, parsed strictly: a misspelt field fails here.
// examples/deploytest parses the same objects into cert-manager's own types.
type certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		IsCA        bool     `json:"isCA"`
		CommonName  string   `json:"commonName"`
		SecretName  string   `json:"secretName"`
		DNSNames    []string `json:"dnsNames"`
		Usages      []string `json:"usages"`
		Duration    string   `json:"duration"`
		RenewBefore string   `json:"renewBefore"`
		PrivateKey  struct {
			Algorithm      string `json:"algorithm"`
			Size           int    `json:"size"`
			RotationPolicy string `json:"rotationPolicy"`
		} `json:"privateKey"`
		IssuerRef struct {
			Name  string `json:"name"`
			Kind  string `json:"kind"`
			Group string `json:"group"`
		} `json:"issuerRef"`
	} `json:"spec"`
}

type clusterIssuer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SelfSigned *struct{} `json:"selfSigned"`
		CA         *struct {
			SecretName string `json:"secretName"`
		} `json:"ca"`
	} `json:"spec"`
}

// secretMount returns the Secret volume (and its mount path) under which the container sees
// file, or fails; the mount must not use subPath (renewals would never reach it).
func secretMount(t *testing.T, ps corev1.PodSpec, c corev1.Container, file string) (secret, dir string) {
	t.Helper()
	v := mountFor(ps, c, file)
	if v == nil || v.Secret == nil {
		t.Fatalf("%s is not on a mounted Secret", file)
	}
	for _, m := range c.VolumeMounts {
		if m.Name == v.Name {
			if m.SubPath != "" {
				t.Errorf("%s: the Secret is mounted with subPath; cert-manager's renewals would never reach it", file)
			}
			dir = m.MountPath
		}
	}
	return v.Secret.SecretName, dir
}

// checkMutualTLS checks the mutual TLS between the gateway and the agent: the agent serves the
// Secret of a Certificate for the Service name Envoy checks, trusts the CA that signs Envoy's
// client certificate, and Envoy's SDS files name the files of its mounted client Secret, in
// the directory it watches.
func checkMutualTLS(t *testing.T, o *k8sObjects, cfg *config.Config, ds *appsv1.DaemonSet, gw *appsv1.Deployment) {
	t.Helper()
	issuerOf := func(c *certificate) *clusterIssuer {
		if c.Spec.IssuerRef.Kind != "ClusterIssuer" || c.Spec.IssuerRef.Group != "cert-manager.io" {
			t.Fatalf("Certificate %s: issuer %+v, want a ClusterIssuer", c.Name, c.Spec.IssuerRef)
		}
		ci := o.clusterIssuers[c.Spec.IssuerRef.Name]
		if ci == nil {
			t.Fatalf("Certificate %s names ClusterIssuer %s, which does not exist", c.Name, c.Spec.IssuerRef.Name)
		}
		return ci
	}
	find := func(ns, secret string) *certificate {
		for _, c := range o.certificates {
			if c.Namespace == ns && c.Spec.SecretName == secret {
				return c
			}
		}
		t.Fatalf("no Certificate writes Secret %s/%s", ns, secret)
		return nil
	}

	// The agent.
	tlsCfg := cfg.GRPCTLS
	if tlsCfg == nil || tlsCfg.ClientCAFile == "" {
		t.Fatal("the agent's config has no grpc_tls with client_ca_file: Envoy would talk to it in plaintext")
	}
	aps, ac := ds.Spec.Template.Spec, ds.Spec.Template.Spec.Containers[0]
	secret, dir := secretMount(t, aps, ac, tlsCfg.CertFile)
	for file, key := range map[string]string{tlsCfg.CertFile: "tls.crt", tlsCfg.KeyFile: "tls.key", tlsCfg.ClientCAFile: "ca.crt"} {
		if s, _ := secretMount(t, aps, ac, file); s != secret || filepath.Join(dir, key) != file {
			t.Errorf("%s: want the key %s of Secret %s", file, key, secret)
		}
	}
	server := find(ds.Namespace, secret)
	serverIssuer := issuerOf(server)
	if serverIssuer.Spec.CA == nil {
		t.Error("the agent's issuer is not a CA issuer: its Secret would hold no ca.crt to trust clients by")
	}
	if !slices.Contains(server.Spec.Usages, "server auth") || server.Spec.PrivateKey.RotationPolicy != "Always" {
		t.Errorf("the agent's Certificate: usages %v, rotation %q", server.Spec.Usages, server.Spec.PrivateKey.RotationPolicy)
	}

	// Envoy: the cluster checks the agent's name, and SDS gives it the client Secret's files.
	gps, gc := gw.Spec.Template.Spec, gw.Spec.Template.Spec.Containers[0]
	i := slices.Index(gc.Args, "-c")
	cm, key := mountedConfigMapFile(t, o, gw.Namespace, gps, gc, gc.Args[i+1])
	p := edgeParts(t, mustLoadBootstrap(t, "the gateway's envoy.yaml", []byte(cm.Data[key])))
	u := upstreamTLS(t, p, p.extAuthz.GetGrpcService().GetEnvoyGrpc().GetClusterName())
	ctc := u.GetCommonTlsContext()
	if !slices.Contains(server.Spec.DNSNames, u.GetSni()) {
		t.Errorf("Envoy's SNI %q is not a name of the agent's certificate %v", u.GetSni(), server.Spec.DNSNames)
	}
	sans := ctc.GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames()
	if len(sans) == 0 {
		t.Fatal("Envoy accepts any certificate of the CA: no SAN matcher")
	}
	for _, m := range sans {
		if m.GetSanType() != tlsv3.SubjectAltNameMatcher_DNS || !slices.Contains(server.Spec.DNSNames, m.GetMatcher().GetExact()) {
			t.Errorf("Envoy's SAN matcher %v names none of the agent's certificate %v", m, server.Spec.DNSNames)
		}
	}
	if ctc.GetTlsParams().GetTlsMinimumProtocolVersion() != tlsv3.TlsParameters_TLSv1_2 || !slices.Equal(ctc.GetAlpnProtocols(), []string{"h2"}) {
		t.Error("Envoy's TLS to the agent: want TLS 1.2 or later and ALPN h2")
	}
	type sdsRef struct{ name, path, watched string }
	var refs []sdsRef
	for _, s := range ctc.GetTlsCertificateSdsSecretConfigs() {
		pcs := s.GetSdsConfig().GetPathConfigSource()
		refs = append(refs, sdsRef{s.GetName(), pcs.GetPath(), pcs.GetWatchedDirectory().GetPath()})
	}
	vs := ctc.GetCombinedValidationContext().GetValidationContextSdsSecretConfig()
	refs = append(refs, sdsRef{vs.GetName(), vs.GetSdsConfig().GetPathConfigSource().GetPath(),
		vs.GetSdsConfig().GetPathConfigSource().GetWatchedDirectory().GetPath()})
	if len(refs) != 2 {
		t.Fatalf("want the client certificate and the CA by SDS, have %+v", refs)
	}
	var clientSecret string
	var files []string
	for _, r := range refs {
		scm, skey := mountedConfigMapFile(t, o, gw.Namespace, gps, gc, r.path)
		var dr discoveryv3.DiscoveryResponse
		if err := loadEnvoyYAML([]byte(scm.Data[skey]), &dr, r.path); err != nil {
			t.Fatal(err)
		}
		if len(dr.GetResources()) != 1 {
			t.Fatalf("%s: want one resource", r.path)
		}
		var sec tlsv3.Secret
		unpack(t, dr.GetResources()[0], &sec)
		if sec.GetName() != r.name {
			t.Errorf("%s holds secret %q, the cluster asks for %q", r.path, sec.GetName(), r.name)
		}
		var named []string
		if tc := sec.GetTlsCertificate(); tc != nil {
			named = append(named, tc.GetCertificateChain().GetFilename(), tc.GetPrivateKey().GetFilename())
		}
		if vc := sec.GetValidationContext(); vc != nil {
			named = append(named, vc.GetTrustedCa().GetFilename())
		}
		files = append(files, named...)
		for _, f := range named {
			s, d := secretMount(t, gps, gc, f)
			if clientSecret != "" && s != clientSecret {
				t.Errorf("Envoy's TLS files come from two Secrets")
			}
			clientSecret = s
			if r.watched != d {
				t.Errorf("%s: Envoy watches %s, the files are under %s: renewals would not be seen", r.path, r.watched, d)
			}
		}
	}
	if len(files) != 3 {
		t.Fatalf("the SDS files name %v, want a certificate, a key and a CA", files)
	}
	client := find(gw.Namespace, clientSecret)
	if issuerOf(client) != serverIssuer {
		t.Error("Envoy's client certificate and the agent's come from different issuers: the agent would not trust it")
	}
	if !slices.Contains(client.Spec.Usages, "client auth") {
		t.Errorf("Envoy's certificate usages %v: want client auth", client.Spec.Usages)
	}
	if gps.SecurityContext == nil || gps.SecurityContext.FSGroup == nil {
		t.Error("Envoy's pod has no fsGroup: it could not read its client certificate (mode 0440)")
	}
}

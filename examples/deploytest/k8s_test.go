package deploytest

import (
	"os"
	"testing"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

// TestK8sCertificates parses examples/k8s/certificates.yaml into cert-manager's own types
// (examples/k8s_test.go checks how the objects fit the workloads, with the fields it uses).
func TestK8sCertificates(t *testing.T) {
	b, err := os.ReadFile("../k8s/certificates.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for i, doc := range splitYAML(b) {
		var tm metav1.TypeMeta
		if err := sigsyaml.Unmarshal(doc, &tm); err != nil {
			t.Fatal(err)
		}
		var v any
		switch tm.APIVersion + " " + tm.Kind {
		case "cert-manager.io/v1 Certificate":
			v = &cmv1.Certificate{}
		case "cert-manager.io/v1 ClusterIssuer":
			v = &cmv1.ClusterIssuer{}
		default:
			t.Fatalf("document %d: %s %s", i+1, tm.APIVersion, tm.Kind)
		}
		if err := sigsyaml.UnmarshalStrict(doc, v); err != nil {
			t.Fatalf("document %d (%s): %v", i+1, tm.Kind, err)
		}
		if c, ok := v.(*cmv1.Certificate); ok && c.Spec.Duration != nil && c.Spec.RenewBefore != nil &&
			c.Spec.RenewBefore.Duration >= c.Spec.Duration.Duration {
			t.Errorf("Certificate %s renews before it is issued", c.Name)
		}
		kinds[tm.Kind]++
	}
	if kinds["Certificate"] != 3 || kinds["ClusterIssuer"] != 2 {
		t.Fatalf("objects %v", kinds)
	}
}

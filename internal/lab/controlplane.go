package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/bulkhead-dev/bulkhead/config/admission"
	"github.com/bulkhead-dev/bulkhead/config/crd"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// ServiceCIDR is the range of Service ClusterIPs.
const ServiceCIDR = "10.96.0.0/16"

// EmbeddedCRDs decodes the CRDs compiled into the binary.
func EmbeddedCRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, fsys := range []fs.FS{crd.Bases, crd.Upstream} {
		err := fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := fs.ReadFile(fsys, path)
			if err != nil {
				return err
			}
			c := &apiextensionsv1.CustomResourceDefinition{}
			if err := yaml.UnmarshalStrict(b, c); err != nil {
				return fmt.Errorf("decoding embedded CRD %s: %w", path, err)
			}
			out = append(out, c)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no CRDs embedded")
	}
	return out, nil
}

// ControlPlaneAssetsMissing returns a message naming what is missing from
// the control-plane binary cache, or "".
func ControlPlaneAssetsMissing() string {
	dir := testenv.AssetsDir()
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.Mode()&0o111 == 0 {
			return fmt.Sprintf("%s not found in %s", b, dir)
		}
	}
	return ""
}

// ServeControlPlane runs the control-plane daemon: kube-apiserver and etcd
// from testenv.AssetsDir() started the way envtest starts them, with the
// embedded CRDs installed. It writes the admin kubeconfig to
// DIR/kubeconfig and the PIDs of its children to
// DIR/controlplane.children.json, and serves until ctx ends. Set TMPDIR
// (the lab sets DIR/tmp) to keep etcd's data inside the state directory.
func ServeControlPlane(ctx context.Context, dir string) error {
	if m := ControlPlaneAssetsMissing(); m != "" {
		return fmt.Errorf("control plane: %s; run hack/controlplane.sh", m)
	}
	crds, err := EmbeddedCRDs()
	if err != nil {
		return err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory:    testenv.AssetsDir(),
		CRDInstallOptions:        envtest.CRDInstallOptions{CRDs: crds},
		ControlPlaneStartTimeout: 60 * time.Second,
		ControlPlaneStopTimeout:  20 * time.Second,
		Scheme:                   testenv.Scheme(),
	}
	// Service ClusterIPs come from the lab's addressing plan. The service
	// account issuer and signing key envtest configures make TokenRequest
	// work; node-bound tokens need nothing more.
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", ServiceCIDR)
	if _, err := env.Start(); err != nil {
		return fmt.Errorf("starting control plane: %w", err)
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping control plane:", err)
		}
		_ = os.Remove(Layout{dir}.Kubeconfig())
	}()
	if err := installAdmissionPolicies(ctx, env.Config); err != nil {
		return err
	}
	children := childrenOf(os.Getpid())
	b, _ := json.Marshal(children)
	if err := writeFileAtomic(Layout{dir}.ControlPlaneChildren(), b, 0o600); err != nil {
		return err
	}
	if err := writeFileAtomic(Layout{dir}.Kubeconfig(), env.KubeConfig, 0o600); err != nil {
		return err
	}
	fmt.Printf("control plane: serving at %s (%d child processes)\n", env.Config.Host, len(children))
	<-ctx.Done()
	return nil
}

// installAdmissionPolicies creates the policies of config/admission (the
// Quarantine audit trail), as config/default installs them in a cluster.
func installAdmissionPolicies(ctx context.Context, cfg *rest.Config) error {
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return fmt.Errorf("admission policies: client: %w", err)
	}
	return admission.Install(ctx, c)
}

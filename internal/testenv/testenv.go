package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr"

	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	kruntime "k8s.io/apimachinery/pkg/runtime"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
)

// K8sVersion is the control-plane version hack/controlplane.sh builds.
const K8sVersion = "v1.37.2"

// RepoRoot returns the repository's root directory: BULKHEAD_REPO if set,
// else the nearest parent of the working directory, then of the
// executable, whose go.mod declares Bulkhead's module. Builds use
// -trimpath, so source file paths cannot be used. It returns "" when no
// checkout is found.
func RepoRoot() string {
	if d := os.Getenv("BULKHEAD_REPO"); d != "" {
		return d
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, dir := range starts {
		for d := dir; ; d = filepath.Dir(d) {
			if data, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil &&
				strings.HasPrefix(string(data), "module "+modulePath+"\n") {
				return d
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return ""
}

const modulePath = "github.com/bulkhead-dev/bulkhead"

// AssetsDir returns the directory holding kube-apiserver and etcd:
// KUBEBUILDER_ASSETS if set, else the cache hack/controlplane.sh fills.
func AssetsDir() string {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "bulkhead", "controlplane", K8sVersion)
}

// InCI reports whether skips must become failures: CI=true as root.
func InCI() bool { return os.Getenv("CI") == "true" && os.Geteuid() == 0 }

// SkipOrFail skips the test with reason, or fails it under CI=true as root,
// where every tier must really run.
func SkipOrFail(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("cannot run under CI=true as root: %s", reason)
	}
	t.Skip(reason)
}

// RequireRoot skips (or fails in CI) unless the test runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "needs root for network namespaces and netfilter")
	}
}

// Scheme returns a scheme with the built-in types and Bulkhead's API.
func Scheme() *kruntime.Scheme {
	s := kruntime.NewScheme()
	if err := scheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// Codecs returns serializers for Scheme().
func Codecs() serializer.CodecFactory { return serializer.NewCodecFactory(Scheme()) }

// Env is a running control plane.
type Env struct {
	Config *rest.Config
	Client client.Client
	env    *envtest.Environment
}

// Start brings up kube-apiserver and etcd with the CRDs from
// config/crd/bases installed, and stops them when the test ends. It skips
// (or fails in CI) when the binaries are missing, naming the command that
// builds them.
func Start(t testing.TB) *Env {
	t.Helper()
	ctrllog.SetLogger(logr.Discard())
	dir := AssetsDir()
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := exec.LookPath(filepath.Join(dir, b)); err != nil {
			SkipOrFail(t, "control-plane binary "+b+" not found in "+dir+"; run hack/controlplane.sh")
		}
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: dir,
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases"), filepath.Join(RepoRoot(), "config", "crd", "upstream")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("stopping envtest: %v", err)
		}
	})
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatalf("creating client: %v", err)
	}
	return &Env{Config: cfg, Client: c, env: env}
}

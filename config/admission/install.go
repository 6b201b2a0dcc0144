package admission

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// kustomization is the part of kustomization.yaml that names the files.
type kustomization struct {
	Resources []string `json:"resources"`
}

// Objects decodes the policies and bindings of the files that
// kustomization.yaml lists, in its order, so that Install creates what
// `kustomize build config/admission` renders. An object without apiVersion,
// kind or name is an error naming its file and position.
func Objects() ([]*unstructured.Unstructured, error) {
	b, err := Policies.ReadFile("kustomization.yaml")
	if err != nil {
		return nil, fmt.Errorf("admission policies: %w", err)
	}
	var k kustomization
	if err := yaml.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("admission policies: decoding kustomization.yaml: %w", err)
	}
	if len(k.Resources) == 0 {
		return nil, errors.New("admission policies: kustomization.yaml lists no resources")
	}
	var out []*unstructured.Unstructured
	for _, name := range k.Resources {
		b, err := Policies.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("admission policies: kustomization.yaml resource %s: %w", name, err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
		for doc := 1; ; doc++ {
			u := &unstructured.Unstructured{}
			if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return nil, fmt.Errorf("admission policies: decoding %s document %d: %w", name, doc, err)
			}
			if len(u.Object) == 0 {
				continue
			}
			if u.GetAPIVersion() == "" || u.GetKind() == "" || u.GetName() == "" {
				return nil, fmt.Errorf("admission policies: %s document %d: apiVersion, kind and metadata.name are required", name, doc)
			}
			out = append(out, u)
		}
	}
	return out, nil
}

// Install creates the objects of Objects through c, as config/default
// installs them in a cluster. It is idempotent: an object that already
// exists is left as it is (not updated). The first object the API server
// refuses stops it, with an error naming the object's kind and name.
// The policies take effect asynchronously after creation.
func Install(ctx context.Context, c client.Client) error {
	objs, err := Objects()
	if err != nil {
		return err
	}
	for _, u := range objs {
		if err := c.Create(ctx, u); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("admission policies: creating %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
	return nil
}

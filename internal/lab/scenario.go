package lab

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// Scenario is what the lab reads from the multi-document YAML (or JSON)
// files that `bulkhead analyze -f` reads. Namespaces and Pods build the
// lab; the rest (NetworkPolicies, Zones, ZonePolicies, Quarantines, and
// any other kind the API server knows) is applied by `lab apply`.
type Scenario struct {
	Namespaces []NamespacePlan
	Pods       []PodInput
	Others     []SourcedObject
}

// SourcedObject is an object and where it was read from.
type SourcedObject struct {
	Where string // "file: document N"
	Obj   *unstructured.Unstructured
}

// LoadScenario reads files and directories (recursively: *.yaml, *.yml,
// *.json, in lexical order). Errors name the file, the document and the
// field; every problem is reported at once.
func LoadScenario(paths ...string) (*Scenario, error) {
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("reading scenario: %w", err)
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		var found []string
		err = filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch strings.ToLower(filepath.Ext(path)) {
			case ".yaml", ".yml", ".json":
				if !d.IsDir() {
					found = append(found, path)
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("reading scenario directory %s: %w", p, err)
		}
		sort.Strings(found)
		files = append(files, found...)
	}
	s := &Scenario{}
	var errs []error
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("reading scenario: %w", err))
			continue
		}
		if err := s.add(f, data); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// ParseScenario parses one file's content; name is used in errors.
func ParseScenario(name string, data []byte) (*Scenario, error) {
	s := &Scenario{}
	if err := s.add(name, data); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Scenario) add(file string, data []byte) error {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var errs []error
	for doc := 1; ; doc++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("%s: document %d: %w", file, doc, err))...)
		}
		if len(bytes.TrimSpace(stripYAMLComments(raw))) == 0 {
			doc--
			continue
		}
		where := fmt.Sprintf("%s: document %d", file, doc)
		js, err := yaml.YAMLToJSON(raw)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(js); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		if u.IsList() {
			l, err := u.ToList()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
				continue
			}
			for i := range l.Items {
				if err := s.addObject(fmt.Sprintf("%s item %d", where, i+1), &l.Items[i]); err != nil {
					errs = append(errs, err)
				}
			}
			continue
		}
		if err := s.addObject(where, u); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Scenario) addObject(where string, u *unstructured.Unstructured) error {
	gvk := u.GroupVersionKind()
	if gvk.Kind == "" {
		return fmt.Errorf("%s: kind: missing", where)
	}
	if u.GetName() == "" {
		return fmt.Errorf("%s (%s): metadata.name: missing", where, gvk.Kind)
	}
	where = fmt.Sprintf("%s (%s %s)", where, gvk.Kind, objName(u))
	switch {
	case gvk.Group == "" && gvk.Kind == "Namespace":
		var ns corev1.Namespace
		if err := fromUnstructured(u, &ns); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		s.Namespaces = append(s.Namespaces, NamespacePlan{Name: ns.Name, Labels: ns.Labels})
	case gvk.Group == "" && gvk.Kind == "Pod":
		var pod corev1.Pod
		if err := fromUnstructured(u, &pod); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if pod.Namespace == "" {
			pod.Namespace = "default"
		}
		if len(pod.Spec.Containers) == 0 {
			// The API server needs a container; the lab runs none.
			pod.Spec.Containers = []corev1.Container{{Name: "main", Image: ProbeImage}}
		}
		for i, c := range pod.Spec.Containers {
			for j, p := range c.Ports {
				if p.ContainerPort < 1 || p.ContainerPort > 65535 {
					return fmt.Errorf("%s: spec.containers[%d].ports[%d].containerPort: %d is out of range 1..65535", where, i, j, p.ContainerPort)
				}
				switch p.Protocol {
				case "", corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
				default:
					return fmt.Errorf("%s: spec.containers[%d].ports[%d].protocol: %q is not TCP, UDP or SCTP", where, i, j, p.Protocol)
				}
			}
		}
		s.Pods = append(s.Pods, PodInput{Namespace: pod.Namespace, Name: pod.Name, Labels: pod.Labels, Spec: pod.Spec})
	default:
		s.Others = append(s.Others, SourcedObject{Where: where, Obj: u})
	}
	return nil
}

func objName(u *unstructured.Unstructured) string {
	if ns := u.GetNamespace(); ns != "" {
		return ns + "/" + u.GetName()
	}
	return u.GetName()
}

var strictCodecs = serializer.NewCodecFactory(testenv.Scheme(), serializer.EnableStrict)

// fromUnstructured decodes strictly: unknown and duplicate fields are
// errors that name the field path.
func fromUnstructured(u *unstructured.Unstructured, into runtime.Object) error {
	js, err := u.MarshalJSON()
	if err != nil {
		return err
	}
	if _, _, err := strictCodecs.UniversalDeserializer().Decode(js, nil, into); err != nil {
		return fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "strict decoding error: "))
	}
	return nil
}

func stripYAMLComments(b []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(b, []byte("\n")) {
		t := bytes.TrimSpace(line)
		if len(t) == 0 || t[0] == '#' {
			continue
		}
		out = append(out, line...)
		out = append(out, '\n')
	}
	return out
}

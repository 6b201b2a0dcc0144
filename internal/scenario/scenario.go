package scenario

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	anpv1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	cnpv1beta1 "sigs.k8s.io/network-policy-api/apis/v1beta1"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// ErrInvalid marks errors caused by bad input (files or objects).
var ErrInvalid = errors.New("invalid input")

// InputError is bad input at a place in a file.
type InputError struct {
	// Where is "file: document N (Kind ns/name)" or a shorter prefix.
	Where string
	// Detail is the field and the message.
	Detail string
}

func (e *InputError) Error() string {
	if e.Where == "" {
		return e.Detail
	}
	return e.Where + ": " + e.Detail
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *InputError) Is(target error) bool { return target == ErrInvalid }

// Source tells where an object came from.
type Source struct {
	File string
	// Doc is the 1-based document index in the file; Item is the 1-based
	// index inside a List, 0 otherwise.
	Doc, Item int
}

func (s Source) String() string {
	if s.File == "" {
		return ""
	}
	out := fmt.Sprintf("%s: document %d", s.File, s.Doc)
	if s.Item > 0 {
		out += fmt.Sprintf(" item %d", s.Item)
	}
	return out
}

// Object is one loaded object.
type Object struct {
	Source Source
	Kind   string
	// Obj is *corev1.Namespace, *corev1.Pod, *networkingv1.NetworkPolicy,
	// *v1alpha1.Zone, *v1alpha1.ZonePolicy, *v1alpha1.Quarantine,
	// *corev1.Node, or an upstream ClusterNetworkPolicy (v1beta1 or
	// v1alpha2), AdminNetworkPolicy or BaselineAdminNetworkPolicy
	// (v1alpha1).
	Obj any
}

// Scenario is a set of loaded objects, in input order.
type Scenario struct {
	Objects []Object
	// Warnings are non-fatal notes, e.g. skipped kinds.
	Warnings []string
}

// LoadPaths loads files and directories (recursively: *.yaml, *.yml,
// *.json), in lexical order within a directory.
func LoadPaths(paths []string) (*Scenario, error) {
	s := &Scenario{}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, &InputError{Detail: fmt.Sprintf("reading %s: %v", p, err)}
		}
		var files []string
		if st.IsDir() {
			err := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if d.IsDir() {
					return nil
				}
				switch strings.ToLower(filepath.Ext(path)) {
				case ".yaml", ".yml", ".json":
					files = append(files, path)
				}
				return nil
			})
			if err != nil {
				return nil, &InputError{Detail: fmt.Sprintf("reading %s: %v", p, err)}
			}
			sort.Strings(files)
		} else {
			files = []string{p}
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, &InputError{Detail: fmt.Sprintf("reading %s: %v", f, err)}
			}
			if err := s.add(f, data); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// Load parses one file's content; name is used in errors.
func Load(name string, data []byte) (*Scenario, error) {
	s := &Scenario{}
	if err := s.add(name, data); err != nil {
		return nil, err
	}
	return s, nil
}

type typeMeta struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Items      []json.RawMessage `json:"items"`
}

func (s *Scenario) add(file string, data []byte) error {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	doc := 0
	for {
		raw, err := r.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return &InputError{Where: file, Detail: fmt.Sprintf("reading YAML: %v", err)}
		}
		if len(bytes.TrimSpace(stripComments(raw))) == 0 {
			continue
		}
		doc++
		js, err := yaml.YAMLToJSON(raw)
		if err != nil {
			return &InputError{Where: fmt.Sprintf("%s: document %d", file, doc), Detail: fmt.Sprintf("parsing YAML: %v", err)}
		}
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			continue
		}
		if err := s.addJSON(Source{File: file, Doc: doc}, js); err != nil {
			return err
		}
	}
}

func stripComments(b []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(b, []byte("\n")) {
		t := bytes.TrimSpace(line)
		if len(t) == 0 || t[0] == '#' || bytes.Equal(t, []byte("---")) {
			continue
		}
		out = append(out, line...)
		out = append(out, '\n')
	}
	return out
}

func (s *Scenario) addJSON(src Source, js []byte) error {
	var tm typeMeta
	if err := json.Unmarshal(js, &tm); err != nil {
		return &InputError{Where: src.String(), Detail: fmt.Sprintf("decoding: %v", err)}
	}
	where := func() string {
		n := tm.Metadata.Name
		if tm.Metadata.Namespace != "" {
			n = tm.Metadata.Namespace + "/" + n
		}
		return fmt.Sprintf("%s (%s %s)", src, tm.Kind, n)
	}
	if tm.Kind == "" {
		return &InputError{Where: src.String(), Detail: "kind: missing"}
	}
	if tm.Kind == "List" || strings.HasSuffix(tm.Kind, "List") && tm.Items != nil {
		for i, it := range tm.Items {
			if err := s.addJSON(Source{File: src.File, Doc: src.Doc, Item: i + 1}, it); err != nil {
				return err
			}
		}
		return nil
	}
	var obj any
	switch tm.Kind {
	case "Namespace":
		obj = &corev1.Namespace{}
	case "Pod":
		obj = &corev1.Pod{}
	case "NetworkPolicy":
		obj = &networkingv1.NetworkPolicy{}
	case "Zone":
		obj = &v1alpha1.Zone{}
	case "ZonePolicy":
		obj = &v1alpha1.ZonePolicy{}
	case "Quarantine":
		obj = &v1alpha1.Quarantine{}
	case "Node":
		obj = &corev1.Node{}
	case policy.KindAdminNetworkPolicy:
		obj = &anpv1alpha1.AdminNetworkPolicy{}
	case policy.KindBaselineAdminNetworkPolicy:
		obj = &anpv1alpha1.BaselineAdminNetworkPolicy{}
	case policy.KindClusterNetworkPolicy:
		switch tm.APIVersion {
		case "policy.networking.k8s.io/v1alpha2":
			obj = &cnpv1alpha2.ClusterNetworkPolicy{}
		case "policy.networking.k8s.io/v1beta1", "":
			obj = &cnpv1beta1.ClusterNetworkPolicy{}
		default:
			return &InputError{Where: where(), Detail: fmt.Sprintf("apiVersion: unsupported %q for ClusterNetworkPolicy (want policy.networking.k8s.io/v1beta1 or v1alpha2)", tm.APIVersion)}
		}
	default:
		s.Warnings = append(s.Warnings, fmt.Sprintf("%s: skipping unsupported kind %s", where(), tm.Kind))
		return nil
	}
	if err := yaml.UnmarshalStrict(js, obj); err != nil {
		return &InputError{Where: where(), Detail: cleanJSONErr(err)}
	}
	if tm.Metadata.Name == "" {
		return &InputError{Where: where(), Detail: "metadata.name: missing"}
	}
	s.Objects = append(s.Objects, Object{Source: src, Kind: tm.Kind, Obj: obj})
	return nil
}

func cleanJSONErr(err error) string {
	m := err.Error()
	m = strings.TrimPrefix(m, "error unmarshaling JSON: ")
	m = strings.TrimPrefix(m, "while decoding JSON: ")
	return m
}

// Engine builds a policy engine from the scenario. Namespaces used but not
// declared are created implicitly.
func (s *Scenario) Engine() (*policy.Engine, error) {
	e := policy.New()
	declared := map[string]bool{}
	used := map[string]bool{}
	for _, o := range s.Objects {
		if ns, ok := o.Obj.(*corev1.Namespace); ok {
			declared[ns.Name] = true
		}
	}
	nsOf := func(m *metav1.ObjectMeta) {
		if m.Namespace == "" {
			m.Namespace = "default"
		}
		used[m.Namespace] = true
	}
	for _, o := range s.Objects {
		switch x := o.Obj.(type) {
		case *corev1.Pod:
			nsOf(&x.ObjectMeta)
		case *networkingv1.NetworkPolicy:
			nsOf(&x.ObjectMeta)
		case *v1alpha1.Quarantine:
			nsOf(&x.ObjectMeta)
		}
	}
	var implicit []string
	for ns := range used {
		if !declared[ns] {
			implicit = append(implicit, ns)
		}
	}
	sort.Strings(implicit)
	for _, ns := range implicit {
		e.SetNamespace(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	seen := map[string]Source{}
	for _, o := range s.Objects {
		var err error
		var key string
		switch x := o.Obj.(type) {
		case *corev1.Namespace:
			key = "Namespace/" + x.Name
			e.SetNamespace(x)
		case *corev1.Pod:
			key = "Pod/" + x.Namespace + "/" + x.Name
			if _, perr := policy.PodIPs(x); perr != nil {
				err = perr
			} else {
				e.SetPod(x)
			}
		case *networkingv1.NetworkPolicy:
			key = "NetworkPolicy/" + x.Namespace + "/" + x.Name
			err = e.SetNetworkPolicy(x)
		case *v1alpha1.Zone:
			key = "Zone/" + x.Name
			err = e.SetZone(x)
		case *v1alpha1.ZonePolicy:
			key = "ZonePolicy/" + x.Name
			err = e.SetZonePolicy(x)
		case *v1alpha1.Quarantine:
			key = "Quarantine/" + x.Namespace + "/" + x.Name
			err = e.SetQuarantine(x)
		case *corev1.Node:
			key = "Node/" + x.Name
			e.SetNode(x)
		case *cnpv1beta1.ClusterNetworkPolicy:
			key = "ClusterNetworkPolicy/" + x.Name
			err = e.SetClusterNetworkPolicy(x)
		case *cnpv1alpha2.ClusterNetworkPolicy:
			key = "ClusterNetworkPolicy/" + x.Name
			err = e.SetClusterNetworkPolicyV1alpha2(x)
		case *anpv1alpha1.AdminNetworkPolicy:
			key = "AdminNetworkPolicy/" + x.Name
			err = e.SetAdminNetworkPolicy(x)
		case *anpv1alpha1.BaselineAdminNetworkPolicy:
			key = "BaselineAdminNetworkPolicy/" + x.Name
			err = e.SetBaselineAdminNetworkPolicy(x)
		}
		if err != nil {
			var fe *policy.FieldError
			if errors.As(err, &fe) {
				where := fe.Object()
				if src := o.Source.String(); src != "" {
					where = src + " (" + fe.Object() + ")"
				}
				return nil, &InputError{Where: where, Detail: fe.Detail()}
			}
			return nil, &InputError{Where: o.Source.String(), Detail: err.Error()}
		}
		if prev, dup := seen[key]; dup && o.Source.File != "" {
			s.Warnings = append(s.Warnings, fmt.Sprintf("%s: %s also defined at %s; the later one wins", o.Source, key, prev))
		}
		seen[key] = o.Source
	}
	return e, nil
}

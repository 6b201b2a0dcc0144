package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const sampleScenario = `
# comment-only documents are skipped
---
apiVersion: v1
kind: Namespace
metadata:
  name: db
  labels: {tier: pci}
---
apiVersion: v1
kind: Pod
metadata: {name: pg, namespace: db, labels: {app: pg}}
spec:
  nodeName: ignored
  containers:
  - name: pg
    ports: [{containerPort: 5432}]
status:
  podIP: 192.0.2.1
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: web}
  spec:
    containers: [{name: c, ports: [{containerPort: 80, protocol: TCP}]}]
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: deny, namespace: db}
  spec: {podSelector: {}}
---
apiVersion: segmentation.bulkhead.dev/v1alpha1
kind: Zone
metadata: {name: pci}
spec: {pods: {namespaceSelector: {matchLabels: {tier: pci}}}}
`

func TestParseScenario(t *testing.T) {
	s, err := ParseScenario("s.yaml", []byte(sampleScenario))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]NamespacePlan{{Name: "db", Labels: map[string]string{"tier": "pci"}}}, s.Namespaces); d != "" {
		t.Errorf("namespaces (-want +got):\n%s", d)
	}
	var pods []string
	for _, p := range s.Pods {
		pods = append(pods, p.Namespace+"/"+p.Name)
	}
	if d := cmp.Diff([]string{"db/pg", "default/web"}, pods); d != "" {
		t.Errorf("pods, with default namespace filled in (-want +got):\n%s", d)
	}
	var others []string
	for _, o := range s.Others {
		others = append(others, o.Where)
	}
	want := []string{"s.yaml: document 3 item 2 (NetworkPolicy db/deny)", "s.yaml: document 4 (Zone pci)"}
	if d := cmp.Diff(want, others); d != "" {
		t.Errorf("other objects keep where they came from (-want +got):\n%s", d)
	}
}

func TestParseScenarioErrorsNameFileDocumentAndField(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{"a port out of range", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: [{containerPort: 70000}]}]}\n",
			"bad.yaml: document 1 (Pod p): spec.containers[0].ports[0].containerPort: 70000 is out of range"},
		{"an unknown protocol", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: [{containerPort: 7, protocol: ICMP}]}]}\n",
			`spec.containers[0].ports[0].protocol: "ICMP" is not TCP, UDP or SCTP`},
		{"an unknown field", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containerz: []}\n",
			`bad.yaml: document 1 (Pod p): unknown field "spec.containerz"`},
		{"a missing kind", "apiVersion: v1\nmetadata: {name: p}\n", "bad.yaml: document 1"},
		{"a missing name", "apiVersion: v1\nkind: Namespace\nmetadata: {}\n", "bad.yaml: document 1 (Namespace): metadata.name: missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseScenario("bad.yaml", []byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v\nwant one containing %q", err, tt.want)
			}
		})
	}
}

func TestParseScenarioGivesAContainerlessPodOneContainer(t *testing.T) {
	s, err := ParseScenario("s.yaml", []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Pods) != 1 || len(s.Pods[0].Spec.Containers) != 1 || s.Pods[0].Spec.Containers[0].Image != ProbeImage {
		t.Errorf("pods %+v, want one pod with one placeholder container", s.Pods)
	}
}

func TestLoadScenarioReadsDirectoriesInOrder(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"b.yaml":    "apiVersion: v1\nkind: Pod\nmetadata: {name: second, namespace: x}\nspec: {containers: [{name: c}]}\n",
		"a/a.yml":   "apiVersion: v1\nkind: Pod\nmetadata: {name: first, namespace: x}\nspec: {containers: [{name: c}]}\n",
		"notes.txt": "not yaml",
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, err := LoadScenario(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range s.Pods {
		got = append(got, p.Name)
	}
	if d := cmp.Diff([]string{"first", "second"}, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if _, err := LoadScenario(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("a missing file was accepted")
	}
}

package scenario_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/scenario"
)

func TestLoadDirectoryTree(t *testing.T) {
	s, err := scenario.LoadPaths([]string{"testdata/tree"})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range s.Objects {
		kinds = append(kinds, o.Kind+"@"+o.Source.String())
	}
	want := []string{
		"Pod@testdata/tree/a.yaml: document 1",
		"Pod@testdata/tree/sub/b.json: document 1 item 1",
		"NetworkPolicy@testdata/tree/sub/b.json: document 1 item 2",
	}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"testdata/tree/a.yaml: document 2 (ConfigMap shop/cm): skipping unsupported kind ConfigMap"}, s.Warnings); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
	e, err := s.Engine()
	if err != nil {
		t.Fatal(err)
	}
	// shop is not declared: it is created with kubernetes.io/metadata.name,
	// so the policy's namespaceSelector admits web.
	d := e.Evaluate(policy.Flow{Src: policy.PodPeer("shop", "web"), Dst: policy.PodPeer("shop", "db"), Protocol: ir.TCP, Port: 5432})
	if !d.Allowed || d.Rule != "NetworkPolicy/shop/db/ingress/0" {
		t.Errorf("implicit namespace label not applied: %+v", d)
	}
}

func TestLoadErrorsNameFileDocumentObjectAndField(t *testing.T) {
	tests := []struct {
		name, data, want string
	}{
		{"an invalid CIDR names the field", `
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: default}
spec:
  podSelector: {}
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/33]}}]
`, `f.yaml: document 2 (NetworkPolicy default/web): spec.egress[0].to[0].ipBlock.except[0]: invalid CIDR "10.1.0.0/33"`},
		{"an unknown field is an error", `
apiVersion: v1
kind: Pod
metadata: {name: p}
spec: {containerz: []}
`, `f.yaml: document 1 (Pod p): json: unknown field "containerz"`},
		{"a document without kind is an error", "metadata: {name: x}\n", "f.yaml: document 1: kind: missing"},
		{"an invalid pod IP is an error", `
kind: Pod
metadata: {name: p, namespace: ns1}
status: {podIP: 10.0.0.300}
`, `f.yaml: document 1 (Pod ns1/p): status.podIP: invalid IP "10.0.0.300"`},
		{"a List item is located", `
kind: List
items:
- kind: Zone
  metadata: {name: ok}
  spec: {pods: {}}
- kind: Zone
  metadata: {name: world}
  spec: {pods: {}}
`, `f.yaml: document 1 item 2 (Zone world): metadata.name: "world" is a reserved peer name`},
		{"bad YAML is an error", "kind: Pod\nmetadata: [\n", "f.yaml: document 1: parsing YAML"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := scenario.Load("f.yaml", []byte(tt.data))
			if err == nil {
				_, err = s.Engine()
			}
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, scenario.ErrInvalid) {
				t.Errorf("error %v is not ErrInvalid", err)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error\n  %v\nwant prefix\n  %s", err, tt.want)
			}
		})
	}
}

package policy_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*.golden from the engine's output")

// TestGoldenIR pins the compiled per-node IR of a few reference scenarios,
// the contract with the dataplane backends. Regenerate with
// `go test ./internal/policy -run TestGoldenIR -update` and review the diff.
func TestGoldenIR(t *testing.T) {
	for _, name := range []string{
		"default-deny-ingress",
		"named-port-egress-resolves-per-destination",
		"zone-policy-accept",
		"zone-audit-mode",
		"zone-cidr-and-world",
		"quarantine-allow-list-is-final",
		"quarantine-allow-dns",
	} {
		t.Run(name, func(t *testing.T) {
			e, _ := loadScenario(t, name)
			nodes := map[string]any{}
			for _, n := range e.Nodes() {
				nodes[n] = e.NodePolicy(n)
			}
			got, err := json.MarshalIndent(nodes, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", "golden", name+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(want, got) {
				t.Errorf("IR of %s differs from %s; rerun with -update and review the diff.\n--- got:\n%s", name, path, got)
			}
		})
	}
}

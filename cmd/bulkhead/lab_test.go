package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLabExitCodes(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "no-lab")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\nspec: {containers: [{name: c, ports: [{containerPort: 0}]}]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		code    int
		message string
	}{
		{"an unknown probe output format is a usage error", []string{"lab", "probe", "--state-dir", empty, "-o", "yaml"}, exitUsage, `-o: "yaml"`},
		{"a bad probe is a usage error", []string{"lab", "probe", "--state-dir", empty, "--probes", "ICMP/1"}, exitUsage, `probe "ICMP/1"`},
		{"an unknown backend is a usage error", []string{"lab", "up", "--state-dir", empty, "--backend", "iptables"}, exitUsage, `--backend: "iptables"`},
		{"zero nodes are a usage error", []string{"lab", "up", "--state-dir", empty, "--nodes", "0"}, exitUsage, "--nodes: 0"},
		{"a relative state dir is a usage error", []string{"lab", "up", "--state-dir", "rel"}, exitUsage, "absolute path"},
		{"an internet host outside 10.251.0.0/24 is a usage error", []string{"lab", "up", "--state-dir", empty, "--internet", "10.244.1.9"}, exitUsage, "--internet: 10.244.1.9 is not a host address in 10.251.0.0/24"},
		{"an internet host that is no address is a usage error", []string{"lab", "up", "--state-dir", empty, "--internet", "example.com"}, exitUsage, "--internet:"},
		{"a bad scenario names file, document and field", []string{"lab", "up", "--state-dir", empty, "--scenario", bad}, exitUsage,
			bad + ": document 1 (Pod a/p): spec.containers[0].ports[0].containerPort: 0 is out of range"},
		{"apply without files is a usage error", []string{"lab", "apply", "--state-dir", empty}, exitUsage, "-f: at least one"},
		{"apply of a bad file is a usage error", []string{"lab", "apply", "--state-dir", empty, "-f", bad}, exitUsage, "containerPort"},
		{"a bad lab name is a usage error", []string{"lab", "down", "--state-dir", empty, "--name", "Bad-Name"}, exitUsage, "lab name"},
		{"status without a lab is a runtime error", []string{"lab", "status", "--state-dir", empty}, exitError, "no lab in " + empty},
		{"probe without a lab is a runtime error", []string{"lab", "probe", "--state-dir", empty}, exitError, "reading lab state"},
		{"kubeconfig without a lab is a runtime error", []string{"lab", "kubeconfig", "--state-dir", empty}, exitError, "is the lab up?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runCLI(t, tt.args...)
			code := exitOK
			if err != nil {
				code = exitError
				var ue usageError
				if asUsage(err, &ue) {
					code = exitUsage
				}
			}
			if code != tt.code {
				t.Fatalf("exit code %d, want %d (error: %v)", code, tt.code, err)
			}
			if tt.message != "" && (err == nil || !strings.Contains(err.Error(), tt.message)) {
				t.Errorf("error %v lacks %q", err, tt.message)
			}
		})
	}
}

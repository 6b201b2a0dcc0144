package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err = root.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

type cell struct {
	Src      string `json:"src"`
	Dst      string `json:"dst"`
	Protocol string `json:"protocol"`
	Port     int    `json:"port"`
	Allowed  bool   `json:"allowed"`
	Verdict  string `json:"verdict"`
	Rule     string `json:"rule"`
}

func TestAnalyzeJSON(t *testing.T) {
	out, _, err := runCLI(t, "analyze", "-f", "testdata/analyze/three-pods.yaml", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got []cell
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not a JSON array: %v\n%s", err, out)
	}
	// Written by hand: probes are the declared ports TCP/80 and TCP/5432,
	// sorted; db admits only web on its named port pg (5432).
	const iso = "NetworkPolicy/shop/db/isolation"
	want := []cell{
		{"other/client", "shop/db", "TCP", 80, false, "DENIED", iso},
		{"other/client", "shop/db", "TCP", 5432, false, "DENIED", iso},
		{"other/client", "shop/web", "TCP", 80, true, "ALLOWED", ""},
		{"other/client", "shop/web", "TCP", 5432, true, "ALLOWED", ""},
		{"shop/db", "other/client", "TCP", 80, true, "ALLOWED", ""},
		{"shop/db", "other/client", "TCP", 5432, true, "ALLOWED", ""},
		{"shop/db", "shop/web", "TCP", 80, true, "ALLOWED", ""},
		{"shop/db", "shop/web", "TCP", 5432, true, "ALLOWED", ""},
		{"shop/web", "other/client", "TCP", 80, true, "ALLOWED", ""},
		{"shop/web", "other/client", "TCP", 5432, true, "ALLOWED", ""},
		{"shop/web", "shop/db", "TCP", 80, false, "DENIED", iso},
		{"shop/web", "shop/db", "TCP", 5432, true, "ALLOWED", "NetworkPolicy/shop/db/ingress/0"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("analyze -o json (-want +got):\n%s", diff)
	}
}

func TestAnalyzeProbesFlagAndFormats(t *testing.T) {
	out, _, err := runCLI(t, "analyze", "-f", "testdata/analyze", "--probes", "UDP/53,TCP/5432", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got []cell
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3*2*2 {
		t.Fatalf("got %d cells, want 12", len(got))
	}
	if got[0].Protocol != "TCP" || got[1].Protocol != "UDP" {
		t.Errorf("cells not sorted by protocol: %+v %+v", got[0], got[1])
	}
	table, _, err := runCLI(t, "analyze", "-f", "testdata/analyze", "-o", "table")
	if err != nil {
		t.Fatal(err)
	}
	// row shop/web: to other/client ++, to shop/db -+ (TCP/80 denied, TCP/5432 allowed), self .
	if !strings.Contains(table, "shop/web     ++           -+") {
		t.Errorf("table lacks the shop/web row:\n%s", table)
	}
	dot, _, err := runCLI(t, "analyze", "-f", "testdata/analyze", "-o", "dot")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dot, `"shop/web" -> "shop/db" [label="TCP/5432"];`) || strings.Contains(dot, `"other/client" -> "shop/db"`) {
		t.Errorf("dot output wrong:\n%s", dot)
	}
}

func TestExplain(t *testing.T) {
	out, _, err := runCLI(t, "explain", "-f", "testdata/analyze/three-pods.yaml", "--from", "other/client", "--to", "shop/db", "--port", "TCP/5432")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"verdict: DENIED", "NetworkPolicy/shop/db/isolation", "networkpolicy (ingress)"} {
		if !strings.Contains(out, want) {
			t.Errorf("explain output lacks %q:\n%s", want, out)
		}
	}
	out, _, err = runCLI(t, "explain", "-f", "testdata/analyze/three-pods.yaml", "--from", "fd00:10:244:1::20", "--to", "10.244.1.10", "--port", "TCP/80")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "verdict: ALLOWED") {
		t.Errorf("explain by IP:\n%s", out)
	}
}

func TestAnalyzeExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: default}\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0/8}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		code    int
		message string
	}{
		{"valid input exits 0", []string{"analyze", "-f", "testdata/analyze"}, exitOK, ""},
		{"a bad CIDR names file, document, object and field", []string{"analyze", "-f", bad}, exitUsage,
			bad + `: document 1 (NetworkPolicy default/web): spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR "10.0.0/8"`},
		{"no input is a usage error", []string{"analyze"}, exitUsage, "exactly one of"},
		{"a bad probe is a usage error", []string{"analyze", "-f", "testdata/analyze", "--probes", "ICMP/1"}, exitUsage, "protocol must be"},
		{"a bad output format is a usage error", []string{"analyze", "-f", "testdata/analyze", "-o", "yaml"}, exitUsage, "invalid -o"},
		{"an unknown flag is a usage error", []string{"analyze", "--nope"}, exitUsage, "unknown flag"},
		{"explain of an unknown pod is a usage error", []string{"explain", "-f", "testdata/analyze", "--from", "a/b", "--to", "shop/db", "--port", "TCP/1"}, exitUsage, "unknown endpoint a/b"},
		{"an unreachable cluster is a runtime error", []string{"analyze", "--kubeconfig", filepath.Join(dir, "missing")}, exitError, "kubeconfig"},
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
				t.Fatalf("exit code %d, want %d (err %v)", code, tt.code, err)
			}
			if tt.message != "" && (err == nil || !strings.Contains(err.Error(), tt.message)) {
				t.Errorf("error %v, want it to contain %q", err, tt.message)
			}
		})
	}
}

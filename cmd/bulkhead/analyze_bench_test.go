package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/bulkhead-dev/bulkhead/internal/policy/synth"
)

// BenchmarkAnalyzeJSON: `bulkhead analyze -f DIR -o json` on 1,000 pods
// and 200 NetworkPolicies with 11 probes, output to /dev/null, including
// reading and parsing the YAML. Target: ≤ 5 s.
func BenchmarkAnalyzeJSON(b *testing.B) {
	c := synth.Generate(synth.Params{Nodes: 10, Namespaces: 10, Pods: 1000, Policies: 200, Seed: 3})
	dir := b.TempDir()
	write := func(name string, objs []any) {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		for _, o := range objs {
			y, err := yaml.Marshal(o)
			if err != nil {
				b.Fatal(err)
			}
			fmt.Fprintf(f, "---\n%s", y)
		}
	}
	var ns, pods, nps []any
	for _, n := range c.Namespaces {
		n.APIVersion, n.Kind = "v1", "Namespace"
		ns = append(ns, n)
	}
	for _, p := range c.Pods {
		p.APIVersion, p.Kind = "v1", "Pod"
		pods = append(pods, p)
	}
	for _, n := range c.NetworkPolicies {
		n.APIVersion, n.Kind = "networking.k8s.io/v1", "NetworkPolicy"
		nps = append(nps, n)
	}
	write("namespaces.yaml", ns)
	write("pods.yaml", pods)
	write("policies.yaml", nps)
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer devnull.Close()
	probes := "TCP/53,TCP/80,TCP/443,TCP/1000,TCP/1050,TCP/8080,TCP/8081,TCP/9090,UDP/53,UDP/1000,SCTP/9000"
	b.ReportAllocs()
	for b.Loop() {
		root := newRootCmd()
		root.SetOut(devnull)
		root.SetArgs([]string{"analyze", "-f", dir, "--probes", probes, "-o", "json"})
		if err := root.ExecuteContext(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(1000*999*11), "cells")
}

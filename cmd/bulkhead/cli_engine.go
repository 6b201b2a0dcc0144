package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/scenario"
)

// sourceFlags are the input flags shared by analyze and explain.
type sourceFlags struct {
	files      []string
	kubeconfig string
}

func (s *sourceFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringArrayVarP(&s.files, "filename", "f", nil, "YAML or JSON file or directory (recursive) with Namespaces, Pods, NetworkPolicies, Zones, ZonePolicies, Quarantines; repeatable")
	cmd.Flags().StringVar(&s.kubeconfig, "kubeconfig", "", "read the objects live from the cluster of this kubeconfig file")
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
}

// load builds the engine from files or a live cluster, printing warnings
// to w.
func (s *sourceFlags) load(ctx context.Context, w io.Writer) (*policy.Engine, error) {
	if (len(s.files) == 0) == (s.kubeconfig == "") {
		return nil, usageError{errors.New("exactly one of -f/--filename or --kubeconfig is required")}
	}
	var sc *scenario.Scenario
	var err error
	if len(s.files) > 0 {
		sc, err = scenario.LoadPaths(s.files)
	} else {
		sc, err = scenario.LoadLive(ctx, s.kubeconfig)
	}
	if err != nil {
		if errors.Is(err, scenario.ErrInvalid) {
			return nil, usageError{err}
		}
		return nil, err
	}
	e, err := sc.Engine()
	for _, warn := range sc.Warnings {
		fmt.Fprintln(w, "warning:", warn)
	}
	if err != nil {
		// bad objects are bad input, whether from files or a cluster
		return nil, usageError{err}
	}
	return e, nil
}

// parseProbe parses "TCP/80".
func parseProbe(s string) (policy.Probe, error) {
	proto, port, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return policy.Probe{}, fmt.Errorf("invalid probe %q: want PROTOCOL/PORT, e.g. TCP/80", s)
	}
	var p ir.Protocol
	switch strings.ToUpper(proto) {
	case "TCP":
		p = ir.TCP
	case "UDP":
		p = ir.UDP
	case "SCTP":
		p = ir.SCTP
	default:
		return policy.Probe{}, fmt.Errorf("invalid probe %q: protocol must be TCP, UDP or SCTP", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return policy.Probe{}, fmt.Errorf("invalid probe %q: port must be 1-65535", s)
	}
	return policy.Probe{Protocol: p, Port: uint16(n)}, nil
}

func parseProbes(s string) ([]policy.Probe, error) {
	var out []policy.Probe
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		p, err := parseProbe(part)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("invalid probes %q: empty list", s)
	}
	return out, nil
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

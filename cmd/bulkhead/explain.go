package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func init() { addCommand(newExplainCmd) }

func newExplainCmd() *cobra.Command {
	var src sourceFlags
	var from, to, port, output string
	cmd := &cobra.Command{
		Use:   "explain (-f PATH... | --kubeconfig FILE) --from ns/pod|IP --to ns/pod|IP --port TCP/80",
		Short: "Explain the verdict of one flow, tier by tier",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || to == "" || port == "" {
				return usageError{errors.New("--from, --to and --port are required")}
			}
			if output != "text" && output != "json" {
				return usageError{fmt.Errorf("invalid -o %q: want text or json", output)}
			}
			pr, err := parseProbe(port)
			if err != nil {
				return usageError{fmt.Errorf("--port: %w", err)}
			}
			sp, err := parsePeer(from)
			if err != nil {
				return usageError{fmt.Errorf("--from: %w", err)}
			}
			dp, err := parsePeer(to)
			if err != nil {
				return usageError{fmt.Errorf("--to: %w", err)}
			}
			e, err := src.load(cmd.Context(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			f := policy.Flow{Src: sp, Dst: dp, Protocol: pr.Protocol, Port: pr.Port}
			d := e.Evaluate(f)
			if d.Error != "" {
				return usageError{errors.New(d.Error)}
			}
			w := cmd.OutOrStdout()
			if output == "json" {
				type step struct {
					Tier    string `json:"tier"`
					Side    string `json:"side,omitempty"`
					Outcome string `json:"outcome"`
					Rule    string `json:"rule,omitempty"`
					Detail  string `json:"detail,omitempty"`
				}
				out := struct {
					Src     string `json:"src"`
					Dst     string `json:"dst"`
					Proto   string `json:"protocol"`
					Port    int    `json:"port"`
					Allowed bool   `json:"allowed"`
					Verdict string `json:"verdict"`
					Tier    string `json:"tier"`
					Rule    string `json:"rule"`
					Trail   []step `json:"trail"`
				}{Src: from, Dst: to, Proto: pr.Protocol.String(), Port: int(pr.Port), Allowed: d.Allowed, Verdict: d.Verdict, Tier: d.Tier.String(), Rule: d.Rule}
				for _, s := range d.Trail {
					out.Trail = append(out.Trail, step{s.Tier.String(), s.Side, s.Outcome, s.Rule, s.Detail})
				}
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			rule := d.Rule
			if rule == "" {
				rule = "default allow"
			}
			fmt.Fprintf(w, "flow:    %s -> %s %s/%d\n", from, to, pr.Protocol, pr.Port)
			fmt.Fprintf(w, "verdict: %s (allowed=%v)\n", d.Verdict, d.Allowed)
			fmt.Fprintf(w, "decided: %s tier, %s\n", d.Tier, rule)
			fmt.Fprintln(w, "trail:")
			for _, s := range d.Trail {
				tier := s.Tier.String()
				if s.Side != "" {
					tier += " (" + s.Side + ")"
				}
				line := fmt.Sprintf("  %-24s %-7s", tier, s.Outcome)
				if s.Rule != "" {
					line += " " + s.Rule
				}
				if s.Detail != "" {
					line += "  # " + s.Detail
				}
				fmt.Fprintln(w, strings.TrimRight(line, " "))
			}
			return nil
		},
	}
	src.register(cmd)
	cmd.Flags().StringVar(&from, "from", "", "source: namespace/pod or an IP address")
	cmd.Flags().StringVar(&to, "to", "", "destination: namespace/pod or an IP address")
	cmd.Flags().StringVar(&port, "port", "", "protocol and destination port, e.g. TCP/80")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func parsePeer(s string) (policy.Peer, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return policy.IPPeer(a), nil
	}
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return policy.Peer{}, fmt.Errorf("invalid endpoint %q: want namespace/pod or an IP address", s)
	}
	return policy.PodPeer(ns, name), nil
}

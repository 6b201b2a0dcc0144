package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bulkhead-dev/bulkhead/internal/lab"
)

func init() { labSubcommands = append(labSubcommands, newLabCheckCmd) }

// newLabCheckCmd compares the probed matrix with `bulkhead analyze
// --kubeconfig` run on the objects read back from the lab.
func newLabCheckCmd(f *labFlags) *cobra.Command {
	var probes string
	var opts lab.ProbeOptions
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Compare the probed matrix with `bulkhead analyze --kubeconfig` on the lab's objects",
		Long: `check runs "bulkhead analyze --kubeconfig <lab kubeconfig> -o json" (this
executable) and "bulkhead lab probe" with the same probes, and prints both
matrices and the differing cells when they disagree (exit code 1).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := lab.LoadState(f.stateDir)
			if err != nil {
				return fmt.Errorf("no lab in %s: %w", f.stateDir, err)
			}
			var ps []lab.Probe
			if probes != "" {
				if ps, err = lab.ParseProbes(probes); err != nil {
					return usageError{fmt.Errorf("--probes: %w", err)}
				}
			} else {
				ps = st.Plan.DeclaredProbes()
			}
			var names []string
			for _, p := range ps {
				names = append(names, p.String())
			}
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("finding own executable: %w", err)
			}
			var stdout, stderr bytes.Buffer
			an := exec.CommandContext(cmd.Context(), exe, "analyze", "--kubeconfig", lab.Layout{Dir: f.stateDir}.Kubeconfig(), "-o", "json", "--probes", strings.Join(names, ","))
			an.Stdout, an.Stderr = &stdout, &stderr
			if err := an.Run(); err != nil {
				return fmt.Errorf("running %s: %w\n%s", strings.Join(an.Args, " "), err, stderr.String())
			}
			want, err := lab.ParseMatrix(&stdout)
			if err != nil {
				return fmt.Errorf("reading analyze output: %w", err)
			}
			got, err := lab.ProbeLab(cmd.Context(), f.stateDir, ps, opts)
			if err != nil {
				return err
			}
			if d := lab.CompareMatrices(want, got); d != "" {
				fmt.Fprintln(cmd.OutOrStdout(), "probed matrix (got) disagrees with bulkhead analyze (want):")
				fmt.Fprint(cmd.OutOrStdout(), d)
				return errors.New("the datapath disagrees with analyze")
			}
			allowed := 0
			for _, e := range got {
				if e.Allowed {
					allowed++
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "probed matrix agrees with bulkhead analyze: %d cells (%d allowed, %d denied) over %s\n",
				len(got), allowed, len(got)-allowed, strings.Join(names, ","))
			return nil
		},
	}
	cmd.Flags().StringVar(&probes, "probes", "", "probes (default: every declared container port)")
	cmd.Flags().DurationVar(&opts.Timeout, "timeout", 0, "timeout of one probe (default 600ms)")
	return cmd
}

package main

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func init() { addCommand(newAnalyzeCmd) }

func newAnalyzeCmd() *cobra.Command {
	var src sourceFlags
	var probesFlag, output string
	cmd := &cobra.Command{
		Use:   "analyze (-f PATH... | --kubeconfig FILE) [--probes TCP/80,UDP/53] [-o json|table|dot]",
		Short: "Print the allowed-flows matrix between all pods",
		Long: `Analyze computes, for every ordered pair of distinct pods and every probe
(protocol/port), whether the flow is allowed, following docs/policy-model.md.
"allowed" is what the datapath does; "verdict" is ALLOWED, DENIED or AUDIT
(AUDIT is allowed). Without --probes the probes are the union of all
container ports that pods declare.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch output {
			case "json", "table", "dot":
			default:
				return usageError{fmt.Errorf("invalid -o %q: want json, table or dot", output)}
			}
			var probes []policy.Probe
			if probesFlag != "" {
				var err error
				if probes, err = parseProbes(probesFlag); err != nil {
					return usageError{err}
				}
			}
			e, err := src.load(cmd.Context(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if probes == nil {
				probes = e.DeclaredProbes()
				if len(probes) == 0 {
					fmt.Fprintln(cmd.ErrOrStderr(), "warning: no pod declares a container port and no --probes were given; the matrix is empty")
				}
			}
			w := bufio.NewWriterSize(cmd.OutOrStdout(), 1<<16)
			switch output {
			case "json":
				err = writeJSON(w, e, probes)
			case "table":
				err = writeTable(w, e, probes)
			case "dot":
				err = writeDot(w, e, probes)
			}
			if err != nil {
				return fmt.Errorf("writing output: %w", err)
			}
			if err := w.Flush(); err != nil {
				return fmt.Errorf("writing output: %w", err)
			}
			return nil
		},
	}
	src.register(cmd)
	cmd.Flags().StringVar(&probesFlag, "probes", "", "comma-separated probes PROTOCOL/PORT, e.g. TCP/80,UDP/53,SCTP/9000 (default: all declared container ports)")
	cmd.Flags().StringVarP(&output, "output", "o", "json", "output format: json, table or dot")
	return cmd
}

func writeJSON(w *bufio.Writer, e *policy.Engine, probes []policy.Probe) error {
	buf := make([]byte, 0, 256)
	first := true
	if _, err := w.WriteString("["); err != nil {
		return err
	}
	var werr error
	e.EachMatrixEntry(probes, func(m policy.MatrixEntry) {
		if werr != nil {
			return
		}
		buf = buf[:0]
		if first {
			buf = append(buf, "\n{\"src\":"...)
			first = false
		} else {
			buf = append(buf, ",\n{\"src\":"...)
		}
		buf = appendJSONString(buf, m.Src)
		buf = append(buf, ",\"dst\":"...)
		buf = appendJSONString(buf, m.Dst)
		buf = append(buf, ",\"protocol\":"...)
		buf = appendJSONString(buf, m.Protocol)
		buf = append(buf, ",\"port\":"...)
		buf = strconv.AppendInt(buf, int64(m.Port), 10)
		buf = append(buf, ",\"allowed\":"...)
		buf = strconv.AppendBool(buf, m.Allowed)
		buf = append(buf, ",\"verdict\":"...)
		buf = appendJSONString(buf, m.Verdict)
		buf = append(buf, ",\"rule\":"...)
		buf = appendJSONString(buf, m.Rule)
		buf = append(buf, '}')
		_, werr = w.Write(buf)
	})
	if werr != nil {
		return werr
	}
	if first {
		_, err := w.WriteString("]\n")
		return err
	}
	_, err := w.WriteString("\n]\n")
	return err
}

// Table cells hold one character per probe, in the order of the legend:
// '+' ALLOWED, '-' DENIED, '~' AUDIT (allowed, reported).
func writeTable(w io.Writer, e *policy.Engine, probes []policy.Probe) error {
	probes = policy.SortProbes(probes)
	pods := e.Pods()
	names := make([]string, len(probes))
	for i, p := range probes {
		names[i] = fmt.Sprintf("%s/%d", p.Protocol, p.Port)
	}
	fmt.Fprintf(w, "probes per cell: %s\n", strings.Join(names, " "))
	fmt.Fprintln(w, "legend: + ALLOWED, - DENIED, ~ AUDIT; rows are sources, columns destinations")
	cells := map[[2]string][]byte{}
	e.EachMatrixEntry(probes, func(m policy.MatrixEntry) {
		k := [2]string{m.Src, m.Dst}
		c := byte('+')
		switch m.Verdict {
		case policy.VerdictDenied:
			c = '-'
		case policy.VerdictAudit:
			c = '~'
		}
		cells[k] = append(cells[k], c)
	})
	rowW := 3
	for _, p := range pods {
		rowW = max(rowW, len(p))
	}
	colW := make([]int, len(pods))
	for i, p := range pods {
		colW[i] = max(len(p), len(probes), 1)
	}
	var b strings.Builder
	b.WriteString(pad("src\\dst", rowW))
	for i, p := range pods {
		b.WriteString(" " + pad(p, colW[i]))
	}
	fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	for _, s := range pods {
		b.Reset()
		b.WriteString(pad(s, rowW))
		for i, d := range pods {
			cell := "."
			if s != d {
				cell = string(cells[[2]string{s, d}])
			}
			b.WriteString(" " + pad(cell, colW[i]))
		}
		if _, err := fmt.Fprintln(w, strings.TrimRight(b.String(), " ")); err != nil {
			return err
		}
	}
	return nil
}

func pad(s string, n int) string {
	if len(s) >= n {
		return s
	}
	return s + strings.Repeat(" ", n-len(s))
}

// writeDot prints a graphviz digraph with one edge per pair that has an
// allowed probe, labelled with those probes; edges with an AUDIT probe are
// dashed.
func writeDot(w io.Writer, e *policy.Engine, probes []policy.Probe) error {
	type edge struct {
		labels []string
		audit  bool
	}
	edges := map[[2]string]*edge{}
	var keys [][2]string
	e.EachMatrixEntry(probes, func(m policy.MatrixEntry) {
		if !m.Allowed {
			return
		}
		k := [2]string{m.Src, m.Dst}
		ed := edges[k]
		if ed == nil {
			ed = &edge{}
			edges[k] = ed
			keys = append(keys, k)
		}
		ed.labels = append(ed.labels, fmt.Sprintf("%s/%d", m.Protocol, m.Port))
		ed.audit = ed.audit || m.Verdict == policy.VerdictAudit
	})
	sort.Slice(keys, func(i, j int) bool {
		if keys[i][0] != keys[j][0] {
			return keys[i][0] < keys[j][0]
		}
		return keys[i][1] < keys[j][1]
	})
	fmt.Fprintln(w, "digraph allowed {")
	fmt.Fprintln(w, "  rankdir=LR;")
	for _, p := range e.Pods() {
		fmt.Fprintf(w, "  %s;\n", strconv.Quote(p))
	}
	for _, k := range keys {
		ed := edges[k]
		style := ""
		if ed.audit {
			style = ", style=dashed"
		}
		fmt.Fprintf(w, "  %s -> %s [label=%s%s];\n", strconv.Quote(k[0]), strconv.Quote(k[1]), strconv.Quote(strings.Join(ed.labels, ",")), style)
	}
	_, err := fmt.Fprintln(w, "}")
	return err
}

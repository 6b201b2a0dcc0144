package lab

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// Entry is one cell of a reachability matrix, in the JSON schema that
// `bulkhead analyze -o json` prints. Probes give a Verdict of ALLOWED or
// DENIED; analyze may also say AUDIT (allowed).
type Entry struct {
	Src      string `json:"src"`
	Dst      string `json:"dst"`
	Protocol string `json:"protocol"`
	Port     int    `json:"port"`
	Allowed  bool   `json:"allowed"`
	Verdict  string `json:"verdict"`
}

// Verdicts.
const (
	VerdictAllowed = "ALLOWED"
	VerdictDenied  = "DENIED"
	VerdictAudit   = "AUDIT"
)

type cellKey struct {
	src, dst, proto string
	port            int
}

func (e Entry) key() cellKey { return cellKey{e.Src, e.Dst, e.Protocol, e.Port} }

func (k cellKey) String() string { return fmt.Sprintf("%s -> %s %s/%d", k.src, k.dst, k.proto, k.port) }

// SortEntries orders a matrix by src, dst, protocol, port.
func SortEntries(es []Entry) {
	sort.Slice(es, func(i, j int) bool {
		a, b := es[i], es[j]
		if a.Src != b.Src {
			return a.Src < b.Src
		}
		if a.Dst != b.Dst {
			return a.Dst < b.Dst
		}
		if a.Protocol != b.Protocol {
			return a.Protocol < b.Protocol
		}
		return a.Port < b.Port
	})
}

// ParseMatrix reads the JSON array analyze and probe print. Extra keys are
// ignored.
func ParseMatrix(r io.Reader) ([]Entry, error) {
	var es []Entry
	if err := json.NewDecoder(r).Decode(&es); err != nil {
		return nil, fmt.Errorf("decoding matrix JSON: %w", err)
	}
	for i, e := range es {
		if e.Src == "" || e.Dst == "" || e.Protocol == "" || e.Port == 0 {
			return nil, fmt.Errorf("decoding matrix JSON: entry %d: src, dst, protocol and port are required", i)
		}
	}
	return es, nil
}

// WriteJSON prints the matrix as an indented JSON array.
func WriteJSON(w io.Writer, es []Entry) error {
	if es == nil {
		es = []Entry{}
	}
	b, err := json.MarshalIndent(es, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// WriteTable prints one row per ordered pod pair and one column per probe:
// "ok" for allowed, "audit" for an allowed AUDIT verdict, "-" for denied,
// "?" where the matrix has no cell.
func WriteTable(w io.Writer, es []Entry) error {
	var probes []Probe
	seenProbe := map[Probe]bool{}
	type pair struct{ src, dst string }
	var pairs []pair
	seenPair := map[pair]bool{}
	cells := map[cellKey]Entry{}
	for _, e := range es {
		pr := Probe{e.Protocol, e.Port}
		if !seenProbe[pr] {
			seenProbe[pr] = true
			probes = append(probes, pr)
		}
		pp := pair{e.Src, e.Dst}
		if !seenPair[pp] {
			seenPair[pp] = true
			pairs = append(pairs, pp)
		}
		cells[e.key()] = e
	}
	SortProbes(probes)
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].src != pairs[j].src {
			return pairs[i].src < pairs[j].src
		}
		return pairs[i].dst < pairs[j].dst
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	hdr := []string{"SRC", "DST"}
	for _, p := range probes {
		hdr = append(hdr, p.String())
	}
	fmt.Fprintln(tw, strings.Join(hdr, "\t"))
	for _, pp := range pairs {
		row := []string{pp.src, pp.dst}
		for _, p := range probes {
			e, ok := cells[cellKey{pp.src, pp.dst, p.Protocol, p.Port}]
			switch {
			case !ok:
				row = append(row, "?")
			case e.Allowed && e.Verdict == VerdictAudit:
				row = append(row, "audit")
			case e.Allowed:
				row = append(row, "ok")
			default:
				row = append(row, "-")
			}
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// CompareMatrices compares two matrices by their allowed bits, cell by
// cell (src, dst, protocol, port). It returns "" when they agree, else
// both matrices and the differing cells, including cells that only one
// matrix has. Verdict names are not compared: a probe cannot tell an
// AUDIT from an ALLOWED.
func CompareMatrices(want, got []Entry) string {
	w := map[cellKey]Entry{}
	for _, e := range want {
		w[e.key()] = e
	}
	g := map[cellKey]Entry{}
	for _, e := range got {
		g[e.key()] = e
	}
	var diffs []string
	keys := map[cellKey]bool{}
	for k := range w {
		keys[k] = true
	}
	for k := range g {
		keys[k] = true
	}
	var all []Entry
	for k := range keys {
		all = append(all, Entry{Src: k.src, Dst: k.dst, Protocol: k.proto, Port: k.port})
	}
	SortEntries(all)
	for _, e := range all {
		k := e.key()
		we, wok := w[k]
		ge, gok := g[k]
		switch {
		case !wok:
			diffs = append(diffs, fmt.Sprintf("  %s: only in got (allowed=%t)", k, ge.Allowed))
		case !gok:
			diffs = append(diffs, fmt.Sprintf("  %s: missing from got (want allowed=%t)", k, we.Allowed))
		case we.Allowed != ge.Allowed:
			diffs = append(diffs, fmt.Sprintf("  %s: want %s, got %s", k, allowWord(we), allowWord(ge)))
		}
	}
	if len(diffs) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "matrices differ in %d cells:\n%s\n\nwant:\n", len(diffs), strings.Join(diffs, "\n"))
	_ = WriteTable(&b, want)
	b.WriteString("\ngot:\n")
	_ = WriteTable(&b, got)
	return b.String()
}

func allowWord(e Entry) string {
	if e.Allowed {
		if e.Verdict != "" {
			return "allowed (" + e.Verdict + ")"
		}
		return "allowed"
	}
	return "denied"
}

package policy_test

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/scenario"
)

// An expectation file (testdata/scenarios/NAME.expected) is written by hand
// from docs/policy-model.md. Lines, applied in order (later lines override
// earlier ones for the cells they match):
//
//	base xyz                         load testdata/bases/xyz.yaml first
//	probes TCP/80 TCP/81 UDP/80      matrix probes (default: declared ports)
//	default ALLOWED                  verdict of cells no line names
//	DENIED  SRC -> DST PORT          SRC/DST: ns/pod, ns/*, *; PORT: TCP/80, TCP/*, *
//	flow VERDICT SRC -> DST PORT [rule=ID]   one extra flow; SRC/DST may be IPs
//
// Every matrix cell is compared, so an expectation is a full matrix.
type expectation struct {
	bases   []string
	probes  []policy.Probe
	def     string
	lines   []cellRule
	flows   []flowExp
	hasDef  bool
	srcFile string
}

type cellRule struct {
	verdict, src, dst, port string
	line                    int
}

type flowExp struct {
	verdict, src, dst, port, rule string
	line                          int
}

func parseProbe(s string) (policy.Probe, error) {
	proto, port, ok := strings.Cut(s, "/")
	if !ok {
		return policy.Probe{}, fmt.Errorf("bad probe %q", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return policy.Probe{}, fmt.Errorf("bad probe %q", s)
	}
	var p ir.Protocol
	switch proto {
	case "TCP":
		p = ir.TCP
	case "UDP":
		p = ir.UDP
	case "SCTP":
		p = ir.SCTP
	default:
		return policy.Probe{}, fmt.Errorf("bad probe %q", s)
	}
	return policy.Probe{Protocol: p, Port: uint16(n)}, nil
}

func parseExpectation(t *testing.T, path string) *expectation {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ex := &expectation{def: "ALLOWED", srcFile: path}
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		fs := strings.Fields(line)
		if len(fs) == 0 {
			continue
		}
		bad := func() { t.Fatalf("%s:%d: cannot parse %q", path, n, sc.Text()) }
		switch fs[0] {
		case "base":
			ex.bases = append(ex.bases, fs[1:]...)
		case "probes":
			for _, s := range fs[1:] {
				p, err := parseProbe(s)
				if err != nil {
					t.Fatalf("%s:%d: %v", path, n, err)
				}
				ex.probes = append(ex.probes, p)
			}
		case "default":
			if len(fs) != 2 {
				bad()
			}
			ex.def = fs[1]
			ex.hasDef = true
		case "ALLOWED", "DENIED", "AUDIT":
			if len(fs) != 5 || fs[2] != "->" {
				bad()
			}
			ex.lines = append(ex.lines, cellRule{fs[0], fs[1], fs[3], fs[4], n})
		case "flow":
			if len(fs) < 6 || fs[3] != "->" {
				bad()
			}
			fe := flowExp{verdict: fs[1], src: fs[2], dst: fs[4], port: fs[5], line: n}
			for _, x := range fs[6:] {
				if r, ok := strings.CutPrefix(x, "rule="); ok {
					fe.rule = r
				} else {
					bad()
				}
			}
			ex.flows = append(ex.flows, fe)
		default:
			bad()
		}
	}
	return ex
}

func patMatch(pat, pod string) bool {
	if pat == "*" {
		return true
	}
	if ns, ok := strings.CutSuffix(pat, "/*"); ok {
		return strings.HasPrefix(pod, ns+"/")
	}
	return pat == pod
}

func portMatch(pat, proto string, port int) bool {
	if pat == "*" {
		return true
	}
	p, n, _ := strings.Cut(pat, "/")
	return p == proto && (n == "*" || n == strconv.Itoa(port))
}

func (ex *expectation) want(src, dst, proto string, port int) (string, int) {
	v, line := ex.def, 0
	for _, l := range ex.lines {
		if patMatch(l.src, src) && patMatch(l.dst, dst) && portMatch(l.port, proto, port) {
			v, line = l.verdict, l.line
		}
	}
	return v, line
}

func loadScenario(t *testing.T, name string) (*policy.Engine, *expectation) {
	t.Helper()
	ex := parseExpectation(t, filepath.Join("testdata", "scenarios", name+".expected"))
	var paths []string
	for _, b := range ex.bases {
		paths = append(paths, filepath.Join("testdata", "bases", b+".yaml"))
	}
	paths = append(paths, filepath.Join("testdata", "scenarios", name+".yaml"))
	s, err := scenario.LoadPaths(paths)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range s.Warnings {
		t.Errorf("warning: %s", w)
	}
	e, err := s.Engine()
	if err != nil {
		t.Fatal(err)
	}
	return e, ex
}

func peerOf(s string) policy.Peer {
	if a, err := netip.ParseAddr(s); err == nil {
		return policy.IPPeer(a)
	}
	return policy.Peer{Pod: s}
}

// TestScenarios checks every scenario's full matrix against its
// hand-written expectation, and the IR against Evaluate on every cell.
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "scenarios", "*.expected"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no scenarios")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".expected")
		t.Run(name, func(t *testing.T) {
			e, ex := loadScenario(t, name)
			probes := ex.probes
			if len(probes) == 0 {
				probes = e.DeclaredProbes()
			}
			m := e.Matrix(probes)
			pods := e.Pods()
			if want := len(pods) * (len(pods) - 1) * len(policy.SortProbes(probes)); len(m) != want {
				t.Fatalf("matrix has %d cells, want %d", len(m), want)
			}
			bad := 0
			for _, c := range m {
				want, line := ex.want(c.Src, c.Dst, c.Protocol, c.Port)
				if c.Verdict != want {
					bad++
					if bad <= 20 {
						t.Errorf("%s -> %s %s/%d: got %s (rule %q), want %s (expected line %d)", c.Src, c.Dst, c.Protocol, c.Port, c.Verdict, c.Rule, want, line)
					}
				}
				if c.Allowed != (c.Verdict != policy.VerdictDenied) {
					t.Errorf("%s -> %s %s/%d: allowed=%v with verdict %s", c.Src, c.Dst, c.Protocol, c.Port, c.Allowed, c.Verdict)
				}
			}
			if bad > 20 {
				t.Errorf("... %d wrong cells in all", bad)
			}
			for _, fe := range ex.flows {
				pr, err := parseProbe(fe.port)
				if err != nil {
					t.Fatal(err)
				}
				f := policy.Flow{Src: peerOf(fe.src), Dst: peerOf(fe.dst), Protocol: pr.Protocol, Port: pr.Port}
				d := e.Evaluate(f)
				if d.Error != "" {
					t.Fatalf("line %d: %s", fe.line, d.Error)
				}
				if d.Verdict != fe.verdict {
					t.Errorf("line %d: flow %s -> %s %s: got %s (rule %q), want %s", fe.line, fe.src, fe.dst, fe.port, d.Verdict, d.Rule, fe.verdict)
				}
				if fe.rule != "" && d.Rule != fe.rule {
					t.Errorf("line %d: flow %s -> %s %s: rule %q, want %q", fe.line, fe.src, fe.dst, fe.port, d.Rule, fe.rule)
				}
				checkIRFlow(t, e, f, d)
			}
			checkIRAgreement(t, e, probes)
		})
	}
}

type epLoc struct {
	np *ir.NodePolicy
	ep *ir.Endpoint
}

func endpointIndex(e *policy.Engine) map[string]epLoc {
	idx := map[string]epLoc{}
	nodes := append(e.Nodes(), "")
	for _, n := range nodes {
		np := e.NodePolicy(n)
		for i := range np.Endpoints {
			idx[np.Endpoints[i].Name] = epLoc{np, &np.Endpoints[i]}
		}
	}
	return idx
}

func familyPair(a, b []netip.Addr) (netip.Addr, netip.Addr) {
	for _, x := range a {
		for _, y := range b {
			if x.Is4() == y.Is4() {
				return x, y
			}
		}
	}
	return a[0], b[0]
}

// irVerdict evaluates a flow on the compiled IR: the source pod's egress
// chain on its node and the destination pod's ingress chain on its node.
func irVerdict(t *testing.T, idx map[string]epLoc, srcPod, dstPod string, srcIP, dstIP netip.Addr, proto ir.Protocol, port uint16) (allowed, audited bool, detail string) {
	t.Helper()
	allowed = true
	if srcPod != "" {
		l, ok := idx[srcPod]
		if !ok {
			t.Fatalf("no IR endpoint for %s", srcPod)
		}
		v := l.np.Evaluate(&l.ep.Egress, dstIP, proto, port)
		allowed = allowed && v.Allowed
		audited = audited || v.Audited
		detail += fmt.Sprintf("egress(%s): %+v ", srcPod, v)
	}
	if dstPod != "" {
		l, ok := idx[dstPod]
		if !ok {
			t.Fatalf("no IR endpoint for %s", dstPod)
		}
		v := l.np.Evaluate(&l.ep.Ingress, srcIP, proto, port)
		allowed = allowed && v.Allowed
		audited = audited || v.Audited
		detail += fmt.Sprintf("ingress(%s): %+v", dstPod, v)
	}
	return allowed, allowed && audited, detail
}

func checkIRAgreement(t *testing.T, e *policy.Engine, probes []policy.Probe) {
	t.Helper()
	idx := endpointIndex(e)
	bad := 0
	for _, c := range e.Matrix(probes) {
		s, d := idx[c.Src], idx[c.Dst]
		if s.ep == nil || d.ep == nil {
			t.Fatalf("missing IR endpoint for %s or %s", c.Src, c.Dst)
		}
		sip, dip := familyPair(s.ep.IPs, d.ep.IPs)
		pr, _ := parseProbe(fmt.Sprintf("%s/%d", c.Protocol, c.Port))
		allowed, audited, detail := irVerdict(t, idx, c.Src, c.Dst, sip, dip, pr.Protocol, pr.Port)
		if allowed != c.Allowed || audited != (c.Verdict == policy.VerdictAudit) {
			bad++
			if bad <= 10 {
				t.Errorf("IR disagrees with Evaluate for %s -> %s %s/%d: Evaluate %s (rule %q); IR allowed=%v audited=%v: %s", c.Src, c.Dst, c.Protocol, c.Port, c.Verdict, c.Rule, allowed, audited, detail)
			}
		}
	}
}

func checkIRFlow(t *testing.T, e *policy.Engine, f policy.Flow, d policy.Decision) {
	t.Helper()
	idx := endpointIndex(e)
	names := map[netip.Addr]string{}
	for n, l := range idx {
		for _, a := range l.ep.IPs {
			names[a] = n
		}
	}
	resolve := func(p policy.Peer) (string, []netip.Addr) {
		if p.Pod != "" {
			return p.Pod, idx[p.Pod].ep.IPs
		}
		return names[p.IP], []netip.Addr{p.IP}
	}
	sp, sips := resolve(f.Src)
	dp, dips := resolve(f.Dst)
	sip, dip := familyPair(sips, dips)
	allowed, audited, detail := irVerdict(t, idx, sp, dp, sip, dip, f.Protocol, f.Port)
	if allowed != d.Allowed || audited != (d.Verdict == policy.VerdictAudit) {
		t.Errorf("IR disagrees with Evaluate for %v: Evaluate %s (rule %q); IR allowed=%v audited=%v: %s", f, d.Verdict, d.Rule, allowed, audited, detail)
	}
}

var _ = sort.Strings

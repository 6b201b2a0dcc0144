package bench

// The dataplane throughput and connection-rate harness of
// docs/benchmarks.md ("Dataplane throughput and connection rate"). Each
// configuration gets its own copy of one topology (client pod → node
// namespace with the filter → server pod, routed veths as in the lab),
// programmed once; every round then measures every configuration, in an
// order rotated from round to round, so that paired ratios against the
// round's no-filter run cancel most of the machine's load swings.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/dataplane/ebpf"
	"github.com/bulkhead-dev/bulkhead/dataplane/nftables"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// Ports on the server pod. dptest's probe server also listens on 80,
// which the bench policy leaves to the baseline deny.
const (
	dpIperfPort  = 5201
	dpRatePort   = 7100
	dpStreamPort = 7000
	dpProbePort  = 8080
	dpDeniedPort = 80
)

const (
	benchClientSet = "bench-client"
	benchAllowRule = "NetworkPolicy/bench/allow-client/ingress/0"
	iptablesLegacy = "/usr/sbin/iptables-legacy"
)

type dpKind string

const (
	kindNone     dpKind = "none"
	kindNFT      dpKind = "nftables"
	kindEBPF     dpKind = "ebpf"
	kindIptables dpKind = "iptables-legacy"
)

type dpConfig struct {
	Kind  dpKind
	Rules int
}

func (c dpConfig) String() string {
	if c.Kind == kindNone {
		return "no filter"
	}
	return fmt.Sprintf("%s %d", c.Kind, c.Rules)
}

// dpConfigs lists no filter first, then every kind with every rule count.
func dpConfigs(kinds []dpKind, rules []int) []dpConfig {
	out := []dpConfig{{Kind: kindNone}}
	for _, k := range kinds {
		for _, n := range rules {
			out = append(out, dpConfig{Kind: k, Rules: n})
		}
	}
	return out
}

// dpEnv is one configuration's topology with its filter in place.
type dpEnv struct {
	cfg                   dpConfig
	topo                  *dptest.Topology
	client, server, other *dptest.Pod
	// np allows the measured flows; revoked is np with the client taken
	// out of its peer set (a one-element delta).
	np, revoked *ir.NodePolicy
	dp          dataplane.Dataplane
	ebpf        *ebpf.Backend
	// program is the time to program the full rule set once.
	program time.Duration
	// nftRules etc. describe what the filter holds.
	detail string
	rate   *OneByteServer
}

func (e *dpEnv) serverAddr(port int) string {
	return netip.AddrPortFrom(e.server.IP4, uint16(port)).String()
}

// benchPolicy is dptest.RulesPolicy(n) on the topology: the synthetic
// endpoints get addresses in 10.244.64.0/18 and fd00:10:244:1::/64 (the
// node routes them to ifb interfaces), the last endpoint by name
// becomes the server pod, and an Accept for the client's set on the
// measured ports is appended to the end of its NetworkPolicy tier. So the
// measured flows pass the endpoint's admin Denies and its other Accepts
// first, and are allowed by a rule that is not first.
func benchPolicy(topo *dptest.Topology, client, server, other *dptest.Pod, n int) (*ir.NodePolicy, error) {
	np := dptest.RulesPolicy(n)
	np.Node = topo.NodeNS
	for i := range np.Endpoints {
		np.Endpoints[i].IPs = syntheticIPs(i)
	}
	last := &np.Endpoints[len(np.Endpoints)-1]
	last.IPs = server.IPs()
	last.CutConnections = true
	allow := dptest.Rule(benchAllowRule, benchClientSet, false, ir.Accept,
		ir.PortRange{Protocol: ir.TCP, From: dpIperfPort, To: dpIperfPort},
		ir.PortRange{Protocol: ir.TCP, From: dpStreamPort, To: dpStreamPort},
		ir.PortRange{Protocol: ir.TCP, From: dpRatePort, To: dpRatePort},
		ir.PortRange{Protocol: ir.TCP, From: dpProbePort, To: dpProbePort})
	found := false
	for i := range last.Ingress.Tiers {
		if last.Ingress.Tiers[i].Kind == ir.TierNetworkPolicy {
			last.Ingress.Tiers[i].Rules = append(last.Ingress.Tiers[i].Rules, allow)
			found = true
		}
	}
	if !found {
		return nil, fmt.Errorf("bench policy: endpoint %s has no NetworkPolicy tier", last.Name)
	}
	np.Sets = append(np.Sets, dptest.Set(benchClientSet, client.Prefixes()...))
	sort.Slice(np.Sets, func(i, j int) bool { return np.Sets[i].Name < np.Sets[j].Name })
	return np, checkBenchPolicy(np, client, other)
}

func syntheticIPs(i int) []netip.Addr {
	return []netip.Addr{
		netip.AddrFrom4([4]byte{10, 244, byte(64 + i>>8), byte(i)}),
		netip.MustParseAddr(fmt.Sprintf("fd00:10:244:1::%x", i+1)),
	}
}

// checkBenchPolicy proves with the reference evaluator that every
// measured flow is allowed by the appended rule, that rules come before
// it, and that the denied probes are denied.
func checkBenchPolicy(np *ir.NodePolicy, client, other *dptest.Pod) error {
	ep := np.Endpoints[len(np.Endpoints)-1]
	before := 0
	for _, t := range ep.Ingress.Tiers {
		for _, r := range t.Rules {
			if r.ID == benchAllowRule {
				goto counted
			}
			before++
		}
	}
counted:
	if before == 0 {
		return fmt.Errorf("bench policy: %s is the first rule of endpoint %s", benchAllowRule, ep.Name)
	}
	for _, port := range []uint16{dpIperfPort, dpStreamPort, dpRatePort, dpProbePort} {
		v := np.Evaluate(&ep.Ingress, client.IP4, ir.TCP, port)
		if !v.Allowed || v.RuleID != benchAllowRule {
			return fmt.Errorf("bench policy: client to TCP/%d decided by %q (allowed=%v), want %s", port, v.RuleID, v.Allowed, benchAllowRule)
		}
	}
	if v := np.Evaluate(&ep.Ingress, client.IP4, ir.TCP, dpDeniedPort); v.Allowed {
		return fmt.Errorf("bench policy: client to TCP/%d allowed by %q, want denied", dpDeniedPort, v.RuleID)
	}
	if v := np.Evaluate(&ep.Ingress, other.IP4, ir.TCP, dpProbePort); v.Allowed {
		return fmt.Errorf("bench policy: other pod to TCP/%d allowed by %q, want denied", dpProbePort, v.RuleID)
	}
	return nil
}

// revokedPolicy returns np with the client's set holding an address no
// pod has: a set-element delta that denies the measured flows.
func revokedPolicy(np *ir.NodePolicy) *ir.NodePolicy {
	cp := *np
	cp.Sets = append([]ir.AddressSet(nil), np.Sets...)
	for i := range cp.Sets {
		if cp.Sets[i].Name == benchClientSet {
			cp.Sets[i] = dptest.Set(benchClientSet, netip.MustParsePrefix("10.244.255.254/32"))
		}
	}
	return &cp
}

// newDPEnv builds the configuration's topology, starts the servers and
// programs the filter. Everything is removed when the test ends.
func newDPEnv(t testing.TB, cfg dpConfig) *dpEnv {
	t.Helper()
	testenv.RequireRoot(t)
	for _, tool := range []string{"iperf3", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.SkipOrFail(t, tool+" not found (hack/install-deps.sh installs it)")
		}
	}
	if cfg.Kind == kindIptables {
		if _, err := os.Stat(iptablesLegacy); err != nil {
			testenv.SkipOrFail(t, iptablesLegacy+" not found (Debian package iptables)")
		}
	}
	topo := dptest.NewTopology(t, 3)
	e := &dpEnv{cfg: cfg, topo: topo, client: topo.Pods[0], server: topo.Pods[1], other: topo.Pods[2]}
	// Many short connections: reuse TIME_WAIT ports on the client side.
	for k, v := range map[string]string{
		"net/ipv4/tcp_tw_reuse":        "1",
		"net/ipv4/ip_local_port_range": "1024 65535",
	} {
		if err := procWrite(e.client.Path, k, v); err != nil {
			t.Fatal(err)
		}
	}
	startIperfServer(t, e.server)
	rs, err := ListenOneByte(e.server.Path, dpRatePort)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rs.Close() })
	e.rate = rs
	echo, err := ListenEcho(e.server.NSName, dpStreamPort)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = echo.Close() })
	if cfg.Kind == kindNone {
		e.detail = "—"
		return e
	}
	np, err := benchPolicy(topo, e.client, e.server, e.other, cfg.Rules)
	if err != nil {
		t.Fatal(err)
	}
	e.np, e.revoked = np, revokedPolicy(np)
	if err := addEndpointLinks(topo.NodeNS, len(np.Endpoints)-1); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	switch cfg.Kind {
	case kindNFT:
		be, err := nftables.New(nftables.Options{NetNSPath: topo.NodePath})
		if err != nil {
			t.Fatalf("nftables backend: %v", err)
		}
		t.Cleanup(func() {
			if err := be.Uninstall(ctx); err != nil {
				t.Errorf("nftables Uninstall: %v", err)
			}
			_ = be.Close()
		})
		e.dp = be
	case kindEBPF:
		be, err := ebpf.New(ebpf.Options{NetNSPath: topo.NodePath})
		if err != nil {
			testenv.SkipOrFail(t, "ebpf backend: "+err.Error())
		}
		t.Cleanup(func() {
			if err := be.Uninstall(ctx); err != nil {
				t.Errorf("ebpf Uninstall: %v", err)
			}
			_ = be.Close()
		})
		e.dp, e.ebpf = be, be
	case kindIptables:
		start := time.Now()
		rules, err := installIptables(topo, np)
		if err != nil {
			t.Fatalf("iptables: %v", err)
		}
		e.program = time.Since(start)
		e.detail = fmt.Sprintf("%d iptables rules, %d ipsets (IPv4 only)", rules, len(np.Sets))
		return e
	default:
		t.Fatalf("unknown configuration kind %q", cfg.Kind)
	}
	start := time.Now()
	if err := e.dp.Sync(ctx, np); err != nil {
		t.Fatalf("%s: programming %d rules: %v", cfg, cfg.Rules, err)
	}
	e.program = time.Since(start)
	// An experiment, off by default: strict TCP pickup in the node
	// namespace, as the iptables chain has (see installIptables).
	if v := os.Getenv("BULKHEAD_BENCH_TCP_LOOSE"); v != "" {
		if err := procWrite(topo.NodePath, "net/netfilter/nf_conntrack_tcp_loose", v); err != nil {
			t.Fatalf("BULKHEAD_BENCH_TCP_LOOSE=%q: %v", v, err)
		}
	}
	switch be := e.dp.(type) {
	case *nftables.Backend:
		s := be.Stats()
		if s.Rebuilds != 1 {
			t.Fatalf("%s: stats %+v, want one rebuild", cfg, s)
		}
		e.detail = "nft table " + be.TableName()
	case *ebpf.Backend:
		s := be.Stats()
		if s.Attached < len(np.Endpoints) {
			t.Fatalf("%s: %d interfaces attached, want %d (one per endpoint)", cfg, s.Attached, len(np.Endpoints))
		}
		e.detail = fmt.Sprintf("%d ident, %d class, %d policy entries on %d interfaces", s.IdentEntries, s.ClassEntries, s.PolicyEntries, s.Attached)
	}
	return e
}

// procWrite sets a sysctl of the namespace at nsPath.
func procWrite(nsPath, key, val string) error {
	return netns.Do(nsPath, func() error {
		if err := os.WriteFile("/proc/sys/"+key, []byte(val), 0o644); err != nil {
			return fmt.Errorf("setting %s in %s: %w", key, nsPath, err)
		}
		return nil
	})
}

// addEndpointLinks gives the synthetic endpoints 0..n-1 an ifb interface each (this kernel has no dummy driver)
// in the node namespace, with their host routes, so that the eBPF backend
// finds (and attaches to) every endpoint, as it would on a node with that
// many pods.
func addEndpointLinks(nodeNS string, n int) error {
	if n <= 0 {
		return nil
	}
	var b strings.Builder
	for i := 0; i < n; i++ {
		ips := syntheticIPs(i)
		fmt.Fprintf(&b, "link add bd%d type ifb\nlink set bd%d up\nroute add %s/32 dev bd%d\nroute add %s/128 dev bd%d\n",
			i, i, ips[0], i, ips[1], i)
	}
	cmd := exec.Command("ip", "-n", nodeNS, "-batch", "-")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("adding %d endpoint interfaces in %s: %w: %s", n, nodeNS, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// startIperfServer runs iperf3 -s in the pod's namespace until the test
// ends, and waits until it listens.
func startIperfServer(t testing.TB, p *dptest.Pod) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", p.NSName, "iperf3", "-s", "-p", strconv.Itoa(dpIperfPort))
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting iperf3 server in %s: %v", p.NSName, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, err := listening(p.Path, dpIperfPort)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("iperf3 server in %s not listening on %d after 10s", p.NSName, dpIperfPort)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listening reports whether a TCP socket listens on port in the
// namespace, from /proc/thread-self/net/tcp{,6}.
func listening(nsPath string, port int) (bool, error) {
	var ok bool
	err := netns.Do(nsPath, func() error {
		for _, f := range []string{"tcp", "tcp6"} {
			data, err := os.ReadFile(filepath.Join("/proc/thread-self/net", f))
			if err != nil {
				return fmt.Errorf("reading sockets of %s: %w", nsPath, err)
			}
			want := fmt.Sprintf(":%04X", port)
			for _, line := range strings.Split(string(data), "\n")[1:] {
				fs := strings.Fields(line)
				if len(fs) > 3 && strings.HasSuffix(fs[1], want) && fs[3] == "0A" {
					ok = true
				}
			}
		}
		return nil
	})
	return ok, err
}

// installIptables programs np's IPv4 rules as one linear chain in legacy
// iptables in the node namespace: an ESTABLISHED accept first, then, for
// every endpoint in order, one rule per IR rule and port range, with the
// peer sets as ipsets (hash:net). Tiers are in order and hold only
// Accept and Deny, so first match gives the IR's verdict.
//
// The namespace gets nf_conntrack_tcp_loose=0: otherwise, after revoke
// deletes an established connection's entry, the server's next packet
// is picked up mid-stream as a new connection in the reverse direction,
// which no rule judges, and the client's packets then pass as its
// replies.
func installIptables(topo *dptest.Topology, np *ir.NodePolicy) (n int, err error) {
	err = netns.Do(topo.NodePath, func() error {
		for _, s := range np.Sets {
			if err := netlink.IpsetCreate(s.Name, "hash:net", netlink.IpsetCreateOptions{Family: unix.AF_INET}); err != nil {
				return fmt.Errorf("creating ipset %s: %w", s.Name, err)
			}
			for _, p := range s.Prefixes {
				if !p.Addr().Is4() {
					continue
				}
				if err := netlink.IpsetAdd(s.Name, &netlink.IPSetEntry{IP: p.Addr().AsSlice(), CIDR: uint8(p.Bits())}); err != nil {
					return fmt.Errorf("adding %v to ipset %s: %w", p, s.Name, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:BULKHEAD-BENCH - [0:0]\n")
	b.WriteString("-A FORWARD -j BULKHEAD-BENCH\n-A BULKHEAD-BENCH -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n")
	n = 2
	for _, ep := range np.Endpoints {
		for _, ip := range ep.IPs {
			if !ip.Is4() {
				continue
			}
			for _, tier := range ep.Ingress.Tiers {
				for _, r := range tier.Rules {
					var target string
					switch r.Action {
					case ir.Accept:
						target = "ACCEPT"
					case ir.Deny:
						target = "DROP"
					default:
						return 0, fmt.Errorf("rule %s: action %v has no linear iptables form here", r.ID, r.Action)
					}
					peer := ""
					if r.Peer.Set != "" {
						neg := ""
						if r.Peer.Negate {
							neg = "! "
						}
						peer = fmt.Sprintf(" -m set %s--match-set %s src", neg, r.Peer.Set)
					}
					ports := r.Ports
					if len(ports) == 0 {
						ports = []ir.PortRange{{}}
					}
					for _, pr := range ports {
						match := ""
						if pr.Protocol != 0 {
							proto := strings.ToLower(pr.Protocol.String())
							match = " -p " + proto
							if pr.From != 0 {
								match += fmt.Sprintf(" -m %s --dport %d:%d", proto, pr.From, pr.To)
							}
						}
						fmt.Fprintf(&b, "-A BULKHEAD-BENCH -d %s/32%s%s -j %s\n", ip, match, peer, target)
						n++
					}
				}
			}
		}
	}
	b.WriteString("COMMIT\n")
	cmd := exec.Command("ip", "netns", "exec", topo.NodeNS, iptablesLegacy+"-restore", "-w")
	defer func() {
		// conntrack's sysctls exist once the conntrack match loaded it.
		if err == nil {
			err = procWrite(topo.NodePath, "net/netfilter/nf_conntrack_tcp_loose", "0")
		}
	}()
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("iptables-legacy-restore in %s: %w: %s", topo.NodeNS, err, strings.TrimSpace(string(out)))
	}
	got, err := iptablesRuleCount(topo.NodeNS)
	if err != nil {
		return 0, err
	}
	if got != n {
		return 0, fmt.Errorf("iptables in %s holds %d rules, want %d", topo.NodeNS, got, n)
	}
	return n, nil
}

func iptablesRuleCount(nodeNS string) (int, error) {
	out, err := exec.Command("ip", "netns", "exec", nodeNS, iptablesLegacy+"-save", "-t", "filter").Output()
	if err != nil {
		return 0, fmt.Errorf("iptables-legacy-save in %s: %w", nodeNS, err)
	}
	n := 0
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "-A ") {
			n++
		}
	}
	return n, nil
}

// revoke applies the revoking delta: the backend Syncs e.revoked (which
// also cuts the client's established connections); iptables flushes the
// client's ipset and deletes the client's conntrack entries, as a
// classic iptables agent would.
func (e *dpEnv) revoke(ctx context.Context) error {
	if e.dp != nil {
		return e.dp.Sync(ctx, e.revoked)
	}
	return netns.Do(e.topo.NodePath, func() error {
		if err := netlink.IpsetFlush(benchClientSet); err != nil {
			return fmt.Errorf("flushing ipset %s: %w", benchClientSet, err)
		}
		f := &netlink.ConntrackFilter{}
		if err := f.AddIP(netlink.ConntrackOrigSrcIP, e.client.IP4.AsSlice()); err != nil {
			return err
		}
		if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
			return fmt.Errorf("deleting conntrack entries: %w", err)
		}
		return nil
	})
}

// restore undoes revoke.
func (e *dpEnv) restore(ctx context.Context) error {
	if e.dp != nil {
		return e.dp.Sync(ctx, e.np)
	}
	return netns.Do(e.topo.NodePath, func() error {
		return netlink.IpsetAdd(benchClientSet, &netlink.IPSetEntry{IP: e.client.IP4.AsSlice(), CIDR: 32})
	})
}

// checkFlows proves the configuration does what the numbers assume: the
// measured flows are allowed, and with a filter a flow to a port the
// server's rules do not open and a flow from a pod outside the client's
// set are refused.
func (e *dpEnv) checkFlows() error {
	var errs []error
	for _, port := range []uint16{dpProbePort} {
		if err := dptest.ProbeTCP(e.client, e.server.IP4, port); err != nil {
			errs = append(errs, fmt.Errorf("%s: measured flow client → server TCP/%d refused: %w", e.cfg, port, err))
		}
	}
	if ok, err := listening(e.server.Path, dpRatePort); err != nil || !ok {
		errs = append(errs, fmt.Errorf("%s: conn-rate server not listening (%v)", e.cfg, err))
	}
	if e.cfg.Kind != kindNone {
		if err := dptest.ProbeTCP(e.client, e.server.IP4, dpDeniedPort); err == nil {
			errs = append(errs, fmt.Errorf("%s: client → server TCP/%d allowed, want refused by the baseline deny", e.cfg, dpDeniedPort))
		}
		if err := dptest.ProbeTCP(e.other, e.server.IP4, dpProbePort); err == nil {
			errs = append(errs, fmt.Errorf("%s: %s → server TCP/%d allowed, want refused (not in %s)", e.cfg, e.other.Name, dpProbePort, benchClientSet))
		}
	}
	return errors.Join(errs...)
}

// iperf runs one iperf3 client from the client pod and returns the bits
// per second the server received.
func (e *dpEnv) iperf(seconds int) (float64, error) {
	out, err := exec.Command("ip", "netns", "exec", e.client.NSName, "iperf3", "-c", e.server.IP4.String(),
		"-p", strconv.Itoa(dpIperfPort), "-t", strconv.Itoa(seconds), "-J", "--connect-timeout", "3000").Output()
	if err != nil {
		return 0, fmt.Errorf("%s: iperf3: %w: %s", e.cfg, err, lastLines(string(out), 5))
	}
	bps, err := parseIperf(out)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", e.cfg, err)
	}
	return bps, nil
}

// parseIperf returns end.sum_received.bits_per_second of iperf3 -J.
func parseIperf(out []byte) (float64, error) {
	var v struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return 0, fmt.Errorf("parsing iperf3 output: %w", err)
	}
	if v.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", v.Error)
	}
	if v.End.SumReceived.BitsPerSecond <= 0 {
		return 0, errors.New("iperf3 reported no received bytes")
	}
	return v.End.SumReceived.BitsPerSecond, nil
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, " ")
}

// connRate runs the connection-rate tool from the client pod. With
// events (eBPF backend only) a flow reader drains the ring buffer during
// the window and the FORWARDED events of the measured flow per second
// are returned too; the reader runs in this process and takes CPU from
// the tool, so the ratios use windows without it.
func (e *dpEnv) connRate(window time.Duration, workers int, events bool) (ConnRateResult, float64, error) {
	var mu sync.Mutex
	var nev int64
	var last time.Time
	var stop func() error
	if events && e.ebpf != nil {
		rd, err := e.ebpf.NewFlowReader()
		if err != nil {
			return ConnRateResult{}, 0, fmt.Errorf("%s: flow reader: %w", e.cfg, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = rd.Run(ctx, func(r ebpf.FlowRecord) {
				mu.Lock()
				last = time.Now()
				if r.Verdict == dataplane.VerdictForwarded && r.DstPort == dpRatePort {
					nev++
				}
				mu.Unlock()
			})
		}()
		stop = func() error {
			cancel()
			err := rd.Close()
			wg.Wait()
			return err
		}
	}
	var base int64
	if stop != nil {
		// The ring buffer still holds the events of earlier windows
		// that ran without a reader: drain them (until 100 ms pass
		// without an event) and count from here.
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
			mu.Lock()
			quiet := time.Since(last) > 100*time.Millisecond
			mu.Unlock()
			if quiet {
				break
			}
		}
		mu.Lock()
		base = nev
		mu.Unlock()
	}
	start := time.Now()
	r, err := ConnRate(e.client.Path, e.serverAddr(dpRatePort), workers, window, 3*time.Second)
	took := time.Since(start)
	var evps float64
	if stop != nil {
		// Give the reader a moment to drain what the window produced.
		time.Sleep(50 * time.Millisecond)
		if cerr := stop(); cerr != nil && err == nil {
			err = cerr
		}
		mu.Lock()
		evps = float64(nev-base) / took.Seconds()
		mu.Unlock()
	}
	if err != nil {
		return r, 0, fmt.Errorf("%s: %w", e.cfg, err)
	}
	return r, evps, nil
}

// cutWait is how long the established connection may keep carrying data
// after a revoking delta before the round records it as not cut.
const cutWait = 3 * time.Second

// enforcement measures, for one revoking delta, the time from the start
// of the delta to the first refused new connection that stayed refused,
// and to the death of an established connection that is busy (a line
// every 2 ms, so packets are in flight both ways when the delta lands);
// then it restores the policy and waits until the flow is allowed again.
// cut is false when the established connection still carried data
// cutWait after the delta; notCut then says what conntrack held.
func (e *dpEnv) enforcement(ctx context.Context) (newConn, established time.Duration, cut bool, notCut string, err error) {
	s, err := DialStream(e.client.NSName, e.serverAddr(dpStreamPort), 2*time.Second)
	if err != nil {
		return 0, 0, false, "", fmt.Errorf("%s: %w", e.cfg, err)
	}
	defer s.Close()
	if err := s.Exchange(time.Second); err != nil {
		return 0, 0, false, "", fmt.Errorf("%s: stream before the delta: %w", e.cfg, err)
	}
	type res struct {
		at  time.Time
		err error
	}
	probeC, streamC := make(chan res, 1), make(chan res, 1)
	go func() {
		at, err := FirstRefused(e.client.NSName, e.serverAddr(dpProbePort), "probe", 2*time.Millisecond, 150*time.Millisecond, 10*time.Second)
		probeC <- res{at, err}
	}()
	// Let probes flow (and be allowed) before the delta.
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	go func() {
		at, err := s.UntilDead(2*time.Millisecond, 150*time.Millisecond, cutWait)
		streamC <- res{at, err}
	}()
	rerr := e.revoke(ctx)
	p, st := <-probeC, <-streamC
	if rerr != nil {
		err = fmt.Errorf("%s: revoking delta: %w", e.cfg, rerr)
	} else if p.err != nil {
		err = fmt.Errorf("%s: new connections after the delta: %w", e.cfg, p.err)
	}
	if st.err != nil {
		notCut = fmt.Sprintf("%v; conntrack: %s", st.err, e.conntrackOf(dpStreamPort))
	}
	if rerr := e.restore(ctx); rerr != nil {
		return 0, 0, false, "", errors.Join(err, fmt.Errorf("%s: restoring: %w", e.cfg, rerr))
	}
	if werr := e.waitAllowed(10 * time.Second); werr != nil {
		return 0, 0, false, "", errors.Join(err, werr)
	}
	if err != nil {
		return 0, 0, false, "", err
	}
	if st.err != nil {
		return max(p.at.Sub(start), 0), 0, false, notCut, nil
	}
	return max(p.at.Sub(start), 0), max(st.at.Sub(start), 0), true, "", nil
}

// conntrackOf lists the node's conntrack entries from or to the server
// port, for failure messages.
func (e *dpEnv) conntrackOf(port int) string {
	var out []string
	for _, dir := range []string{"--dport", "--sport"} {
		b, _ := exec.Command("ip", "netns", "exec", e.topo.NodeNS, "conntrack", "-L", "-p", "tcp", dir, strconv.Itoa(port)).CombinedOutput()
		out = append(out, strings.TrimSpace(string(b)))
	}
	return strings.Join(out, " | ")
}

// stats describes the backend's counters, for failure messages.
func (e *dpEnv) stats() string {
	switch be := e.dp.(type) {
	case *nftables.Backend:
		return fmt.Sprintf("%+v", be.Stats())
	case *ebpf.Backend:
		return fmt.Sprintf("%+v", be.Stats())
	}
	return "iptables"
}

func (e *dpEnv) waitAllowed(max time.Duration) error {
	deadline := time.Now().Add(max)
	for {
		err := dptest.ProbeTCP(e.client, e.server.IP4, dpProbePort)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: flow still refused %s after restoring: %w", e.cfg, max, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dpSample is one configuration's measurements in one round.
type dpSample struct {
	bps, cps, evps, evcps float64
	// baseBps and baseCps are the adjacent no-filter run's.
	baseBps, baseCps      float64
	newConn, established  time.Duration
	hasEnforce, hasEvents bool
	cut                   bool
	connFailed            int64
}

// dpRun holds all rounds.
type dpRun struct {
	cfgs    []dpConfig
	envs    []*dpEnv
	samples [][]dpSample // [round][config]
	// loads is the 1-minute load average after each round.
	loads []float64
}

func loadAvg1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return f
}

type dpParams struct {
	rounds, iperfSeconds, workers int
	window                        time.Duration
	enforce                       bool
}

// measure runs iperf3 and the connection-rate tool once.
func (e *dpEnv) measure(t testing.TB, r int, p dpParams) (bps, cps float64, failed int64) {
	t.Helper()
	bps, err := e.iperf(p.iperfSeconds)
	if err != nil {
		t.Fatalf("round %d: %v", r, err)
	}
	cr, _, err := e.connRate(p.window, p.workers, false)
	if err != nil {
		t.Fatalf("round %d: %v", r, err)
	}
	if cr.Completed == 0 {
		t.Fatalf("round %d: %s: no connection completed (%d failed, first error %v)", r, e.cfg, cr.Failed, cr.FirstError)
	}
	if cr.Failed > 0 {
		t.Logf("round %d: %s: %d of %d connections failed, first error: %v", r, e.cfg, cr.Failed, cr.Failed+cr.Completed, cr.FirstError)
	}
	return bps, cr.PerSecond(), cr.Failed
}

// runRounds measures every configuration in every round, starting each
// round one configuration later than the previous one. Each filtered
// measurement is paired with a no-filter measurement taken right next to
// it (before it in even rounds, after it in odd ones), so that a ratio
// compares runs seconds apart rather than a minute apart on a machine
// whose load swings. envs[0] must be the no-filter configuration.
func runRounds(t testing.TB, envs []*dpEnv, p dpParams) *dpRun {
	t.Helper()
	if envs[0].cfg.Kind != kindNone {
		t.Fatalf("runRounds: first configuration is %s, want no filter", envs[0].cfg)
	}
	ctx := context.Background()
	run := &dpRun{envs: envs}
	for _, e := range envs {
		run.cfgs = append(run.cfgs, e.cfg)
	}
	filtered := len(envs) - 1
	for r := 0; r < p.rounds; r++ {
		row := make([]dpSample, len(envs))
		var nb, nc float64
		for k := 0; k < filtered; k++ {
			i := 1 + (r+k)%filtered
			e := envs[i]
			var s dpSample
			if r%2 == 0 {
				s.baseBps, s.baseCps, row[0].connFailed = envs[0].measure(t, r, p)
				s.bps, s.cps, s.connFailed = e.measure(t, r, p)
			} else {
				s.bps, s.cps, s.connFailed = e.measure(t, r, p)
				s.baseBps, s.baseCps, row[0].connFailed = envs[0].measure(t, r, p)
			}
			nb += s.baseBps
			nc += s.baseCps
			if e.ebpf != nil {
				cr, evps, err := e.connRate(p.window, p.workers, true)
				if err != nil {
					t.Fatalf("round %d: %v", r, err)
				}
				s.evps, s.evcps, s.hasEvents = evps, cr.PerSecond(), true
			}
			if p.enforce {
				nc, est, cut, why, err := e.enforcement(ctx)
				if err != nil {
					t.Fatalf("round %d: %v", r, err)
				}
				s.newConn, s.established, s.cut, s.hasEnforce = nc, est, cut, true
				if !cut {
					t.Logf("round %d: %s: established connection NOT cut by the revoking delta: %s", r, e.cfg, why)
				}
			}
			row[i] = s
		}
		// The no-filter row: the mean of the round's no-filter runs.
		row[0].bps, row[0].cps = nb/float64(filtered), nc/float64(filtered)
		row[0].baseBps, row[0].baseCps = row[0].bps, row[0].cps
		run.samples = append(run.samples, row)
		run.loads = append(run.loads, loadAvg1())
		t.Logf("round %d of %d done (load average %.1f)", r+1, p.rounds, run.loads[len(run.loads)-1])
	}
	return run
}

// stats of a sample list.
type spread struct{ med, min, max, q1, q3 float64 }

func summarize(xs []float64) spread {
	if len(xs) == 0 {
		return spread{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	q := func(f float64) float64 {
		// linear interpolation between closest ranks
		pos := f * float64(len(s)-1)
		lo := int(pos)
		if lo+1 >= len(s) {
			return s[lo]
		}
		return s[lo] + (pos-float64(lo))*(s[lo+1]-s[lo])
	}
	return spread{med: q(0.5), min: s[0], max: s[len(s)-1], q1: q(0.25), q3: q(0.75)}
}

func (s spread) ratio() string {
	return fmt.Sprintf("%.3f (IQR %.3f–%.3f, min–max %.3f–%.3f)", s.med, s.q1, s.q3, s.min, s.max)
}

// table renders the run as a Markdown table.
func (run *dpRun) table() string {
	var b strings.Builder
	n := len(run.samples)
	l := summarize(run.loads)
	fmt.Fprintf(&b, "%d rounds, 1-minute load average after a round %.1f–%.1f (median %.1f); each ratio is against the no-filter run right next to it in the same round: median (IQR, min–max); absolute medians are over all runs\n\n", n, l.min, l.max, l.med)
	b.WriteString("| Configuration | Programming | Throughput, median | Throughput ratio | Conn/s, median | Conn/s ratio | Delta → new conn refused, median (max) | Delta → established cut, median (max) | Ring-buffer events/s read, median (conn/s meanwhile) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for i, c := range run.cfgs {
		var bps, cps, rb, rc, evs, evc []float64
		var nc, est []float64
		enforced := 0
		for _, row := range run.samples {
			s := row[i]
			bps = append(bps, s.bps)
			cps = append(cps, s.cps)
			rb = append(rb, s.bps/s.baseBps)
			rc = append(rc, s.cps/s.baseCps)
			if s.hasEvents {
				evs = append(evs, s.evps)
				evc = append(evc, s.evcps)
			}
			if s.hasEnforce {
				nc = append(nc, float64(s.newConn.Microseconds())/1000)
				enforced++
				if s.cut {
					est = append(est, float64(s.established.Microseconds())/1000)
				}
			}
		}
		prog, tput, tr, conn, cr, ncs, ests, ev := "—", "", "1 (baseline)", "", "1 (baseline)", "—", "—", "—"
		if c.Kind == kindNone {
			// Every no-filter run, not the round means.
			bps, cps = nil, nil
			for _, row := range run.samples {
				for _, s := range row[1:] {
					bps = append(bps, s.baseBps)
					cps = append(cps, s.baseCps)
				}
			}
		}
		if c.Kind != kindNone {
			prog = run.envs[i].program.Round(time.Millisecond).String()
			tr = summarize(rb).ratio()
			cr = summarize(rc).ratio()
		}
		tput = fmt.Sprintf("%.2f Gbit/s", summarize(bps).med/1e9)
		conn = fmt.Sprintf("%.0f", summarize(cps).med)
		if len(nc) > 0 {
			a := summarize(nc)
			ncs = fmt.Sprintf("%.1f ms (%.1f)", a.med, a.max)
		}
		if len(est) > 0 {
			z := summarize(est)
			ests = fmt.Sprintf("%.1f ms (%.1f)", z.med, z.max)
		}
		if len(est) < enforced {
			ests += fmt.Sprintf("; **not cut within %s in %d of %d rounds**", cutWait, enforced-len(est), enforced)
		}
		if len(evs) > 0 {
			ev = fmt.Sprintf("%.0f (at %.0f conn/s)", summarize(evs).med, summarize(evc).med)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c, prog, tput, tr, conn, cr, ncs, ests, ev)
	}
	// eBPF flatness: 10k against 100 rules, paired by round.
	lo, hi := -1, -1
	for i, c := range run.cfgs {
		if c.Kind == kindEBPF && (lo < 0 || c.Rules < run.cfgs[lo].Rules) {
			lo = i
		}
		if c.Kind == kindEBPF && (hi < 0 || c.Rules > run.cfgs[hi].Rules) {
			hi = i
		}
	}
	if lo >= 0 && hi >= 0 && lo != hi {
		var rb, rc []float64
		for _, row := range run.samples {
			h, l := row[hi], row[lo]
			rb = append(rb, (h.bps/h.baseBps)/(l.bps/l.baseBps))
			rc = append(rc, (h.cps/h.baseCps)/(l.cps/l.baseCps))
		}
		fmt.Fprintf(&b, "\neBPF %d rules relative to %d rules (ratio of their no-filter ratios, by round): throughput %s; conn/s %s\n",
			run.cfgs[hi].Rules, run.cfgs[lo].Rules, summarize(rb).ratio(), summarize(rc).ratio())
	}
	b.WriteString("\nWhat each filter held:\n")
	for i, c := range run.cfgs {
		if c.Kind != kindNone {
			fmt.Fprintf(&b, "- %s: %s\n", c, run.envs[i].detail)
		}
	}
	return b.String()
}

//go:build linux

package dptest

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// TCPPorts and UDPPorts are the ports every pod's probe server listens on.
var (
	TCPPorts = []uint16{80, 443, 8080, 9000}
	UDPPorts = []uint16{53, 5353}
)

// ProbeTimeout bounds one probe; a dropped connection takes this long.
const ProbeTimeout = 1200 * time.Millisecond

// Pod is one pod namespace attached to the node.
type Pod struct {
	// Name is the endpoint name, "default/<name>".
	Name   string
	NSName string
	Path   string
	IP4    netip.Addr
	IP6    netip.Addr
	// HostIf is the node-side veth.
	HostIf string
}

// IPs returns the pod's addresses, sorted.
func (p *Pod) IPs() []netip.Addr { return []netip.Addr{p.IP4, p.IP6} }

// Prefixes returns the pod's host prefixes.
func (p *Pod) Prefixes() []netip.Prefix {
	return []netip.Prefix{netip.PrefixFrom(p.IP4, 32), netip.PrefixFrom(p.IP6, 128)}
}

// Topology is a node namespace forwarding between pod namespaces.
type Topology struct {
	NodeNS   string
	NodePath string
	Pods     []*Pod
}

func randSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// NewTopology creates a node namespace and n pod namespaces with routed
// veths: pod i has 10.244.0.(10+i)/32 and fd00:10:244::(10+i)/128, a
// default route via 169.254.1.1 and fe80::1 on the node side, and runs
// probe servers on TCPPorts and UDPPorts. Everything is removed when the
// test ends.
func NewTopology(t testing.TB, n int) *Topology {
	t.Helper()
	testenv.RequireRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		testenv.SkipOrFail(t, "iproute2 'ip' not found")
	}
	sfx := randSuffix()
	topo := &Topology{NodeNS: "bh-" + sfx + "-node"}
	topo.NodePath = netns.Path(topo.NodeNS)
	t.Cleanup(func() {
		for _, p := range topo.Pods {
			if err := netns.Delete(p.NSName); err != nil {
				t.Errorf("deleting netns %s: %v", p.NSName, err)
			}
		}
		if err := netns.Delete(topo.NodeNS); err != nil {
			t.Errorf("deleting netns %s: %v", topo.NodeNS, err)
		}
	})
	if err := netns.Create(topo.NodeNS); err != nil {
		t.Fatalf("creating node netns: %v", err)
	}
	node := topo.NodeNS
	steps := [][]string{
		{"-n", node, "addr", "add", "169.254.1.1/32", "dev", "lo"},
	}
	for i := 1; i <= n; i++ {
		p := &Pod{
			Name:   fmt.Sprintf("default/pod-%c", 'a'+i-1),
			NSName: fmt.Sprintf("bh-%s-p%d", sfx, i),
			IP4:    netip.AddrFrom4([4]byte{10, 244, 0, byte(10 + i)}),
			IP6:    netip.MustParseAddr(fmt.Sprintf("fd00:10:244::%d", 10+i)),
			HostIf: fmt.Sprintf("h%sp%d", sfx, i),
		}
		p.Path = netns.Path(p.NSName)
		topo.Pods = append(topo.Pods, p)
		if err := netns.Create(p.NSName); err != nil {
			t.Fatalf("creating pod netns: %v", err)
		}
		steps = append(steps,
			[]string{"-n", node, "link", "add", p.HostIf, "type", "veth", "peer", "name", "eth0", "netns", p.NSName},
			[]string{"-n", node, "link", "set", p.HostIf, "up"},
			[]string{"-n", p.NSName, "link", "set", "eth0", "up"},
			[]string{"-n", p.NSName, "addr", "add", p.IP4.String() + "/32", "dev", "eth0"},
			[]string{"-n", p.NSName, "-6", "addr", "add", p.IP6.String() + "/128", "dev", "eth0", "nodad"},
			[]string{"-n", p.NSName, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"},
			[]string{"-n", p.NSName, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"},
			[]string{"-n", node, "route", "add", p.IP4.String() + "/32", "dev", p.HostIf},
			[]string{"-n", node, "-6", "addr", "add", "fe80::1/64", "dev", p.HostIf, "nodad"},
			[]string{"-n", p.NSName, "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0"},
			[]string{"-n", node, "-6", "route", "add", p.IP6.String() + "/128", "dev", p.HostIf},
		)
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			t.Fatalf("building topology: %v", err)
		}
	}
	for _, p := range topo.Pods {
		if err := sysctl(p.Path, "net/ipv4/conf/eth0/arp_notify", "0"); err != nil {
			t.Fatal(err)
		}
	}
	for _, kv := range [][2]string{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv6/conf/all/forwarding", "1"},
	} {
		if err := sysctl(topo.NodePath, kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range topo.Pods {
		startServers(t, p)
	}
	// Warm up neighbour entries so that the first probes do not wait.
	for _, a := range topo.Pods {
		for _, b := range topo.Pods {
			if a != b {
				_ = ProbeTCP(a, b.IP4, 80)
				_ = ProbeTCP(a, b.IP6, 80)
			}
		}
	}
	return topo
}

func sysctl(nsPath, key, val string) error {
	return netns.Do(nsPath, func() error {
		return writeProc("/proc/sys/"+key, val)
	})
}

// Pod returns the pod with the given endpoint name.
func (t *Topology) Pod(name string) *Pod {
	for _, p := range t.Pods {
		if p.Name == name {
			return p
		}
	}
	return nil
}

func startServers(t testing.TB, p *Pod) {
	t.Helper()
	var lns []net.Listener
	var pcs []net.PacketConn
	err := netns.Do(p.Path, func() error {
		for _, port := range TCPPorts {
			ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
			if err != nil {
				return fmt.Errorf("listening on tcp %d in %s: %w", port, p.NSName, err)
			}
			lns = append(lns, ln)
		}
		for _, port := range UDPPorts {
			pc, err := net.ListenPacket("udp", fmt.Sprintf(":%d", port))
			if err != nil {
				return fmt.Errorf("listening on udp %d in %s: %w", port, p.NSName, err)
			}
			pcs = append(pcs, pc)
		}
		return nil
	})
	t.Cleanup(func() {
		for _, l := range lns {
			l.Close()
		}
		for _, c := range pcs {
			c.Close()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range lns {
		go ServeTCP(ln)
	}
	for _, pc := range pcs {
		go serveUDP(pc)
	}
}

// ServeTCP is the line-echo server behind every pod's TCP probe port: it
// accepts connections on ln until ln is closed and answers each line read
// on a connection with "ok " and the line (what Exchange expects). Each
// connection is served on its own goroutine and closed when the peer
// closes or a write fails. Callers run it on a goroutine and close ln in
// t.Cleanup:
//
//	go dptest.ServeTCP(ln)
func ServeTCP(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if _, err := c.Write([]byte("ok " + line)); err != nil {
					return
				}
			}
		}()
	}
}

func serveUDP(pc net.PacketConn) {
	buf := make([]byte, 1500)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = pc.WriteTo(append([]byte("ok "), buf[:n]...), addr)
	}
}

// Source ports. Every probe and every dialed connection binds a source
// port of its own, counted up from srcPortLow and below the kernel's
// ephemeral range (32768 and up), so that no two flows of a test run share
// a 5-tuple. A reused tuple is not a new flow: connection tracking (the
// kernel's, or a backend's own) still holds the earlier flow's entry for
// up to minutes (UDP: 30-120 s), and its packets pass on that entry
// whatever the current policy says, unless the change cut connections.
// The table's oracle (Evaluate on the current policy) judges new flows
// only, so a reused tuple made a UDP probe pass that the policy denies.
const (
	srcPortLow  = 10000
	srcPortHigh = 32767
)

var srcPort atomic.Uint32

// nextSrcPort returns a source port no probe of this process used
// recently (they repeat after srcPortHigh-srcPortLow+1 flows).
func nextSrcPort() int {
	return srcPortLow + int((srcPort.Add(1)-1)%(srcPortHigh-srcPortLow+1))
}

// dial connects from the pod with a fresh source port; a port still held
// by a socket of an earlier flow (TIME_WAIT) is skipped.
func dial(from *Pod, network string, addr netip.Addr, port uint16) (net.Conn, error) {
	var c net.Conn
	err := netns.Do(from.Path, func() error {
		var err error
		for try := 0; try < 8; try++ {
			sp := nextSrcPort()
			d := net.Dialer{Timeout: ProbeTimeout, Control: reuseAddr}
			if network == "udp" {
				d.LocalAddr = &net.UDPAddr{Port: sp}
			} else {
				d.LocalAddr = &net.TCPAddr{Port: sp}
			}
			c, err = d.Dial(network, netip.AddrPortFrom(addr, port).String())
			if !errors.Is(err, syscall.EADDRINUSE) && !errors.Is(err, syscall.EADDRNOTAVAIL) {
				return err
			}
		}
		return err
	})
	return c, err
}

// reuseAddr lets a source port be bound again while a closed connection
// of another 4-tuple still holds it in TIME_WAIT.
func reuseAddr(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	}); err != nil {
		return err
	}
	return serr
}

// ProbeTCP reports whether a new TCP connection from the pod to addr:port
// (from a source port of its own) completes a handshake and one request
// and reply.
func ProbeTCP(from *Pod, addr netip.Addr, port uint16) error {
	c, err := dial(from, "tcp", addr, port)
	if err != nil {
		return err
	}
	defer c.Close()
	return Exchange(c, ProbeTimeout)
}

// Exchange sends one line on c and waits up to timeout for the reply.
func Exchange(c net.Conn, timeout time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(buf[:n]), "ok ") {
		return fmt.Errorf("unexpected reply %q", buf[:n])
	}
	return nil
}

// DialTCP opens a TCP connection from the pod (from a source port of its
// own) and leaves it open.
func DialTCP(from *Pod, addr netip.Addr, port uint16) (net.Conn, error) {
	return dial(from, "tcp", addr, port)
}

// DialUDP opens a connected UDP socket from the pod (from a source port of
// its own): every Exchange on it is a packet of one UDP flow.
func DialUDP(from *Pod, addr netip.Addr, port uint16) (net.Conn, error) {
	return dial(from, "udp", addr, port)
}

// ProbeUDP reports whether a UDP datagram of a new flow from the pod to
// addr:port gets the server's reply.
func ProbeUDP(from *Pod, addr netip.Addr, port uint16) error {
	c, err := dial(from, "udp", addr, port)
	if err != nil {
		return err
	}
	defer c.Close()
	return Exchange(c, ProbeTimeout)
}

// Probe is one connection attempt between two pods.
type Probe struct {
	From, To *Pod
	V6       bool
	Proto    ir.Protocol
	Port     uint16
}

func (p Probe) String() string {
	fam := "v4"
	if p.V6 {
		fam = "v6"
	}
	return fmt.Sprintf("%s -> %s %s %v/%d", p.From.Name, p.To.Name, fam, p.Proto, p.Port)
}

// Dst returns the probed address.
func (p Probe) Dst() netip.Addr {
	if p.V6 {
		return p.To.IP6
	}
	return p.To.IP4
}

// Src returns the probing pod's address of the probed family.
func (p Probe) Src() netip.Addr {
	if p.V6 {
		return p.From.IP6
	}
	return p.From.IP4
}

// Run sends the probe and reports whether the exchange completed.
func (p Probe) Run() bool {
	var err error
	switch p.Proto {
	case ir.TCP:
		err = ProbeTCP(p.From, p.Dst(), p.Port)
	case ir.UDP:
		err = ProbeUDP(p.From, p.Dst(), p.Port)
	default:
		err = errors.New("unsupported protocol")
	}
	return err == nil
}

// RunAll runs probes in parallel and returns their outcomes in order.
func RunAll(ps []Probe) []bool {
	out := make([]bool, len(ps))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i := range ps {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = ps[i].Run()
		}()
	}
	wg.Wait()
	return out
}

// Expected returns what np allows for a probe between two local
// endpoints: the source's egress and the destination's ingress must both
// allow it.
func Expected(np *ir.NodePolicy, p Probe) bool {
	if ep := np.Endpoint(p.From.Name); ep != nil {
		if !np.Evaluate(&ep.Egress, p.Dst(), p.Proto, p.Port).Allowed {
			return false
		}
	}
	if ep := np.Endpoint(p.To.Name); ep != nil {
		if !np.Evaluate(&ep.Ingress, p.Src(), p.Proto, p.Port).Allowed {
			return false
		}
	}
	return true
}

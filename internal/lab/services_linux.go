package lab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// ApplyProxy loads an nft script (ProxyRuleset or ProxyTeardown) into a
// node namespace of the lab in one `nft -f` transaction.
func ApplyProxy(ctx context.Context, nodeNetns, script string) error {
	if !strings.HasPrefix(nodeNetns, "bh-") {
		return fmt.Errorf("service proxy: refusing netns %q: not a lab namespace", nodeNetns)
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", nodeNetns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("service proxy in %s: nft -f: %w: %s", nodeNetns, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// DNSServer answers DNS over UDP and TCP port 53 inside one pod namespace
// from a zone that can be replaced while it runs.
type DNSServer struct {
	mu   sync.RWMutex
	zone *DNSZone
	pc   net.PacketConn
	ln   net.Listener
	wg   sync.WaitGroup
}

// ServeDNS starts a responder in podNetns on addr (":53" for kube-dns).
func ServeDNS(podNetns, addr string, zone *DNSZone) (*DNSServer, error) {
	s := &DNSServer{zone: zone}
	err := netns.Do(netns.Path(podNetns), func() error {
		var err error
		if s.pc, err = net.ListenPacket("udp", addr); err != nil {
			return err
		}
		if s.ln, err = net.Listen("tcp", addr); err != nil {
			s.pc.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dns server in %s on %s: %w", podNetns, addr, err)
	}
	s.wg.Add(2)
	go s.serveUDP()
	go s.serveTCP()
	return s, nil
}

// SetZone replaces the records the server answers from.
func (s *DNSServer) SetZone(z *DNSZone) {
	s.mu.Lock()
	s.zone = z
	s.mu.Unlock()
}

func (s *DNSServer) answer(q []byte) ([]byte, error) {
	s.mu.RLock()
	z := s.zone
	s.mu.RUnlock()
	return z.Answer(q)
}

func (s *DNSServer) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp, err := s.answer(buf[:n]); err == nil {
			_, _ = s.pc.WriteTo(resp, from)
		}
	}
}

func (s *DNSServer) serveTCP() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			for {
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				q := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(c, q); err != nil {
					return
				}
				resp, err := s.answer(q)
				if err != nil {
					return
				}
				if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(resp))), resp...)); err != nil {
					return
				}
			}
		}()
	}
}

// Close stops the server.
func (s *DNSServer) Close() error {
	err := errors.Join(s.pc.Close(), s.ln.Close())
	s.wg.Wait()
	return err
}

// Resolve looks name up from inside podNetns as the pod's resolver would:
// over UDP to server (e.g. KubeDNSIP:53), trying the search names of
// namespace in order, and returns the IPv4 addresses of the first name
// that exists.
func Resolve(podNetns string, server netip.AddrPort, namespace, name string, timeout time.Duration) ([]netip.Addr, error) {
	var addrs []netip.Addr
	err := netns.Do(netns.Path(podNetns), func() error {
		for _, fq := range DNSSearchNames(name, namespace) {
			id := uint16(rand.N(1 << 16))
			q, err := BuildDNSQuery(id, fq, DNSTypeA)
			if err != nil {
				return err
			}
			c, err := net.DialTimeout("udp", server.String(), timeout)
			if err != nil {
				return err
			}
			_ = c.SetDeadline(time.Now().Add(timeout))
			buf := make([]byte, 1500)
			_, err = c.Write(q)
			var n int
			if err == nil {
				n, err = c.Read(buf)
			}
			c.Close()
			if err != nil {
				return fmt.Errorf("query %s to %s: %w", fq, server, err)
			}
			rcode, got, err := ParseDNSResponse(buf[:n], id)
			if err != nil {
				return fmt.Errorf("query %s to %s: %w", fq, server, err)
			}
			if rcode == DNSRcodeNXDomain {
				continue
			}
			if rcode != DNSRcodeOK {
				return fmt.Errorf("query %s to %s: rcode %d", fq, server, rcode)
			}
			addrs = got
			return nil
		}
		return fmt.Errorf("%s: no such name (NXDOMAIN for every search name)", name)
	})
	if err != nil {
		return nil, fmt.Errorf("resolving %q in %s: %w", name, podNetns, err)
	}
	return addrs, nil
}

// ProbeAddr connects over TCP from inside podNetns to addr (a pod IP or a
// ClusterIP with its port), sends a probe line as `lab probe` does and
// returns the server's identity: the "namespace/name" of the pod whose
// probe server answered, so a probe through a Service names the backend.
func ProbeAddr(podNetns string, addr netip.AddrPort, timeout time.Duration) (string, error) {
	var id string
	err := netns.Do(netns.Path(podNetns), func() error {
		c, err := net.DialTimeout("tcp", addr.String(), timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		if _, err := fmt.Fprintf(c, "%s %s\n", probeRequest, podNetns); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return fmt.Errorf("reading the reply: %w", err)
		}
		got, ok := strings.CutPrefix(strings.TrimSpace(line), "ok ")
		if !ok {
			return fmt.Errorf("unexpected reply %q", line)
		}
		id = got
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("probe from %s to %s: %w", podNetns, addr, err)
	}
	return id, nil
}

// ProbeName resolves name through the DNS server at dns (the pod's
// resolver: search path of namespace) and probes the first address on
// port, returning the answering pod's identity.
func ProbeName(podNetns string, dns netip.AddrPort, namespace, name string, port uint16, timeout time.Duration) (string, error) {
	addrs, err := Resolve(podNetns, dns, namespace, name, timeout)
	if err != nil {
		return "", err
	}
	if len(addrs) == 0 {
		return "", fmt.Errorf("resolving %q in %s: no IPv4 address", name, podNetns)
	}
	return ProbeAddr(podNetns, netip.AddrPortFrom(addrs[0], port), timeout)
}

// OpenConnections opens n TCP connections from inside podNetns to addr
// and keeps them open until the returned close function is called. A
// successful dial means the handshake completed end to end (through any
// DNAT). Point it at a HoldServer: the probe servers close a connection
// after one reply. It stops at the first failure and closes what it
// opened.
func OpenConnections(podNetns string, addr netip.AddrPort, n int, timeout time.Duration) (closeAll func() error, err error) {
	conns := make([]net.Conn, 0, n)
	closeAll = func() error {
		var errs []error
		for _, c := range conns {
			errs = append(errs, c.Close())
		}
		conns = nil
		return errors.Join(errs...)
	}
	err = netns.Do(netns.Path(podNetns), func() error {
		for i := 0; i < n; i++ {
			c, err := net.DialTimeout("tcp", addr.String(), timeout)
			if err != nil {
				return fmt.Errorf("connection %d: %w", i, err)
			}
			conns = append(conns, c)
		}
		return nil
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("opening %d connections from %s to %s: %w", n, podNetns, addr, err), closeAll())
	}
	return closeAll, nil
}

// HoldServer accepts TCP connections in a pod namespace and keeps each
// open until the peer closes it, for long-lived connection tests.
type HoldServer struct {
	ln    net.Listener
	mu    sync.Mutex
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// ServeHold starts a HoldServer in podNetns on addr (e.g. ":7000").
func ServeHold(podNetns, addr string) (*HoldServer, error) {
	s := &HoldServer{conns: map[net.Conn]bool{}}
	err := netns.Do(netns.Path(podNetns), func() error {
		var err error
		s.ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("hold server in %s on %s: %w", podNetns, addr, err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			go func() {
				_, _ = io.Copy(io.Discard, c)
				c.Close()
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
		}
	}()
	return s, nil
}

// Open is how many accepted connections are open now.
func (s *HoldServer) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Close stops accepting and closes every held connection.
func (s *HoldServer) Close() error {
	err := s.ln.Close()
	s.wg.Wait()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	return err
}

// KubeDNSLabel is the label (value "kube-dns") that makes a kube-system pod
// of the lab run the DNS responder instead of probe servers.
const KubeDNSLabel = "k8s-app"

// ExternalNamesFile is DIR/external-names.json: a JSON object from a fully
// qualified name to the addresses the lab's kube-dns answers for it.
func (l Layout) ExternalNames() string { return filepath.Join(l.Dir, "external-names.json") }

// zoneFromAPI builds the kube-dns zone from the lab's Services (ClusterIP
// Services by name) and DIR/external-names.json.
func zoneFromAPI(ctx context.Context, dir string) (*DNSZone, error) {
	cs, err := labClientset(dir)
	if err != nil {
		return nil, err
	}
	svcs, err := cs.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing services: %w", err)
	}
	z := &DNSZone{Records: map[string][]netip.Addr{}}
	for _, s := range svcs.Items {
		if a, err := netip.ParseAddr(s.Spec.ClusterIP); err == nil {
			z.Records[ServiceDNSName(s.Namespace, s.Name)] = []netip.Addr{a}
		}
	}
	if b, err := os.ReadFile(Layout{dir}.ExternalNames()); err == nil {
		var ext map[string][]netip.Addr
		if err := json.Unmarshal(b, &ext); err != nil {
			return nil, fmt.Errorf("reading %s: %w", Layout{dir}.ExternalNames(), err)
		}
		for n, as := range ext {
			z.Records[strings.ToLower(strings.TrimSuffix(n, "."))+"."] = as
		}
	}
	return z, nil
}

// EnableDNS adds the kube-dns stand-in to the running lab: a pod
// kube-system/kube-dns-0 (label k8s-app=kube-dns) in which the probe server
// daemon runs the DNS responder, and the Service kube-system/kube-dns with
// ClusterIP KubeDNSIP on port 53 UDP and TCP. external maps extra names to
// addresses (they must be lab addresses). It returns once a query for
// kube-dns.kube-system.svc.cluster.local through the ClusterIP is answered.
func EnableDNS(ctx context.Context, dir string, external map[string][]netip.Addr) error {
	if len(external) > 0 {
		b, err := json.Marshal(external)
		if err != nil {
			return fmt.Errorf("external names: %w", err)
		}
		if err := writeFileAtomic(Layout{dir}.ExternalNames(), b, 0o600); err != nil {
			return err
		}
	}
	st, err := LoadState(dir)
	if err != nil {
		return err
	}
	pp, ok := st.Plan.Pod("kube-system/kube-dns-0")
	if !ok {
		pp, err = AddPod(ctx, dir, PodInput{Namespace: "kube-system", Name: "kube-dns-0",
			Labels: map[string]string{KubeDNSLabel: "kube-dns"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "dns", Image: ProbeImage, Ports: []corev1.ContainerPort{
				{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}, {Name: "dns-tcp", ContainerPort: 53}}}}},
		}, 0, nil)
		if err != nil {
			return fmt.Errorf("kube-dns: %w", err)
		}
	}
	if _, err := ApplyService(ctx, dir, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns", Labels: map[string]string{KubeDNSLabel: "kube-dns"}},
		Spec: corev1.ServiceSpec{ClusterIP: KubeDNSIP.String(), Selector: map[string]string{KubeDNSLabel: "kube-dns"},
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromString("dns")},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("dns-tcp")}}},
	}); err != nil {
		return fmt.Errorf("kube-dns: %w", err)
	}
	// Ask from another pod: a pod reaching itself through its own
	// ClusterIP would need hairpin masquerading, which the proxy lacks.
	from := ""
	for _, p := range st.Plan.Pods {
		if p.Netns != pp.Netns {
			from = p.Netns
			break
		}
	}
	if from == "" {
		return nil
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := Resolve(from, netip.AddrPortFrom(KubeDNSIP, 53), "kube-system", "kube-dns", 300*time.Millisecond)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-dns did not answer within 15s: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

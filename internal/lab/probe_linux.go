package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// ProbeMatrix measures reachability with real packets from every pod
// namespace to every other pod's IPv4 (or, with IPv6, IPv6) address, for
// every probe, and
// returns the matrix sorted by src, dst, protocol, port. A cell is
// allowed when a TCP exchange or UDP request/reply completed with the
// right pod answering, or when an SCTP INIT arrived at the destination's
// raw listener.
func ProbeMatrix(ctx context.Context, pods []PodPlan, probes []Probe, opts ProbeOptions) ([]Entry, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 600 * time.Millisecond
	}
	if opts.Workers <= 0 {
		opts.Workers = 32
	}
	served := map[Probe]bool{}
	for _, p := range opts.Served {
		served[p] = true
	}
	var extra []Probe
	hasSCTP := false
	for _, p := range probes {
		switch {
		case p.Protocol == "SCTP":
			hasSCTP = true
		case !served[p]:
			extra = append(extra, p)
		}
	}
	if len(extra) > 0 {
		l, err := Listen(pods, extra)
		if err != nil {
			return nil, err
		}
		defer l.Close()
	}
	var sctp *sctpListeners
	if hasSCTP {
		var err error
		sctp, err = openSCTPListeners(pods, opts.IPv6)
		if err != nil {
			return nil, err
		}
		defer sctp.Close()
	}

	type job struct {
		src, dst PodPlan
		probe    Probe
		idx      int
	}
	var jobs []job
	for _, s := range pods {
		for _, d := range pods {
			if s.Key() == d.Key() {
				continue
			}
			for _, p := range probes {
				jobs = append(jobs, job{s, d, p, len(jobs)})
			}
		}
	}
	out := make([]Entry, len(jobs))
	ch := make(chan job)
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	for w := 0; w < min(opts.Workers, max(len(jobs), 1)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				ok, err := probeOne(j.src, j.dst, j.probe, opts.Timeout, opts.IPv6, sctp)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
				}
				v := VerdictDenied
				if ok {
					v = VerdictAllowed
				}
				out[j.idx] = Entry{Src: j.src.Key(), Dst: j.dst.Key(), Protocol: j.probe.Protocol, Port: j.probe.Port, Allowed: ok, Verdict: v}
			}
		}()
	}
	for _, j := range jobs {
		if ctx.Err() != nil {
			break
		}
		ch <- j
	}
	close(ch)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if firstErr != nil {
		return nil, firstErr
	}
	SortEntries(out)
	return out, nil
}

// probeOne returns whether the flow got through. Errors are for failures
// of the probe machinery itself (a namespace that cannot be entered), not
// for blocked traffic.
func probeOne(src, dst PodPlan, p Probe, timeout time.Duration, v6 bool, sctp *sctpListeners) (bool, error) {
	ip, family := dst.IP, "4"
	if v6 {
		ip, family = dst.IP6, "6"
	}
	addr := net.JoinHostPort(ip.String(), strconv.Itoa(p.Port))
	switch p.Protocol {
	case "TCP":
		return probeTCP(src, dst, addr, "tcp"+family, timeout)
	case "UDP":
		return probeUDP(src, dst, addr, "udp"+family, timeout)
	case "SCTP":
		return sctp.probe(src, dst, p.Port, timeout)
	}
	return false, fmt.Errorf("probe %s: unknown protocol", p)
}

func probeTCP(src, dst PodPlan, addr, network string, timeout time.Duration) (bool, error) {
	var ok bool
	err := netns.Do(netns.Path(src.Netns), func() error {
		deadline := time.Now().Add(timeout)
		c, err := net.DialTimeout(network, addr, timeout)
		if err != nil {
			return nil
		}
		defer c.Close()
		_ = c.SetDeadline(deadline)
		if _, err := fmt.Fprintf(c, "%s %s\n", probeRequest, src.Key()); err != nil {
			return nil
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		ok = strings.TrimSpace(line) == "ok "+dst.Key()
		return nil
	})
	return ok, err
}

func probeUDP(src, dst PodPlan, addr, network string, timeout time.Duration) (bool, error) {
	var ok bool
	err := netns.Do(netns.Path(src.Netns), func() error {
		c, err := net.Dial(network, addr)
		if err != nil {
			return fmt.Errorf("udp socket in %s: %w", src.Netns, err)
		}
		defer c.Close()
		want := "ok " + dst.Key()
		buf := make([]byte, 512)
		// Two tries, half the budget each, in case the first datagram
		// waited for neighbour resolution.
		for try := 0; try < 2 && !ok; try++ {
			if _, err := fmt.Fprintf(c, "%s %s\n", probeRequest, src.Key()); err != nil {
				return nil
			}
			_ = c.SetReadDeadline(time.Now().Add(timeout / 2))
			for {
				n, err := c.Read(buf)
				if err != nil {
					break
				}
				if strings.TrimSpace(string(buf[:n])) == want {
					ok = true
					break
				}
			}
		}
		return nil
	})
	return ok, err
}

// sctpListeners holds one raw IP protocol-132 socket per pod namespace
// and records which INIT tags arrived where.
type sctpListeners struct {
	v6      bool
	mu      sync.Mutex
	arrived map[uint32]string // initiate tag -> pod key it arrived at
	waiters map[uint32]chan struct{}
	fds     []int
	stop    atomic.Bool
	wg      sync.WaitGroup
	nextTag atomic.Uint32
}

func openSCTPListeners(pods []PodPlan, v6 bool) (*sctpListeners, error) {
	s := &sctpListeners{v6: v6, arrived: map[uint32]string{}, waiters: map[uint32]chan struct{}{}}
	family := unix.AF_INET
	if v6 {
		family = unix.AF_INET6
	}
	s.nextTag.Store(rand.Uint32() | 1)
	for _, pod := range pods {
		var fd int
		err := netns.Do(netns.Path(pod.Netns), func() error {
			var err error
			fd, err = unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
			return err
		})
		if err != nil {
			return nil, errors.Join(fmt.Errorf("raw SCTP socket in %s: %w", pod.Netns, err), s.Close())
		}
		tv := unix.Timeval{Usec: 100000}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return nil, errors.Join(fmt.Errorf("raw SCTP socket timeout: %w", err), s.Close())
		}
		s.fds = append(s.fds, fd)
		key := pod.Key()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.read(fd, key)
		}()
	}
	return s, nil
}

func (s *sctpListeners) read(fd int, key string) {
	buf := make([]byte, 2048)
	for !s.stop.Load() {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			continue // timeout or EINTR: check stop
		}
		// AF_INET raw sockets deliver the IPv4 header, AF_INET6 ones
		// only the payload.
		payload := buf[:n]
		if !s.v6 {
			if payload, err = stripIPv4Header(payload); err != nil {
				continue
			}
		}
		info, err := ParseSCTPInit(payload)
		if err != nil {
			continue
		}
		s.mu.Lock()
		if _, seen := s.arrived[info.Tag]; !seen {
			s.arrived[info.Tag] = key + "/" + strconv.Itoa(int(info.DstPort))
			if w, ok := s.waiters[info.Tag]; ok {
				close(w)
			}
		}
		s.mu.Unlock()
	}
}

// Close stops the readers and closes the sockets.
func (s *sctpListeners) Close() error {
	s.stop.Store(true)
	s.wg.Wait()
	for _, fd := range s.fds {
		unix.Close(fd)
	}
	s.fds = nil
	return nil
}

func (s *sctpListeners) probe(src, dst PodPlan, port int, timeout time.Duration) (bool, error) {
	if s == nil {
		return false, errors.New("sctp probe without listeners")
	}
	tag := s.nextTag.Add(2)
	w := make(chan struct{})
	s.mu.Lock()
	s.waiters[tag] = w
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.waiters, tag)
		s.mu.Unlock()
	}()
	srcPort := uint16(32768 + rand.IntN(28000))
	pkt := SCTPInit(srcPort, uint16(port), tag)
	family := unix.AF_INET
	var to unix.Sockaddr = &unix.SockaddrInet4{Addr: dst.IP.As4()}
	if s.v6 {
		family = unix.AF_INET6
		to = &unix.SockaddrInet6{Addr: dst.IP6.As16()}
	}
	send := func() error {
		return netns.Do(netns.Path(src.Netns), func() error {
			fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
			if err != nil {
				return fmt.Errorf("raw SCTP socket in %s: %w", src.Netns, err)
			}
			defer unix.Close(fd)
			// A refused send (e.g. a local reject rule) means "not
			// allowed", not a machinery failure.
			_ = unix.Sendto(fd, pkt, 0, to)
			return nil
		})
	}
	for try := 0; try < 2; try++ {
		if err := send(); err != nil {
			return false, err
		}
		select {
		case <-w:
			s.mu.Lock()
			at := s.arrived[tag]
			s.mu.Unlock()
			return at == dst.Key()+"/"+strconv.Itoa(port), nil
		case <-time.After(timeout / 2):
		}
	}
	return false, nil
}

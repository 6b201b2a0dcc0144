package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// probeRequest is the line a probe client sends; the server answers
// "ok <ns/pod>\n" so the client can check it reached the right pod.
const probeRequest = "bulkhead-probe"

// Listeners are the probe sockets open in pod namespaces.
type Listeners struct {
	mu     sync.Mutex
	closed bool
	closes []func() error
	wg     sync.WaitGroup
}

// Close stops every listener and waits for their goroutines.
func (l *Listeners) Close() error {
	l.mu.Lock()
	l.closed = true
	cs := l.closes
	l.closes = nil
	l.mu.Unlock()
	var errs []error
	for _, c := range cs {
		if err := c(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	l.wg.Wait()
	return errors.Join(errs...)
}

// Listen opens, inside each pod's namespace, a TCP and/or UDP listener
// on every given port (SCTP probes are skipped: the kernel has no SCTP
// sockets; see RawSCTPListener). Sockets stay in the namespace they were
// created in, so serving happens on ordinary goroutines.
func Listen(pods []PodPlan, ports []Probe) (*Listeners, error) {
	l := &Listeners{}
	for _, pod := range pods {
		for _, pr := range ports {
			if err := l.listenOne(pod, pr); err != nil {
				return nil, errors.Join(err, l.Close())
			}
		}
	}
	return l, nil
}

func (l *Listeners) listenOne(pod PodPlan, pr Probe) error {
	return l.listenOn(pod.Netns, pod.Key(), "", pr)
}

// listenOn opens the probe listener for pr in namespace ns on host (""
// for the wildcard address); it answers as id.
func (l *Listeners) listenOn(ns, id, host string, pr Probe) error {
	pod := PodPlan{Netns: ns}
	addr := net.JoinHostPort(host, strconv.Itoa(pr.Port))
	switch pr.Protocol {
	case "TCP":
		var ln net.Listener
		err := netns.Do(netns.Path(pod.Netns), func() error {
			var err error
			ln, err = net.Listen("tcp", addr)
			return err
		})
		if err != nil {
			return fmt.Errorf("listening on TCP/%d in %s: %w", pr.Port, pod.Netns, err)
		}
		l.add(ln.Close)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			serveTCP(ln, id)
		}()
	case "UDP":
		var pc net.PacketConn
		err := netns.Do(netns.Path(pod.Netns), func() error {
			var err error
			pc, err = net.ListenPacket("udp", addr)
			return err
		})
		if err != nil {
			return fmt.Errorf("listening on UDP/%d in %s: %w", pr.Port, pod.Netns, err)
		}
		l.add(pc.Close)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			serveUDP(pc, id)
		}()
	}
	return nil
}

func (l *Listeners) add(c func() error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closes = append(l.closes, c)
}

func serveTCP(ln net.Listener, id string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil && line == "" {
				return
			}
			_ = line
			_, _ = fmt.Fprintf(c, "ok %s\n", id)
		}()
	}
}

func serveUDP(pc net.PacketConn, id string) {
	buf := make([]byte, 2048)
	reply := []byte("ok " + id + "\n")
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		_, _ = pc.WriteTo(reply, from)
	}
}

// ServeProbes runs the probe server daemon: it loads the state in dir,
// listens on the served ports in every pod namespace, writes
// DIR/probes.ready, and serves until ctx ends. It rereads the state every
// 100ms, so pods added to or removed from the running lab (AddPod,
// RemovePod) gain or lose their listeners.
func ServeProbes(ctx context.Context, dir string) error {
	st, err := LoadState(dir)
	if err != nil {
		return err
	}
	per := map[string]*Listeners{} // by pod netns
	defer func() {
		for _, l := range per {
			_ = l.Close()
		}
	}()
	for _, pod := range st.Plan.Pods {
		l, err := Listen([]PodPlan{pod}, st.ServedPorts)
		if err != nil {
			return fmt.Errorf("probe server: %w", err)
		}
		per[nsKey(pod.Netns)] = l
	}
	var names []string
	for _, p := range st.ServedPorts {
		names = append(names, p.String())
	}
	if err := writeFileAtomic(Layout{dir}.ProbesReady(), []byte(strings.Join(names, ",")+"\n"), 0o600); err != nil {
		return err
	}
	fmt.Printf("probe server: listening on %s in %d pod namespaces\n", strings.Join(names, ","), len(st.Plan.Pods))
	dnsPods := map[string]*DNSServer{}
	var zoneAt time.Time
	zone := &DNSZone{} // the latest zone, for responders started later
	defer func() {
		for _, srv := range dnsPods {
			_ = srv.Close()
		}
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		cur, err := LoadState(dir)
		if err != nil {
			continue // mid-write or being torn down; try again
		}
		want := map[string]bool{}
		for _, pod := range cur.Plan.Pods {
			key := nsKey(pod.Netns)
			want[key] = true
			if per[key] != nil || dnsPods[key] != nil {
				continue
			}
			if pod.Namespace == "kube-system" && pod.Labels[KubeDNSLabel] == "kube-dns" {
				srv, err := ServeDNS(pod.Netns, ":53", zone)
				if err != nil {
					fmt.Printf("probe server: kube-dns pod %s: %v\n", pod.Key(), err)
					continue
				}
				dnsPods[key] = srv
				// Probe servers on the other served ports, so the
				// kube-dns pod answers probes like any pod.
				if l, err := Listen([]PodPlan{pod}, withoutPort(cur.ServedPorts, 53)); err == nil {
					per[key] = l
				} else {
					fmt.Printf("probe server: kube-dns pod %s: %v\n", pod.Key(), err)
				}
				fmt.Printf("probe server: kube-dns in added pod %s\n", pod.Key())
				continue
			}
			l, err := Listen([]PodPlan{pod}, cur.ServedPorts)
			if err != nil {
				fmt.Printf("probe server: pod %s: %v\n", pod.Key(), err)
				continue
			}
			per[key] = l
			fmt.Printf("probe server: listening in added pod %s\n", pod.Key())
		}
		if in := cur.Internet; in != nil {
			// The internet stand-in: on every host address, probe
			// servers answering as InternetIdentity and a DNS server
			// that is not kube-dns on port 53. Sockets are bound to the
			// host address so that replies leave from it.
			base := nsKey(in.Netns)
			for _, h := range in.Hosts {
				key := base + "/" + h.String()
				want[key] = true
				if per[key] != nil {
					continue
				}
				srv, err := ServeDNS(in.Netns, net.JoinHostPort(h.String(), "53"), zone)
				if err == nil {
					l := &Listeners{}
					for _, pr := range withoutPort(cur.ServedPorts, 53) {
						if err = l.listenOn(in.Netns, InternetIdentity, h.String(), pr); err != nil {
							break
						}
					}
					if err != nil {
						_ = l.Close()
						_ = srv.Close()
					} else {
						dnsPods[key], per[key] = srv, l
						fmt.Printf("probe server: internet host %s in %s\n", h, in.Netns)
					}
				}
				if err != nil {
					fmt.Printf("probe server: internet host %s: %v\n", h, err)
				}
			}
		}
		for n, l := range per {
			if !want[n] {
				_ = l.Close()
				delete(per, n)
			}
		}
		for n, srv := range dnsPods {
			if !want[n] {
				_ = srv.Close()
				delete(dnsPods, n)
			}
		}
		if len(dnsPods) > 0 && time.Since(zoneAt) > time.Second {
			if z, err := zoneFromAPI(ctx, dir); err == nil {
				zone = z
				for _, srv := range dnsPods {
					srv.SetZone(z)
				}
				zoneAt = time.Now()
			}
		}
	}
}

// withoutPort drops the TCP and UDP probes on port.
func withoutPort(ps []Probe, port int) []Probe {
	var out []Probe
	for _, p := range ps {
		if p.Port != port {
			out = append(out, p)
		}
	}
	return out
}

// nsKey identifies a network namespace by name and inode, so a pod
// removed and added again under the same name between two rereads of the
// state gets new listeners in its new namespace.
func nsKey(name string) string {
	var st unix.Stat_t
	if err := unix.Stat(netns.Path(name), &st); err != nil {
		return name
	}
	return name + "@" + strconv.FormatUint(st.Ino, 10)
}

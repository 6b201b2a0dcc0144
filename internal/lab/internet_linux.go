package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// EnableInternet adds the "internet" stand-in to the running lab in dir
// (see InternetPlan): the namespace bh-<lab>-internet on the fabric with
// InternetFabricIP, the given hosts (addresses in InternetPrefix) on its
// lo, a route to InternetPrefix via InternetFabricIP in every node, and
// routes back to every node's pod ranges. The probe server daemon answers
// on the served ports (except 53) and runs a DNS responder that is not
// kube-dns on every host's port 53. Calling it again adds hosts. It
// returns once the probe server listens there.
func EnableInternet(ctx context.Context, dir string, hosts []netip.Addr) (*InternetPlan, error) {
	var errs []error
	for _, h := range hosts {
		if !InternetPrefix.Contains(h) || h == InternetPrefix.Addr() {
			errs = append(errs, fmt.Errorf("internet host %s: not a host address in %s", h, InternetPrefix))
		}
	}
	if len(hosts) == 0 {
		errs = append(errs, errors.New("internet: at least one host address is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	unlock, err := lockState(dir)
	if err != nil {
		return nil, err
	}
	st, err := LoadState(dir)
	if err != nil {
		unlock()
		return nil, err
	}
	created := false
	if st.Internet == nil {
		ip := &InternetPlan{Netns: InternetNetns(st.Plan.Name)}
		if err := buildInternet(st.Plan, ip); err != nil {
			unlock()
			return nil, errors.Join(fmt.Errorf("internet: %w", err), netns.Delete(ip.Netns))
		}
		st.Internet = ip
		created = true
	}
	have := map[netip.Addr]bool{}
	for _, h := range st.Internet.Hosts {
		have[h] = true
	}
	var add []netip.Addr
	for _, h := range hosts {
		if !have[h] {
			have[h] = true
			add = append(add, h)
		}
	}
	if err := addInternetHosts(st.Internet.Netns, add); err != nil {
		unlock()
		if created {
			err = errors.Join(err, netns.Delete(st.Internet.Netns))
		}
		return nil, fmt.Errorf("internet: %w", err)
	}
	st.Internet.Hosts = append(st.Internet.Hosts, add...)
	sort.Slice(st.Internet.Hosts, func(i, j int) bool { return st.Internet.Hosts[i].Less(st.Internet.Hosts[j]) })
	if err := st.Save(dir); err != nil {
		unlock()
		return nil, err
	}
	unlock()
	if err := waitProbesIn(ctx, dir, st.Internet.Netns, st.Internet.Hosts[len(st.Internet.Hosts)-1]); err != nil {
		return nil, fmt.Errorf("internet: %w", err)
	}
	return st.Internet, nil
}

func buildInternet(p *Plan, ip *InternetPlan) error {
	fab, err := handleAt(p.Fabric)
	if err != nil {
		return err
	}
	defer fab.Close()
	br, err := fab.LinkByName("br0")
	if err != nil {
		return fmt.Errorf("finding br0 in %s: %w", p.Fabric, err)
	}
	h, err := attachToFabric(fab, br, ip.Netns, internetFabricDev, map[string]string{
		"net/ipv4/conf/all/rp_filter":     "0",
		"net/ipv4/conf/default/rp_filter": "0",
	}, netip.PrefixFrom(InternetFabricIP, 24))
	if err != nil {
		return err
	}
	defer h.Close()
	if err := addrsUp(h.Handle, h.lo); err != nil {
		return err
	}
	for _, n := range p.Nodes {
		if err := routeVia(h.Handle, h.eth0, n.PodCIDR, n.IP); err != nil {
			return err
		}
	}
	for _, n := range p.Nodes {
		nh, err := handleAt(n.Name)
		if err != nil {
			return err
		}
		eth, err := nh.LinkByName("eth0")
		if err != nil {
			err = fmt.Errorf("finding eth0: %w", err)
		} else {
			err = routeVia(nh, eth, InternetPrefix, InternetFabricIP)
		}
		nh.Close()
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	return nil
}

func addInternetHosts(name string, hosts []netip.Addr) error {
	if len(hosts) == 0 {
		return nil
	}
	h, err := handleAt(name)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("finding lo in %s: %w", name, err)
	}
	for _, a := range hosts {
		if err := h.AddrAdd(lo, addrOf(netip.PrefixFrom(a, 32))); err != nil {
			return fmt.Errorf("adding %s to lo in %s: %w", a, name, err)
		}
	}
	return nil
}

// waitProbesIn waits until the probe server daemon listens on the lab's
// first served TCP port on host inside the namespace name.
func waitProbesIn(ctx context.Context, dir, name string, host netip.Addr) error {
	st, err := LoadState(dir)
	if err != nil {
		return err
	}
	port := 0
	for _, p := range st.ServedPorts {
		if p.Protocol == "TCP" && p.Port != 53 {
			port = p.Port
			break
		}
	}
	if port == 0 || st.Processes["probes"].PID == 0 {
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var up bool
		_ = netns.Do(netns.Path(name), func() error {
			c, err := net.DialTimeout("tcp", netip.AddrPortFrom(host, uint16(port)).String(), 200*time.Millisecond)
			if err == nil {
				up = true
				c.Close()
			}
			return nil
		})
		if up {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the probe server did not listen on TCP/%d of %s in %s within 10s", port, host, name)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

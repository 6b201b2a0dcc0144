package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// BuildNetwork creates the plan's namespaces and links:
//
//   - a fabric namespace with bridge br0, one port per node;
//   - node namespaces with eth0 (10.250.0.n/24, fe80::250:n) on the bridge,
//     routes to every other node's pod ranges, forwarding on, and
//     169.254.1.1/32 routed to lo so proxy ARP answers for the gateway;
//   - pod namespaces with eth0 (10.244.n.k/32, fd00:10:244:n::k/128) and a
//     default route via 169.254.1.1 (fe80::1) onlink, attached to their node
//     by a routed veth (host route to the pod on the node side, proxy ARP).
//
// Every link is created inside lab namespaces; the root namespace is never
// touched. On error the caller runs TeardownNetwork.
func BuildNetwork(ctx context.Context, p *Plan, progress func(string)) error {
	if err := netns.Create(p.Fabric); err != nil {
		return fmt.Errorf("creating fabric: %w", err)
	}
	fab, err := handleAt(p.Fabric)
	if err != nil {
		return err
	}
	defer fab.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := fab.LinkAdd(br); err != nil {
		return fmt.Errorf("creating bridge br0 in %s: %w", p.Fabric, err)
	}
	brl, err := fab.LinkByName("br0")
	if err != nil {
		return fmt.Errorf("finding br0 in %s: %w", p.Fabric, err)
	}
	if err := fab.LinkSetUp(brl); err != nil {
		return fmt.Errorf("setting br0 up in %s: %w", p.Fabric, err)
	}
	for _, n := range p.Nodes {
		if err := ctx.Err(); err != nil {
			return err
		}
		progress(fmt.Sprintf("node %s: namespace, eth0 %s on the fabric", n.Name, n.IP))
		if err := buildNode(p, n, fab, brl); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	for i, pod := range p.Pods {
		if err := ctx.Err(); err != nil {
			return err
		}
		if i%10 == 0 || i == len(p.Pods)-1 {
			progress(fmt.Sprintf("pod namespaces: %d/%d", i+1, len(p.Pods)))
		}
		if err := buildPod(pod); err != nil {
			return fmt.Errorf("pod %s: %w", pod.Key(), err)
		}
	}
	return nil
}

func handleAt(name string) (*netlink.Handle, error) {
	h, err := netns.Open(netns.Path(name))
	if err != nil {
		return nil, err
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", name, err)
	}
	return nh, nil
}

// fabricNS is a namespace attached to the fabric: a netlink handle in it
// (Close closes it) and its eth0 and lo.
type fabricNS struct {
	*netlink.Handle
	eth0, lo netlink.Link
}

// attachToFabric creates the namespace name and connects it to the
// fabric's bridge: a veth pair with the port dev on br in the fabric and
// eth0 in the namespace, then sysctls written in the namespace, addrs on
// eth0, and eth0 up (lo is left as it is). Nodes and the internet host
// attach this way.
func attachToFabric(fab *netlink.Handle, br netlink.Link, name, dev string, sysctls map[string]string, addrs ...netip.Prefix) (*fabricNS, error) {
	if err := netns.Create(name); err != nil {
		return nil, err
	}
	ns, err := netns.Open(netns.Path(name))
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: dev}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns))}
	if err := fab.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("creating veth %s/eth0: %w", dev, err)
	}
	port, err := fab.LinkByName(dev)
	if err != nil {
		return nil, fmt.Errorf("finding %s: %w", dev, err)
	}
	if err := fab.LinkSetMaster(port, br); err != nil {
		return nil, fmt.Errorf("adding %s to %s: %w", dev, br.Attrs().Name, err)
	}
	if err := fab.LinkSetUp(port); err != nil {
		return nil, fmt.Errorf("setting %s up: %w", dev, err)
	}
	if err := writeSysctls(name, sysctls); err != nil {
		return nil, err
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	f := &fabricNS{Handle: h}
	if f.eth0, err = h.LinkByName("eth0"); err != nil {
		err = fmt.Errorf("finding eth0: %w", err)
	} else if f.lo, err = h.LinkByName("lo"); err != nil {
		err = fmt.Errorf("finding lo: %w", err)
	} else {
		err = addrsUp(h, f.eth0, addrs...)
	}
	if err != nil {
		h.Close()
		return nil, err
	}
	return f, nil
}

// routeVia routes dst via gw on link.
func routeVia(h *netlink.Handle, link netlink.Link, dst netip.Prefix, gw netip.Addr) error {
	if err := h.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(dst), Gw: gw.AsSlice()}); err != nil {
		return fmt.Errorf("route %s via %s: %w", dst, gw, err)
	}
	return nil
}

// addrsUp adds addrs to link and sets it up.
func addrsUp(h *netlink.Handle, link netlink.Link, addrs ...netip.Prefix) error {
	for _, a := range addrs {
		if err := h.AddrAdd(link, addrOf(a)); err != nil {
			return fmt.Errorf("adding %s to %s: %w", a, link.Attrs().Name, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting %s up: %w", link.Attrs().Name, err)
	}
	return nil
}

func buildNode(p *Plan, n NodePlan, fab *netlink.Handle, br netlink.Link) error {
	h, err := attachToFabric(fab, br, n.Name, n.FabricDev, map[string]string{
		"net/ipv4/ip_forward":              "1",
		"net/ipv6/conf/all/forwarding":     "1",
		"net/ipv6/conf/default/accept_dad": "0",
		"net/ipv6/conf/all/accept_dad":     "0",
		"net/ipv4/conf/all/rp_filter":      "0",
		"net/ipv4/conf/default/rp_filter":  "0",
	}, netip.PrefixFrom(n.IP, 24), netip.PrefixFrom(n.IP6LL, 64))
	if err != nil {
		return err
	}
	defer h.Close()
	gw := &netlink.Route{LinkIndex: h.lo.Attrs().Index, Dst: ipNet(netip.PrefixFrom(GatewayIP, 32)), Scope: netlink.SCOPE_LINK}
	if err := h.RouteAdd(gw); err != nil {
		return fmt.Errorf("routing %s to lo: %w", GatewayIP, err)
	}
	for _, o := range p.Nodes {
		if o.Index == n.Index {
			continue
		}
		if err := routeVia(h.Handle, h.eth0, o.PodCIDR, o.IP); err != nil {
			return err
		}
		if err := routeVia(h.Handle, h.eth0, o.PodCIDR6, o.IP6LL); err != nil {
			return err
		}
	}
	return nil
}

func buildPod(pod PodPlan) error {
	if err := netns.Create(pod.Netns); err != nil {
		return err
	}
	podNS, err := netns.Open(netns.Path(pod.Netns))
	if err != nil {
		return err
	}
	defer podNS.Close()
	node, err := handleAt(pod.NodeName)
	if err != nil {
		return err
	}
	defer node.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: pod.HostVeth},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(podNS)),
	}
	if err := node.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth %s/eth0: %w", pod.HostVeth, err)
	}
	host, err := node.LinkByName(pod.HostVeth)
	if err != nil {
		return fmt.Errorf("finding %s: %w", pod.HostVeth, err)
	}
	if err := writeSysctls(pod.NodeName, map[string]string{
		"net/ipv4/conf/" + pod.HostVeth + "/proxy_arp":    "1",
		"net/ipv4/neigh/" + pod.HostVeth + "/proxy_delay": "0",
		"net/ipv6/conf/" + pod.HostVeth + "/accept_dad":   "0",
	}); err != nil {
		return err
	}
	if err := addrsUp(node, host, netip.PrefixFrom(GatewayIP6, 64)); err != nil {
		return err
	}
	for _, pfx := range []netip.Prefix{netip.PrefixFrom(pod.IP, 32), netip.PrefixFrom(pod.IP6, 128)} {
		r := &netlink.Route{LinkIndex: host.Attrs().Index, Dst: ipNet(pfx), Scope: netlink.SCOPE_LINK}
		if err := node.RouteAdd(r); err != nil {
			return fmt.Errorf("host route %s dev %s: %w", pfx, pod.HostVeth, err)
		}
	}

	if err := writeSysctls(pod.Netns, map[string]string{
		"net/ipv6/conf/all/accept_dad":     "0",
		"net/ipv6/conf/default/accept_dad": "0",
	}); err != nil {
		return err
	}
	h, err := netlink.NewHandleAt(podNS)
	if err != nil {
		return fmt.Errorf("netlink handle: %w", err)
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("finding eth0: %w", err)
	}
	if err := addrsUp(h, eth0, netip.PrefixFrom(pod.IP, 32), netip.PrefixFrom(pod.IP6, 128)); err != nil {
		return err
	}
	gw := &netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: ipNet(netip.PrefixFrom(GatewayIP, 32)), Scope: netlink.SCOPE_LINK}
	if err := h.RouteAdd(gw); err != nil {
		return fmt.Errorf("route %s dev eth0: %w", GatewayIP, err)
	}
	def4 := &netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: GatewayIP.AsSlice(), Flags: int(netlink.FLAG_ONLINK)}
	if err := h.RouteAdd(def4); err != nil {
		return fmt.Errorf("default route via %s: %w", GatewayIP, err)
	}
	def6 := &netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("::/0")), Gw: GatewayIP6.AsSlice()}
	if err := h.RouteAdd(def6); err != nil {
		return fmt.Errorf("default route via %s: %w", GatewayIP6, err)
	}
	return nil
}

func addrOf(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: ipNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func writeSysctls(ns string, kv map[string]string) error {
	return netns.Do(netns.Path(ns), func() error {
		for k, v := range kv {
			if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
				return fmt.Errorf("sysctl %s=%s: %w", strings.ReplaceAll(k, "/", "."), v, err)
			}
		}
		return nil
	})
}

// LabNetns lists the existing network namespaces whose names start with
// the lab's prefix, whether or not any state records them.
func LabNetns(lab string) ([]string, error) {
	ents, err := os.ReadDir(netns.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", netns.Dir, err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), NetnsPrefix(lab)) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// TeardownNetwork deletes the given namespaces (their links go with
// them) and every other namespace with the lab's prefix. Missing ones are
// fine.
func TeardownNetwork(lab string, known []string) error {
	set := map[string]bool{}
	for _, n := range known {
		set[n] = true
	}
	found, err := LabNetns(lab)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, n := range found {
		set[n] = true
	}
	for n := range set {
		if !strings.HasPrefix(n, NetnsPrefix(lab)) {
			errs = append(errs, fmt.Errorf("refusing to delete netns %s: not a %s namespace", n, NetnsPrefix(lab)))
			continue
		}
		if err := netns.Delete(n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

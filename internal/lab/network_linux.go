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

func buildNode(p *Plan, n NodePlan, fab *netlink.Handle, br netlink.Link) error {
	if err := netns.Create(n.Name); err != nil {
		return err
	}
	nodeNS, err := netns.Open(netns.Path(n.Name))
	if err != nil {
		return err
	}
	defer nodeNS.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: n.FabricDev},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(nodeNS)),
	}
	if err := fab.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth %s/eth0: %w", n.FabricDev, err)
	}
	port, err := fab.LinkByName(n.FabricDev)
	if err != nil {
		return fmt.Errorf("finding %s: %w", n.FabricDev, err)
	}
	if err := fab.LinkSetMaster(port, br); err != nil {
		return fmt.Errorf("adding %s to br0: %w", n.FabricDev, err)
	}
	if err := fab.LinkSetUp(port); err != nil {
		return fmt.Errorf("setting %s up: %w", n.FabricDev, err)
	}
	if err := writeSysctls(n.Name, map[string]string{
		"net/ipv4/ip_forward":              "1",
		"net/ipv6/conf/all/forwarding":     "1",
		"net/ipv6/conf/default/accept_dad": "0",
		"net/ipv6/conf/all/accept_dad":     "0",
		"net/ipv4/conf/all/rp_filter":      "0",
		"net/ipv4/conf/default/rp_filter":  "0",
	}); err != nil {
		return err
	}
	h, err := netlink.NewHandleAt(nodeNS)
	if err != nil {
		return fmt.Errorf("netlink handle: %w", err)
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("finding eth0: %w", err)
	}
	if err := h.AddrAdd(eth0, addrOf(netip.PrefixFrom(n.IP, 24))); err != nil {
		return fmt.Errorf("adding %s to eth0: %w", n.IP, err)
	}
	if err := h.AddrAdd(eth0, addrOf(netip.PrefixFrom(n.IP6LL, 64))); err != nil {
		return fmt.Errorf("adding %s to eth0: %w", n.IP6LL, err)
	}
	if err := h.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("setting eth0 up: %w", err)
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("finding lo: %w", err)
	}
	gw := &netlink.Route{LinkIndex: lo.Attrs().Index, Dst: ipNet(netip.PrefixFrom(GatewayIP, 32)), Scope: netlink.SCOPE_LINK}
	if err := h.RouteAdd(gw); err != nil {
		return fmt.Errorf("routing %s to lo: %w", GatewayIP, err)
	}
	for _, o := range p.Nodes {
		if o.Index == n.Index {
			continue
		}
		r4 := &netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: ipNet(o.PodCIDR), Gw: o.IP.AsSlice()}
		if err := h.RouteAdd(r4); err != nil {
			return fmt.Errorf("route %s via %s: %w", o.PodCIDR, o.IP, err)
		}
		r6 := &netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: ipNet(o.PodCIDR6), Gw: o.IP6LL.AsSlice()}
		if err := h.RouteAdd(r6); err != nil {
			return fmt.Errorf("route %s via %s: %w", o.PodCIDR6, o.IP6LL, err)
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
	if err := node.AddrAdd(host, addrOf(netip.PrefixFrom(GatewayIP6, 64))); err != nil {
		return fmt.Errorf("adding %s to %s: %w", GatewayIP6, pod.HostVeth, err)
	}
	if err := node.LinkSetUp(host); err != nil {
		return fmt.Errorf("setting %s up: %w", pod.HostVeth, err)
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
	for _, pfx := range []netip.Prefix{netip.PrefixFrom(pod.IP, 32), netip.PrefixFrom(pod.IP6, 128)} {
		if err := h.AddrAdd(eth0, addrOf(pfx)); err != nil {
			return fmt.Errorf("adding %s to eth0: %w", pfx, err)
		}
	}
	if err := h.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("setting eth0 up: %w", err)
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

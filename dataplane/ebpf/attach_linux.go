//go:build linux

package ebpf

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	cebpf "github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

const (
	netFlagLoopback = net.FlagLoopback
	netFlagUp       = net.FlagUp
)

// hook is one attachment of a program to an interface.
type hook struct {
	name   string
	attach cebpf.AttachType
	parent uint32
}

// hooks are the two attachments per endpoint interface; uplinkHooks the
// one per uplink (Service connections to remote backends).
var (
	hooks = []hook{
		{"from_pod", cebpf.AttachTCXIngress, netlink.HANDLE_MIN_INGRESS},
		{"to_pod", cebpf.AttachTCXEgress, netlink.HANDLE_MIN_EGRESS},
	}
	uplinkHooks = []hook{
		{"svc_out", cebpf.AttachTCXEgress, netlink.HANDLE_MIN_EGRESS},
	}
	allHooks = append(append([]hook(nil), hooks...), uplinkHooks...)
)

// attachment says which hooks each interface carries.
type attachment map[uint32][]hook

func (a attachment) has(idx uint32, name string) bool {
	for _, h := range a[idx] {
		if h.name == name {
			return true
		}
	}
	return false
}

// clsact filter identity: handle and priority of the backend's filters.
const (
	clsactHandle = 0xb1
	clsactPrio   = 0xb1
	clsactPrefix = "bulkhead_"
)

func (b *Backend) program(hook string) *cebpf.Program {
	switch hook {
	case "from_pod":
		return b.objs.FromPod
	case "svc_out":
		return b.objs.SvcOut
	}
	return b.objs.ToPod
}

func progID(p *cebpf.Program) (cebpf.ProgramID, error) {
	info, err := p.Info()
	if err != nil {
		return 0, fmt.Errorf("program info: %w", err)
	}
	id, ok := info.ID()
	if !ok {
		return 0, errors.New("program info: no id")
	}
	return id, nil
}

// pinnedLink is one TCX link pinned under links/.
type pinnedLink struct {
	path    string
	hook    string
	ifindex uint32
	link    link.Link
	prog    cebpf.ProgramID
}

// pinnedLinks opens every link pinned under links/. Unreadable pins are
// removed.
func (b *Backend) pinnedLinks() ([]pinnedLink, error) {
	ents, err := os.ReadDir(b.linksDir())
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading link pins: %w", err)
	}
	var out []pinnedLink
	for _, e := range ents {
		p := filepath.Join(b.linksDir(), e.Name())
		i := strings.LastIndexByte(e.Name(), '-')
		if i < 0 {
			continue
		}
		l, err := link.LoadPinnedLink(p, nil)
		if err != nil {
			b.log.Info("removing unreadable link pin", "pin", p, "err", err.Error())
			_ = os.Remove(p)
			continue
		}
		pl := pinnedLink{path: p, hook: e.Name()[i+1:], link: l}
		if info, err := l.Info(); err == nil {
			pl.prog = info.Program
			if tcx := info.TCX(); tcx != nil {
				pl.ifindex = tcx.Ifindex
			}
		}
		out = append(out, pl)
	}
	return out, nil
}

// updatePinnedLinks moves every pinned link to this instance's programs.
func (b *Backend) updatePinnedLinks() error {
	ls, err := b.pinnedLinks()
	if err != nil {
		return err
	}
	var errs []error
	for _, pl := range ls {
		prog := b.program(pl.hook)
		if id, err := progID(prog); err == nil && id != pl.prog && pl.ifindex != 0 {
			if err := pl.link.Update(prog); err != nil {
				errs = append(errs, fmt.Errorf("updating link %s: %w", pl.path, err))
			}
		}
		pl.link.Close()
	}
	return errors.Join(errs...)
}

func pinName(ifindex uint32, hook string) string {
	return strconv.FormatUint(uint64(ifindex), 10) + "-" + hook
}

// attachAll makes exactly the interfaces in ifindex carry the endpoint
// programs, and the uplinks the Service program.
func (b *Backend) attachAll(ifindex map[string]uint32, uplinks []uint32) error {
	want := attachment{}
	for _, idx := range ifindex {
		want[idx] = hooks
	}
	for _, idx := range uplinks {
		if want[idx] == nil {
			want[idx] = uplinkHooks
		}
	}
	if b.opts.Attach == AttachClsact {
		b.clsact = true
	}
	if !b.clsact {
		err := b.attachTCX(want)
		if err == nil {
			b.stats.Attached, b.stats.Clsact = len(want), false
			return nil
		}
		if !errors.Is(err, cebpf.ErrNotSupported) || b.opts.Attach == AttachTCX {
			return err
		}
		b.log.Info("TCX is not supported by this kernel; falling back to clsact filters", "err", err.Error())
		b.clsact = true
	}
	if err := b.detachAll(nil); err != nil {
		return err
	}
	if err := b.attachClsact(want); err != nil {
		return err
	}
	if err := b.removeClsact(want); err != nil {
		return err
	}
	b.stats.Attached, b.stats.Clsact = len(want), true
	return nil
}

func (b *Backend) attachTCX(want attachment) error {
	ls, err := b.pinnedLinks()
	if err != nil {
		return err
	}
	have := map[string]bool{}
	var errs []error
	// A program's ID is fixed; reading it costs a /proc fdinfo scan,
	// so it is read once per hook, not once per link.
	ids := map[string]cebpf.ProgramID{}
	for _, pl := range ls {
		prog := b.program(pl.hook)
		id, ok := ids[pl.hook]
		if !ok {
			id, _ = progID(prog)
			ids[pl.hook] = id
		}
		switch {
		case pl.ifindex == 0 || !want.has(pl.ifindex, pl.hook) || pinName(pl.ifindex, pl.hook) != filepath.Base(pl.path):
			// Defunct (interface gone), no longer wanted, or a pin whose
			// name does not match its interface: detach.
			if err := pl.link.Unpin(); err != nil {
				errs = append(errs, fmt.Errorf("unpinning %s: %w", pl.path, err))
			}
		case pl.prog != id:
			if err := pl.link.Update(prog); err != nil {
				errs = append(errs, fmt.Errorf("updating link %s: %w", pl.path, err))
			} else {
				have[filepath.Base(pl.path)] = true
			}
		default:
			have[filepath.Base(pl.path)] = true
		}
		pl.link.Close()
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for idx, hs := range want {
		for _, h := range hs {
			name := pinName(idx, h.name)
			if have[name] {
				continue
			}
			if err := b.inNS(func() error {
				l, err := link.AttachTCX(link.TCXOptions{Interface: int(idx), Program: b.program(h.name), Attach: h.attach, Anchor: link.Head()})
				if err != nil {
					return err
				}
				defer l.Close()
				if err := l.Pin(filepath.Join(b.linksDir(), name)); err != nil {
					return fmt.Errorf("pinning: %w", err)
				}
				return nil
			}); err != nil {
				return fmt.Errorf("attaching %s to interface %d: %w", h.name, idx, err)
			}
		}
	}
	return nil
}

// inNS runs fn on a thread in the node namespace: TCX resolves interface
// indexes in the calling thread's namespace.
func (b *Backend) inNS(fn func() error) error {
	if b.opts.NetNSPath == "" {
		return fn()
	}
	return netns.Do(b.opts.NetNSPath, fn)
}

// detachAll unpins and detaches every TCX link except those on keep.
func (b *Backend) detachAll(keep attachment) error {
	ls, err := b.pinnedLinks()
	if err != nil {
		return err
	}
	var errs []error
	for _, pl := range ls {
		if pl.ifindex == 0 || !keep.has(pl.ifindex, pl.hook) {
			if err := pl.link.Unpin(); err != nil {
				errs = append(errs, fmt.Errorf("unpinning %s: %w", pl.path, err))
			}
		}
		pl.link.Close()
	}
	return errors.Join(errs...)
}

func (b *Backend) attachClsact(want attachment) error {
	for idx, hs := range want {
		l, err := b.nl.LinkByIndex(int(idx))
		if err != nil {
			return fmt.Errorf("interface %d: %w", idx, err)
		}
		qs, err := b.nl.QdiscList(l)
		if err != nil {
			return fmt.Errorf("listing qdiscs of %s: %w", l.Attrs().Name, err)
		}
		has := false
		for _, q := range qs {
			if q.Type() == "clsact" {
				has = true
			}
		}
		if !has {
			q := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: int(idx), Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
			if err := b.nl.QdiscAdd(q); err != nil {
				return fmt.Errorf("adding clsact qdisc to %s: %w", l.Attrs().Name, err)
			}
		}
		for _, h := range hs {
			f := &netlink.BpfFilter{
				FilterAttrs:  netlink.FilterAttrs{LinkIndex: int(idx), Parent: h.parent, Handle: clsactHandle, Priority: clsactPrio, Protocol: unix.ETH_P_ALL},
				Fd:           b.program(h.name).FD(),
				Name:         clsactPrefix + h.name,
				DirectAction: true,
			}
			if err := b.nl.FilterReplace(f); err != nil {
				return fmt.Errorf("attaching clsact filter %s to %s: %w", h.name, l.Attrs().Name, err)
			}
		}
	}
	return nil
}

// removeClsact deletes the backend's clsact filters of every hook keep
// does not name for its interface. Other filters are left alone.
func (b *Backend) removeClsact(keep attachment) error {
	links, err := b.nl.LinkList()
	if err != nil {
		return fmt.Errorf("listing interfaces: %w", err)
	}
	var errs []error
	for _, l := range links {
		for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
			fs, err := b.nl.FilterList(l, parent)
			if err != nil {
				continue // no clsact qdisc
			}
			for _, f := range fs {
				bf, ok := f.(*netlink.BpfFilter)
				if !ok || !strings.HasPrefix(bf.Name, clsactPrefix) || bf.Priority != clsactPrio || bf.Handle != clsactHandle {
					continue
				}
				if keep.has(uint32(l.Attrs().Index), strings.TrimPrefix(bf.Name, clsactPrefix)) {
					continue
				}
				if err := b.nl.FilterDel(bf); err != nil {
					errs = append(errs, fmt.Errorf("deleting clsact filter on %s: %w", l.Attrs().Name, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

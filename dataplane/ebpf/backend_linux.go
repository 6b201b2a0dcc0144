//go:build linux

package ebpf

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	cebpf "github.com/cilium/ebpf"
	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/bulkhead-dev/bulkhead/bpf"
	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// config flags, as CFG_* in bpf/policy.c.
const (
	cfgEventsNew  uint32 = 1
	cfgEventsDrop uint32 = 2
	cfgSvc        uint32 = 4
)

// flipGuard is how long a buffer rests after it stopped being active
// before it is written again, so that packets that read the old index
// just before the flip have finished their lookups.
const flipGuard = 10 * time.Millisecond

// ErrClosed is returned by calls on a closed Backend.
var ErrClosed = errors.New("ebpf backend closed")

// ErrEndpointNotFound is wrapped by Sync errors for endpoints whose
// node-side interface cannot be found.
var ErrEndpointNotFound = errors.New("endpoint interface not found")

// Backend enforces an ir.NodePolicy with tc BPF programs.
type Backend struct {
	mu     sync.Mutex
	opts   Options
	log    logr.Logger
	closed bool

	objs    bpf.PolicyObjects
	mapsDir string
	nl      *netlink.Handle
	ns      vnetns.NsHandle

	alloc *allocator
	// cache holds what each buffer contains, nil when unknown.
	cache    [2]*program
	active   uint32
	lastFlip time.Time
	// applied is the last policy Sync enforced, nil when unknown.
	applied *ir.NodePolicy
	ifindex map[string]uint32
	ifnames map[uint32]string
	// endpoints names the endpoint of each attached interface.
	endpoints map[uint32]string
	clsact    bool
	stats     Stats
	// attached is attachKey of the last successful link reconcile, ""
	// when unknown.
	attached string
	// svcHave holds what svc_cidr and local_ep hold, nil when unknown.
	svcHave [2]map[identKey]uint32
	// routes caches resolve's route lookups.
	routes routeCache
	// benchIfindex, set by benchmarks only, replaces route lookups with
	// made-up interface indexes and skips attachment.
	benchIfindex map[string]uint32
}

var _ dataplane.Dataplane = (*Backend)(nil)

// New loads the programs, reusing the maps pinned in opts.PinDir (or
// creating and pinning them), and moves links pinned there by an earlier
// instance to the new programs. Enforcement already in place goes on
// without a gap.
func New(opts Options) (*Backend, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if err := Detect(); err != nil {
		return nil, err
	}
	b := &Backend{opts: opts, log: opts.Logger.WithName("ebpf"), alloc: newAllocator(), ns: vnetns.None()}
	b.mapsDir = filepath.Join(opts.PinDir, LayoutVersion)
	if err := os.MkdirAll(b.mapsDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating pin directory: %w", err)
	}
	if err := os.MkdirAll(b.linksDir(), 0o700); err != nil {
		return nil, fmt.Errorf("creating pin directory: %w", err)
	}
	spec, err := bpf.LoadPolicy()
	if err != nil {
		return nil, fmt.Errorf("loading program spec: %w", err)
	}
	if err := spec.LoadAndAssign(&b.objs, &cebpf.CollectionOptions{Maps: cebpf.MapOptions{PinPath: b.mapsDir}}); err != nil {
		if errors.Is(err, cebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("loading programs: pinned maps in %s have another layout than %s expects (remove them or Uninstall): %w", b.mapsDir, LayoutVersion, err)
		}
		return nil, fmt.Errorf("loading programs: %w", err)
	}
	if opts.NetNSPath != "" {
		h, err := netns.Open(opts.NetNSPath)
		if err != nil {
			b.objs.Close()
			return nil, fmt.Errorf("opening node netns: %w", err)
		}
		b.ns = h
		b.nl, err = netlink.NewHandleAt(h)
		if err != nil {
			b.objs.Close()
			h.Close()
			return nil, fmt.Errorf("netlink handle in node netns: %w", err)
		}
	} else {
		b.nl, err = netlink.NewHandle()
		if err != nil {
			b.objs.Close()
			return nil, fmt.Errorf("netlink handle: %w", err)
		}
	}
	var cfg bpf.PolicyConfig
	if err := b.objs.ConfigMap.Lookup(uint32(0), &cfg); err != nil {
		b.closeHandles()
		return nil, fmt.Errorf("reading config map: %w", err)
	}
	b.active = cfg.Active & 1
	b.lastFlip = time.Now() // unknown: be safe
	// Move links of an earlier instance to the new programs.
	if err := b.updatePinnedLinks(); err != nil {
		b.closeHandles()
		return nil, err
	}
	return b, nil
}

// Name implements dataplane.Dataplane.
func (b *Backend) Name() string { return "ebpf" }

// PinDir returns the backend's pin directory.
func (b *Backend) PinDir() string { return b.opts.PinDir }

// Stats returns counters of the backend's work.
func (b *Backend) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// RuleID maps a rule number of a flow event to its rule ID.
func (b *Backend) RuleID(n uint32) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	id, ok := b.alloc.ruleIDs[n]
	return id, ok
}

func (b *Backend) linksDir() string { return filepath.Join(b.opts.PinDir, "links") }

func (b *Backend) logger(ctx context.Context) logr.Logger {
	if l, err := logr.FromContext(ctx); err == nil {
		return l.WithName("ebpf")
	}
	return b.log
}

// buffer is one generation of the policy maps.
type buffer struct{ ident, cls, pol *cebpf.Map }

func (b *Backend) buffers(i uint32) buffer {
	if i == 0 {
		return buffer{b.objs.Ident0, b.objs.Cls0, b.objs.Pol0}
	}
	return buffer{b.objs.Ident1, b.objs.Cls1, b.objs.Pol1}
}

// Sync implements dataplane.Dataplane.
func (b *Backend) Sync(ctx context.Context, desired *ir.NodePolicy) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if desired == nil {
		return errors.New("sync: nil policy")
	}
	log := b.logger(ctx)
	start := time.Now()
	if err := validate(desired); err != nil {
		return fmt.Errorf("sync: policy for node %q: %w", desired.Node, err)
	}
	var ifindex map[string]uint32
	var ifnames map[uint32]string
	var missing []string
	if b.benchIfindex != nil {
		ifindex = b.benchIfindex
	} else {
		ifindex, ifnames, missing = b.resolve(desired)
	}
	compileStart := time.Now()
	prog := compileValid(desired, ifindex, b.alloc)
	b.stats.LastCompile = time.Since(compileStart)
	writes, err := b.install(prog, log)
	if err != nil {
		b.applied = nil
		return fmt.Errorf("sync: %w", err)
	}
	cut := 0
	if !b.opts.DisableConnectionCutting {
		cut, err = b.revoke(desired, ifindex, prog)
		if err != nil {
			return fmt.Errorf("sync: revoking connections: %w", err)
		}
	}
	if err := b.syncServices(desired, ifindex, writes == 0); err != nil {
		b.applied = nil
		return fmt.Errorf("sync: %w", err)
	}
	if b.benchIfindex == nil {
		uplinks, err := b.uplinks(ifindex)
		if err != nil {
			b.applied = nil
			return fmt.Errorf("sync: %w", err)
		}
		// Links are reconciled when an endpoint's interface or the
		// uplinks changed, and on every Sync that finds the policy
		// unchanged (the periodic resync, which repairs links someone
		// else detached); a policy delta on the same interfaces keeps
		// the links the last reconcile left.
		at := attachKey(ifindex, uplinks)
		if writes == 0 || at != b.attached {
			b.attached = ""
			if err := b.attachAll(ifindex, uplinks); err != nil {
				b.applied = nil
				return fmt.Errorf("sync: %w", err)
			}
			b.attached = at
		}
	}
	if err := b.removeOldLayouts(); err != nil {
		log.Error(err, "removing maps of an old layout")
	}
	b.applied = desired
	b.ifindex, b.ifnames = ifindex, ifnames
	b.endpoints = map[uint32]string{}
	for name, idx := range ifindex {
		b.endpoints[idx] = name
	}
	b.stats.Syncs++
	if writes == 0 {
		b.stats.NoOps++
	}
	b.stats.LastWrites = writes
	b.stats.LastDuration = time.Since(start)
	b.stats.ConnectionsCut += cut
	nCls, nPol := prog.counts()
	nIdent := prog.identCount()
	b.stats.IdentEntries, b.stats.ClassEntries, b.stats.PolicyEntries = nIdent, nCls, nPol
	log.V(1).Info("synced", "node", desired.Node, "writes", writes, "cut", cut, "took", b.stats.LastDuration, "identEntries", nIdent, "policyEntries", nPol)
	if len(missing) > 0 {
		return fmt.Errorf("sync: %w: %s", ErrEndpointNotFound, strings.Join(missing, "; "))
	}
	return nil
}

// routeCacheTTL bounds how long resolve trusts the interfaces it found
// by route lookup: after it, every endpoint is looked up again.
const routeCacheTTL = time.Minute

// routeCache holds what resolve's route lookups found, for addresses
// whose interface a host route of the main table names.
type routeCache struct {
	filled  time.Time
	ifindex map[netip.Addr]int
	names   map[int]string
}

// hostRoutes returns the direct host routes (/32, /128, no gateway) of
// the node's main routing table: address -> interface index. One dump
// costs about what one route lookup does.
func (b *Backend) hostRoutes() (map[netip.Addr]int, error) {
	routes, err := b.nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: syscall.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	out := make(map[netip.Addr]int, len(routes))
	for _, r := range routes {
		if r.Dst == nil || r.Gw != nil || r.LinkIndex <= 0 || len(r.MultiPath) > 0 {
			continue
		}
		ones, bits := r.Dst.Mask.Size()
		if ones != bits {
			continue
		}
		a, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		out[a.Unmap()] = r.LinkIndex
	}
	return out, nil
}

// resolve finds each endpoint's node-side interface by route lookup from
// its IPs. All IPs of an endpoint must route to one interface directly.
// A lookup's result is reused on later Syncs (for up to routeCacheTTL)
// while the main table still has a direct host route of the address to
// the same interface; one route dump per Sync checks that, so the
// steady state costs no lookup per endpoint, and a pod whose veth was
// re-created (new interface, new host route) is looked up at once.
func (b *Backend) resolve(np *ir.NodePolicy) (map[string]uint32, map[uint32]string, []string) {
	ifindex := map[string]uint32{}
	ifnames := map[uint32]string{}
	owner := map[int]string{}
	var missing []string
	host, err := b.hostRoutes()
	if err != nil {
		b.log.V(1).Info("route cache off for this Sync", "err", err)
	}
	useCache := err == nil && b.routes.ifindex != nil && time.Since(b.routes.filled) < routeCacheTTL
	next := routeCache{filled: b.routes.filled, ifindex: map[netip.Addr]int{}, names: map[int]string{}}
	if !useCache {
		next.filled = time.Now()
	}
	b.stats.LastRouteLookups = 0
	for i := range np.Endpoints {
		ep := &np.Endpoints[i]
		if len(ep.IPs) == 0 {
			missing = append(missing, fmt.Sprintf("endpoint %q has no IPs", ep.Name))
			continue
		}
		var idx int
		var bad string
		cached := true
		for _, ip := range ep.IPs {
			ip = ip.Unmap()
			link := 0
			if c, ok := b.routes.ifindex[ip]; useCache && ok && host[ip] == c {
				link = c
			} else {
				cached = false
				b.stats.LastRouteLookups++
				routes, err := b.nl.RouteGet(ip.AsSlice())
				if err != nil || len(routes) == 0 {
					bad = fmt.Sprintf("endpoint %q: no route to %v in the node namespace", ep.Name, ip)
					break
				}
				r := routes[0]
				if r.Gw != nil {
					bad = fmt.Sprintf("endpoint %q: %v is routed via %v, not to a local interface", ep.Name, ip, r.Gw)
					break
				}
				link = r.LinkIndex
			}
			if idx != 0 && link != idx {
				bad = fmt.Sprintf("endpoint %q: its IPs route to different interfaces (%d, %d)", ep.Name, idx, link)
				break
			}
			idx = link
			if host != nil && host[ip] == link {
				next.ifindex[ip] = link
			}
		}
		if bad == "" && idx > 0 {
			if name, ok := b.routes.names[idx]; cached && ok {
				ifnames[uint32(idx)] = name
				next.names[idx] = name
			} else if l, err := b.nl.LinkByIndex(idx); err != nil {
				bad = fmt.Sprintf("endpoint %q: interface %d: %v", ep.Name, idx, err)
			} else if l.Attrs().Flags&netFlagLoopback != 0 {
				bad = fmt.Sprintf("endpoint %q: its IPs are local addresses of the node", ep.Name)
			} else {
				ifnames[uint32(idx)] = l.Attrs().Name
				next.names[idx] = l.Attrs().Name
			}
		}
		if bad == "" {
			if other, ok := owner[idx]; ok {
				bad = fmt.Sprintf("endpoint %q: its IPs route to interface %d, which endpoint %q uses already (several pods behind one interface are not supported)", ep.Name, idx, other)
			}
		}
		if bad != "" {
			missing = append(missing, bad)
			continue
		}
		ifindex[ep.Name] = uint32(idx)
		owner[idx] = ep.Name
	}
	b.routes = next
	return ifindex, ifnames, missing
}

// install makes the active buffer hold prog: it writes the inactive buffer
// and flips, unless the active one already holds prog.
func (b *Backend) install(prog *program, log logr.Logger) (int, error) {
	bufA := b.buffers(b.active)
	cur := b.cache[b.active]
	if cur == nil {
		var err error
		if cur, err = readProgram(bufA); err != nil {
			return 0, err
		}
		b.cache[b.active] = cur
	} else if !cur.identsKnown() {
		var err error
		if cur, err = readProgram(bufA); err != nil {
			return 0, err
		}
		b.cache[b.active] = cur
	} else if b.applied != nil && samePrograms(cur, prog) {
		// The same policy again: check the kernel for drift.
		kern, err := readProgram(bufA)
		if err != nil {
			return 0, err
		}
		if samePrograms(kern, prog) {
			return 0, b.writeConfig(b.active)
		}
		log.Info("active policy buffer drifted from the applied state; rewriting it")
		b.stats.DriftRepairs++
		cur = kern
		b.cache[b.active] = kern
	}
	if samePrograms(cur, prog) {
		b.stats.LastMapWrite = 0
		return 0, b.writeConfig(b.active)
	}
	next := b.active ^ 1
	if d := time.Since(b.lastFlip); d < flipGuard {
		time.Sleep(flipGuard - d)
	}
	bufN := b.buffers(next)
	old := b.cache[next]
	if old != nil && !old.identsKnown() {
		old = nil
	}
	if old == nil {
		var err error
		if old, err = readProgram(bufN); err != nil {
			return 0, err
		}
	}
	b.cache[next] = nil // unknown while writing
	writeStart := time.Now()
	defer func() { b.stats.LastMapWrite = time.Since(writeStart) }()
	writes, err := writeDiff(bufN, old, prog)
	if err != nil {
		return writes, err
	}
	b.cache[next] = prog
	if err := b.writeConfig(next); err != nil {
		return writes, err
	}
	b.active = next
	b.lastFlip = time.Now()
	b.stats.Flips++
	b.trimIdentLog()
	return writes, nil
}

// trimIdentLog drops the identity changes that no cached buffer needs
// for its next diff.
func (b *Backend) trimIdentLog() {
	st := b.alloc.ident
	if st == nil {
		return
	}
	v := st.ver
	for _, p := range b.cache {
		if p != nil && p.ist == st {
			v = min(v, p.iver)
		}
	}
	st.trim(v)
}

func (b *Backend) writeConfig(active uint32) error {
	cfg := bpf.PolicyConfig{Active: active}
	if !b.opts.DisableFlowEvents {
		cfg.Flags = cfgEventsNew | cfgEventsDrop
	}
	if len(b.opts.ServiceCIDRs) > 0 {
		cfg.Flags |= cfgSvc
	}
	if err := b.objs.ConfigMap.Update(uint32(0), &cfg, cebpf.UpdateAny); err != nil {
		return fmt.Errorf("writing config map: %w", err)
	}
	return nil
}

func samePrograms(a, b *program) bool {
	if !sameIdents(a, b) {
		return false
	}
	// A chain without entries equals a missing one (the kernel's maps
	// cannot tell them apart).
	for k, c := range a.chains {
		if !sameChain(c, b.chains[k]) {
			return false
		}
	}
	for k, c := range b.chains {
		if _, ok := a.chains[k]; !ok && !sameChain(nil, c) {
			return false
		}
	}
	return true
}

func sameIdents(a, b *program) bool {
	put, del, ok := identDiff(a, b)
	return ok && len(put) == 0 && len(del) == 0
}

func sameChain(a, b *chainProg) bool {
	if a == b {
		return true
	}
	if a == nil {
		a = &chainProg{}
	}
	if b == nil {
		b = &chainProg{}
	}
	return sameMap(a.cls, b.cls) && sameMap(a.pol, b.pol)
}

func sameMap[K, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Kernel forms of the keys. Ports are in network byte order.

func htons(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func ntohs(p uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], p)
	return binary.BigEndian.Uint16(b[:])
}

func kernIdentKey(k identKey) bpf.PolicyIdentKey {
	return bpf.PolicyIdentKey{Prefixlen: 8 + uint32(k.Bits), Family: k.Fam, Addr: k.Addr}
}

func kernPolKey(k polKey) bpf.PolicyPolKey {
	return bpf.PolicyPolKey{Prefixlen: 80 + uint32(k.PortBits), Ifindex: k.Ifindex, Class: k.Class, Dir: uint8(k.Dir), Proto: k.Proto, Port: htons(k.Port)}
}

func kernVerdict(v verdict) bpf.PolicyVerdict {
	return bpf.PolicyVerdict{Rule: v.Rule, Flags: v.Flags, Tier: uint8(v.Tier)}
}

// readProgram reads one buffer's maps back into Go form.
func kernClsKey(k clsKey) bpf.PolicyClsKey {
	return bpf.PolicyClsKey{Ifindex: k.Ifindex, Identity: k.Identity, Dir: uint8(k.Dir)}
}

func readProgram(buf buffer) (*program, error) {
	p := newProgram()
	var ik bpf.PolicyIdentKey
	var id uint32
	it := buf.ident.Iterate()
	lens := map[uint8]map[uint8]bool{4: {}, 6: {}}
	for it.Next(&ik, &id) {
		k := identKey{Fam: ik.Family, Addr: ik.Addr, Bits: uint8(ik.Prefixlen - 8)}
		p.idents[k] = id
		if lens[k.Fam] != nil {
			lens[k.Fam][k.Bits] = true
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading identity map: %w", err)
	}
	p.identBits = sortedLens(lens)
	var ck bpf.PolicyClsKey
	var cls uint32
	it = buf.cls.Iterate()
	for it.Next(&ck, &cls) {
		k := clsKey{Ifindex: ck.Ifindex, Identity: ck.Identity, Dir: ir.Direction(ck.Dir)}
		p.chain(chainKey{Ifindex: k.Ifindex, Dir: k.Dir}).cls[k] = cls
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading class map: %w", err)
	}
	var pk bpf.PolicyPolKey
	var v bpf.PolicyVerdict
	it = buf.pol.Iterate()
	for it.Next(&pk, &v) {
		k := polKey{Ifindex: pk.Ifindex, Class: pk.Class, Dir: ir.Direction(pk.Dir), Proto: pk.Proto, Port: ntohs(pk.Port), PortBits: uint8(pk.Prefixlen - 80)}
		p.chain(chainKey{Ifindex: k.Ifindex, Dir: k.Dir}).pol[k] = verdict{Rule: v.Rule, Flags: v.Flags, Tier: ir.TierKind(v.Tier)}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading policy map: %w", err)
	}
	return p, nil
}

// diffMap appends to del the keys of old missing from want, and to put
// the entries of want that old lacks or holds with another value.
func diffMap[K comparable, V comparable, KK, VV any](old, want map[K]V, conv func(K) KK, convV func(V) VV, del *[]KK, putK *[]KK, putV *[]VV) {
	for k := range old {
		if _, ok := want[k]; !ok {
			*del = append(*del, conv(k))
		}
	}
	for k, v := range want {
		if w, ok := old[k]; !ok || w != v {
			*putK = append(*putK, conv(k))
			*putV = append(*putV, convV(v))
		}
	}
}

func same[V any](v V) V { return v }

// writeDiff turns the buffer holding old into one holding want. Chains
// whose chainProg is the same on both sides are skipped without looking
// at their entries.
func writeDiff(buf buffer, old, want *program) (int, error) {
	ident, cls, pol := buf.ident, buf.cls, buf.pol
	var ikDel, ikPut []bpf.PolicyIdentKey
	var ivPut []uint32
	iput, idel, ok := identDiff(old, want)
	if !ok {
		return 0, errors.New("writing identity map: the inactive buffer's content is unknown")
	}
	for _, k := range idel {
		ikDel = append(ikDel, kernIdentKey(k))
	}
	for k, v := range iput {
		ikPut = append(ikPut, kernIdentKey(k))
		ivPut = append(ivPut, v)
	}
	var ckDel, ckPut []bpf.PolicyClsKey
	var cvPut []uint32
	var pkDel, pkPut []bpf.PolicyPolKey
	var pvPut []bpf.PolicyVerdict
	empty := &chainProg{}
	for k, oc := range old.chains {
		if _, ok := want.chains[k]; !ok {
			diffMap(oc.cls, empty.cls, kernClsKey, same[uint32], &ckDel, &ckPut, &cvPut)
			diffMap(oc.pol, empty.pol, kernPolKey, kernVerdict, &pkDel, &pkPut, &pvPut)
		}
	}
	for k, wc := range want.chains {
		oc := old.chains[k]
		if oc == wc {
			continue
		}
		if oc == nil {
			oc = empty
		}
		diffMap(oc.cls, wc.cls, kernClsKey, same[uint32], &ckDel, &ckPut, &cvPut)
		diffMap(oc.pol, wc.pol, kernPolKey, kernVerdict, &pkDel, &pkPut, &pvPut)
	}
	n := 0
	if err := putAll(ident, ikPut, ivPut); err != nil {
		return n, fmt.Errorf("writing identity map: %w", err)
	}
	n += len(ikPut)
	if err := delAll(ident, ikDel); err != nil {
		return n, fmt.Errorf("writing identity map: %w", err)
	}
	n += len(ikDel)
	if err := putAll(cls, ckPut, cvPut); err != nil {
		return n, fmt.Errorf("writing class map: %w", err)
	}
	n += len(ckPut)
	if err := delAll(cls, ckDel); err != nil {
		return n, fmt.Errorf("writing class map: %w", err)
	}
	n += len(ckDel)
	if err := putAll(pol, pkPut, pvPut); err != nil {
		return n, fmt.Errorf("writing policy map: %w", err)
	}
	n += len(pkPut)
	if err := delAll(pol, pkDel); err != nil {
		return n, fmt.Errorf("writing policy map: %w", err)
	}
	n += len(pkDel)
	return n, nil
}

func putAll[K, V any](m *cebpf.Map, keys []K, vals []V) error {
	if len(keys) == 0 {
		return nil
	}
	if _, err := m.BatchUpdate(keys, vals, nil); err == nil {
		return nil
	} else if !errors.Is(err, cebpf.ErrNotSupported) {
		return err
	}
	for i := range keys {
		if err := m.Update(&keys[i], &vals[i], cebpf.UpdateAny); err != nil {
			return err
		}
	}
	return nil
}

func delAll[K any](m *cebpf.Map, keys []K) error {
	if len(keys) == 0 {
		return nil
	}
	if _, err := m.BatchDelete(keys, nil); err == nil {
		return nil
	} else if !errors.Is(err, cebpf.ErrNotSupported) {
		return err
	}
	for i := range keys {
		if err := m.Delete(&keys[i]); err != nil && !errors.Is(err, cebpf.ErrKeyNotExist) {
			return err
		}
	}
	return nil
}

// revoke deletes the conntrack entries of endpoints with CutConnections
// that prog no longer allows. It returns how many it deleted.
func (b *Backend) revoke(np *ir.NodePolicy, ifindex map[string]uint32, prog *program) (int, error) {
	cut := map[uint32]bool{}
	for i := range np.Endpoints {
		if ep := &np.Endpoints[i]; ep.CutConnections {
			if idx, ok := ifindex[ep.Name]; ok {
				cut[idx] = true
			}
		}
	}
	if len(cut) == 0 {
		return 0, nil
	}
	var k bpf.PolicyCtKey
	var v bpf.PolicyCtVal
	var del []bpf.PolicyCtKey
	it := b.objs.Ct.Iterate()
	for it.Next(&k, &v) {
		if !cut[k.Ifindex] {
			continue
		}
		var svc bpf.PolicySvcDst
		var backend *bpf.PolicySvcDst
		if err := b.objs.SvcCt.Lookup(&k, &svc); err == nil {
			backend = &svc
		}
		if !ctAllowed(prog, &k, &v, backend) {
			del = append(del, k)
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("reading conntrack map: %w", err)
	}
	n := 0
	for i := range del {
		if err := b.objs.Ct.Delete(&del[i]); err != nil && !errors.Is(err, cebpf.ErrKeyNotExist) {
			return n, fmt.Errorf("deleting conntrack entry: %w", err)
		}
		_ = b.objs.SvcCt.Delete(&del[i])
		n++
	}
	return n, nil
}

// ctAllowed judges a tracked connection by prog, as the datapath judged
// its first packet: a Service connection (backend set) by its backend.
func ctAllowed(prog *program, k *bpf.PolicyCtKey, v *bpf.PolicyCtVal, backend *bpf.PolicySvcDst) bool {
	remote := netip.AddrFrom16(k.Remote).Unmap()
	dir := ir.Direction(v.Origin)
	port := ntohs(k.Rport) // egress: the remote end's port
	if dir == ir.Ingress {
		port = ntohs(k.Lport)
	}
	if backend != nil && dir == ir.Egress {
		remote, port = netip.AddrFrom16(backend.Addr).Unmap(), ntohs(backend.Port)
	}
	id := prog.lookupIdentity(remote)
	return prog.lookupVerdict(k.Ifindex, id, dir, ir.Protocol(k.Proto), port).Flags&flagDeny == 0
}

// Close implements dataplane.Dataplane: handles are released, programs,
// links and maps stay in force.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	b.closeHandles()
	return nil
}

func (b *Backend) closeHandles() {
	b.objs.Close()
	if b.nl != nil {
		b.nl.Close()
	}
	if b.ns.IsOpen() {
		b.ns.Close()
	}
}

// Uninstall implements dataplane.Dataplane: it detaches every program the
// backend attached and removes its pin directory.
func (b *Backend) Uninstall(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	var errs []error
	if err := b.detachAll(nil); err != nil {
		errs = append(errs, err)
	}
	if err := b.removeClsact(nil); err != nil {
		errs = append(errs, err)
	}
	b.objs.Close()
	b.objs = bpf.PolicyObjects{}
	if err := os.RemoveAll(b.opts.PinDir); err != nil {
		errs = append(errs, fmt.Errorf("removing pins: %w", err))
	}
	// The shared root goes with its last pin directory; another netns's
	// backend may still use it, so a non-empty root stays.
	if root := filepath.Dir(b.opts.PinDir); root == DefaultPinRoot {
		if err := os.Remove(root); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
			errs = append(errs, fmt.Errorf("removing pin root %s: %w", root, err))
		}
	}
	b.closed = true
	if b.nl != nil {
		b.nl.Close()
	}
	if b.ns.IsOpen() {
		b.ns.Close()
	}
	b.applied = nil
	return errors.Join(errs...)
}

// removeOldLayouts deletes map pin directories of other layout versions
// once the links run programs that use this layout's maps.
func (b *Backend) removeOldLayouts() error {
	ents, err := os.ReadDir(b.opts.PinDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if !e.IsDir() || e.Name() == LayoutVersion || e.Name() == "links" || !strings.HasPrefix(e.Name(), "v") {
			continue
		}
		b.log.Info("removing maps of an old layout", "dir", e.Name())
		errs = append(errs, os.RemoveAll(filepath.Join(b.opts.PinDir, e.Name())))
	}
	return errors.Join(errs...)
}

// attachKey is a canonical text of the interfaces that carry programs.
func attachKey(ifindex map[string]uint32, uplinks []uint32) string {
	idx := make([]uint32, 0, len(ifindex))
	for _, i := range ifindex {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	up := slices.Clone(uplinks)
	slices.Sort(up)
	return fmt.Sprint(idx, up)
}

// ProgramStats returns the kernel's run count and run time of the
// datapath programs (from_pod, to_pod, svc_out). Both stay 0 unless BPF
// statistics are enabled.
func (b *Backend) ProgramStats() ([]ProgramStats, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	var out []ProgramStats
	for _, p := range []struct {
		name string
		prog *cebpf.Program
	}{{"from_pod", b.objs.FromPod}, {"to_pod", b.objs.ToPod}, {"svc_out", b.objs.SvcOut}} {
		st, err := p.prog.Stats()
		if err != nil {
			return nil, fmt.Errorf("program %s: %w", p.name, err)
		}
		out = append(out, ProgramStats{Name: p.name, RunCount: st.RunCount, Runtime: st.Runtime})
	}
	return out, nil
}

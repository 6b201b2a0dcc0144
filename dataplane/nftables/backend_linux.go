//go:build linux

package nftables

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/dataplane/conntrack"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// elementChunk is the most set elements sent in one netlink message: one
// message carries all its elements in one attribute with a 16-bit length,
// and the kernel silently keeps only a prefix past 64 KiB.
const elementChunk = 1000

// socketBuffer is the forced send and receive buffer of the netlink
// socket, so that large transactions and their acks fit: the kernel
// queues one ack per message (about 700 bytes of buffer each, even with
// NETLINK_CAP_ACK) before the backend reads any, so 64 MiB holds the acks
// of roughly 90,000 messages (rules, chains, element batches).
const socketBuffer = 64 << 20

// Backend enforces an ir.NodePolicy in one nftables table it owns.
type Backend struct {
	opts  Options
	log   logr.Logger
	ns    vnetns.NsHandle
	conn  *nftables.Conn
	table *nftables.Table

	mu sync.Mutex
	// applied is the state the kernel holds after the last successful
	// transaction, nil when unknown (first Sync, failed Sync, Uninstall).
	applied *state
	policy  *ir.NodePolicy
	// pendingCut holds endpoints whose revocation failed; retried next Sync.
	pendingCut map[string]bool
	ruleIDs    map[uint32]string
	cache      *compileCache
	stats      Stats
	gen        *genReader
	// knownGen is the ruleset generation right after the backend's last
	// commit or successful verification, 0 when unknown.
	knownGen uint32
}

var _ dataplane.Dataplane = (*Backend)(nil)

// ErrClosed is returned by calls on a closed Backend.
var ErrClosed = errors.New("nftables backend closed")

// New opens a netlink connection in the namespace opts.NetNSPath (the
// current one when empty). It changes nothing in the kernel: the table is
// written by the first Sync.
func New(opts Options) (*Backend, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	b := &Backend{opts: opts, log: opts.Logger.WithName("nftables"), ns: vnetns.None(), ruleIDs: map[uint32]string{}, pendingCut: map[string]bool{}, cache: newCompileCache()}
	copts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(forceBuffers)}
	if opts.NetNSPath != "" {
		h, err := netns.Open(opts.NetNSPath)
		if err != nil {
			return nil, fmt.Errorf("opening nftables backend: %w", err)
		}
		b.ns = h
		copts = append(copts, nftables.WithNetNSFd(int(h)))
	}
	c, err := nftables.New(copts...)
	if err != nil {
		if b.ns.IsOpen() {
			b.ns.Close()
		}
		return nil, fmt.Errorf("opening nftables netlink connection: %w", err)
	}
	b.conn = c
	nsFd := 0
	if b.ns.IsOpen() {
		nsFd = int(b.ns)
	}
	g, err := newGenReader(nsFd)
	if err != nil {
		_ = c.CloseLasting()
		if b.ns.IsOpen() {
			b.ns.Close()
		}
		return nil, fmt.Errorf("opening nftables backend: %w", err)
	}
	b.gen = g
	b.table = &nftables.Table{Name: opts.TableName, Family: nftables.TableFamilyINet}
	return b, nil
}

func forceBuffers(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	var serr error
	cerr := rc.Control(func(fd uintptr) {
		for _, opt := range []int{unix.SO_SNDBUFFORCE, unix.SO_RCVBUFFORCE} {
			if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, socketBuffer); err != nil {
				serr = errors.Join(serr, fmt.Errorf("setsockopt %d: %w", opt, err))
			}
		}
	})
	if cerr != nil {
		return cerr
	}
	// Acks then carry only the header of the request, not the whole
	// request: one ack per message of a large transaction must fit in
	// the receive buffer.
	_ = c.SetOption(netlink.CapAcknowledge, true)
	_ = c.SetOption(netlink.ExtendedAcknowledge, true)
	if serr != nil {
		// Without CAP_NET_ADMIN the forced sizes fail; fall back to the
		// capped ones.
		_ = c.SetWriteBuffer(socketBuffer)
		_ = c.SetReadBuffer(socketBuffer)
	}
	return nil
}

// Name implements dataplane.Dataplane.
func (b *Backend) Name() string { return "nftables" }

// TableName is the name of the inet table the backend owns.
func (b *Backend) TableName() string { return b.opts.TableName }

// Stats returns the backend's transaction counters.
func (b *Backend) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// RuleID returns the rule ID of a numeric id from an nflog prefix.
func (b *Backend) RuleID(num uint32) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	id, ok := b.ruleIDs[num]
	return id, ok
}

// Sync implements dataplane.Dataplane.
func (b *Backend) Sync(ctx context.Context, desired *ir.NodePolicy) error {
	if err := Validate(desired); err != nil {
		return fmt.Errorf("validating policy for nftables: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn == nil {
		return ErrClosed
	}
	log := logr.FromContextOrDiscard(ctx).WithName("nftables")
	if log.GetSink() == nil {
		log = b.log
	}
	compileStart := time.Now()
	want := compileWith(b.cache, desired, compileOptions{logGroup: b.opts.NFLogGroup, logOn: !b.opts.DisableNFLog})
	b.stats.LastCompile = time.Since(compileStart)
	for k, v := range b.cache.ids {
		b.ruleIDs[k] = v
	}
	clear(b.cache.ids)
	old := b.applied
	oldPolicy := b.policy

	start := time.Now()
	mode := ""
	b.stats.LastCommit = 0
	var ops int
	var err error
	switch {
	case old == nil:
		// After a restart the kernel may already hold exactly this
		// state: adopt it without writing.
		if b.verifyLocked(want) == nil {
			mode = "noop"
			b.stats.Adopted++
			b.knownGen, _ = b.gen.get()
		} else {
			mode = "rebuild"
			ops, err = b.rebuild(want)
		}
	default:
		d := diff(old, want)
		switch {
		case d.empty():
			if b.unchangedSinceKnown() {
				mode = "noop"
				b.stats.GenerationHits++
			} else if verr := b.verifyLocked(old); verr != nil {
				log.Info("drift detected, rebuilding table", "table", b.opts.TableName, "reason", verr.Error())
				b.stats.DriftRepairs++
				mode = "rebuild"
				ops, err = b.rebuild(want)
			} else {
				mode = "noop"
				b.knownGen, _ = b.gen.get()
			}
		case d.ops > b.opts.MaxDeltaOps || d.ops > want.ruleCount()+want.elementCount():
			mode = "rebuild"
			ops, err = b.rebuild(want)
		default:
			mode = "delta"
			ops, err = b.applyDelta(old, want, d)
		}
	}
	if err != nil {
		b.applied, b.policy = nil, nil
		b.knownGen = 0
		b.stats.Failures++
		return fmt.Errorf("programming nft table %s (%s): %w", b.opts.TableName, mode, err)
	}
	b.applied, b.policy = want, desired
	b.stats.LastOps = ops
	b.stats.LastDuration = time.Since(start)
	switch mode {
	case "rebuild":
		b.stats.Rebuilds++
	case "delta":
		b.stats.Deltas++
	case "noop":
		b.stats.NoOps++
	}
	log.V(1).Info("synced", "mode", mode, "ops", ops, "duration", b.stats.LastDuration)

	if b.opts.DisableConnectionCutting || !anyCut(desired) {
		return nil
	}
	cut := revoked(oldPolicy, old, desired, want)
	for name := range b.pendingCut {
		cut[name] = true
	}
	if len(cut) == 0 {
		return nil
	}
	names := make([]string, 0, len(cut))
	for n := range cut {
		if ep := desired.Endpoint(n); ep != nil && ep.CutConnections {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil
	}
	res, cerr := conntrack.Revoke(ctx, b.opts.NetNSPath, desired, names)
	b.stats.ConnectionsCut += res.Deleted
	if cerr != nil {
		for _, n := range names {
			b.pendingCut[n] = true
		}
		return fmt.Errorf("cutting revoked connections: %w", cerr)
	}
	clear(b.pendingCut)
	if res.Deleted > 0 {
		log.Info("cut revoked connections", "deleted", res.Deleted, "endpoints", names)
	}
	return nil
}

func anyCut(np *ir.NodePolicy) bool {
	for i := range np.Endpoints {
		if np.Endpoints[i].CutConnections {
			return true
		}
	}
	return false
}

// revoked returns the endpoints whose verdicts may have narrowed: new
// endpoints after an unknown state, endpoints whose chains changed, and
// endpoints whose rules reference a set whose contents changed.
func revoked(oldPolicy *ir.NodePolicy, old *state, desired *ir.NodePolicy, want *state) map[string]bool {
	out := map[string]bool{}
	for i := range desired.Endpoints {
		n := desired.Endpoints[i].Name
		if old == nil || oldPolicy == nil {
			out[n] = true
			continue
		}
		ok, had := old.endpointKey[n]
		if !had || ok != want.endpointKey[n] {
			out[n] = true
			continue
		}
		for _, s := range want.endpointSets[n] {
			if want.changedSets[s] {
				out[n] = true
				break
			}
			a, b := oldPolicy.Set(s), desired.Set(s)
			if a == nil || b == nil || !equalPrefixes(a.Prefixes, b.Prefixes) {
				out[n] = true
				break
			}
		}
	}
	return out
}

// Verify compares the kernel's table with the state of the last
// successful Sync and returns an error describing the first differences.
func (b *Backend) Verify(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn == nil {
		return ErrClosed
	}
	if b.applied == nil {
		return errors.New("no policy applied")
	}
	return b.verifyLocked(b.applied)
}

// Close implements dataplane.Dataplane. The table stays in force.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var err error
	if b.conn != nil {
		err = b.conn.CloseLasting()
		b.conn = nil
	}
	if b.gen != nil {
		_ = b.gen.close()
		b.gen = nil
	}
	if b.ns.IsOpen() {
		b.ns.Close()
		b.ns = vnetns.None()
	}
	return err
}

// unchangedSinceKnown reports whether no transaction was committed in the
// namespace since the backend's last own commit or verification.
func (b *Backend) unchangedSinceKnown() bool {
	if b.knownGen == 0 || b.opts.AlwaysVerify {
		return false
	}
	g, err := b.gen.get()
	return err == nil && g == b.knownGen
}

// commit flushes x and records the generation it produced, when it is
// certain that no other transaction came between.
func (b *Backend) commit(x *txn) error {
	before, gerr := b.gen.get()
	b.knownGen = 0
	start := time.Now()
	err := x.flush()
	b.stats.LastCommit = time.Since(start)
	if err != nil {
		return err
	}
	after, aerr := b.gen.get()
	if gerr == nil && aerr == nil && after == before+1 {
		b.knownGen = after
	}
	return nil
}

// Uninstall implements dataplane.Dataplane: it deletes the table.
func (b *Backend) Uninstall(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn == nil {
		return ErrClosed
	}
	b.applied, b.policy = nil, nil
	b.knownGen = 0
	// Add then delete, so that a missing table is not an error.
	b.conn.AddTable(b.table)
	b.conn.DelTable(b.table)
	if err := b.conn.Flush(); err != nil {
		return fmt.Errorf("deleting nft table %s: %w", b.opts.TableName, err)
	}
	return nil
}

// --- transactions ---

type txn struct {
	c   *nftables.Conn
	t   *nftables.Table
	ops int
	err error
}

// setOf returns the library's description of map m.
func (x *txn) setOf(m *mapSpec) *nftables.Set {
	at := nftables.TypeIPAddr
	if m.v6 {
		at = nftables.TypeIP6Addr
	}
	s := &nftables.Set{Table: x.t, Name: m.name, KeyType: at, IsMap: !m.set}
	switch {
	case m.logDrop != "":
		s.DataType = nftables.TypeMark
	case !m.set:
		s.DataType = nftables.TypeVerdict
	}
	switch m.kind {
	case mapAddrProtoPort:
		s.KeyType = nftables.MustConcatSetType(at, nftables.TypeInetProto, nftables.TypeInetService)
		s.Interval, s.Concatenation = !m.exact, true
	case mapAddrProto:
		s.KeyType = nftables.MustConcatSetType(at, nftables.TypeInetProto)
		s.Interval, s.Concatenation = !m.exact, true
	}
	return s
}

func (x *txn) chain(c *chainSpec) *nftables.Chain {
	ch := &nftables.Chain{Table: x.t, Name: c.name}
	if c.base {
		p := nftables.ChainPriority(c.prio)
		pol := nftables.ChainPolicyAccept
		ch.Type = nftables.ChainTypeFilter
		ch.Hooknum = nftables.ChainHookForward
		ch.Priority = &p
		ch.Policy = &pol
	}
	return ch
}

// addMap creates m with all its elements.
func (x *txn) addMap(m *mapSpec) {
	ns := x.setOf(m)
	if err := x.c.AddSet(ns, nil); err != nil {
		x.err = errors.Join(x.err, fmt.Errorf("adding map %s: %w", m.name, err))
	}
	x.ops++
	x.elements(ns, sortedElems(m.elems), true)
}

// elementBytes is the most element payload sent in one netlink message:
// all elements of one message go into one attribute with a 16-bit
// length, and past 64 KiB the kernel silently keeps only a prefix.
const elementBytes = 48 << 10

// elements adds or deletes es in messages of at most elementChunk
// elements and about elementBytes bytes.
func (x *txn) elements(s *nftables.Set, es []mapElem, add bool) {
	send := func(batch []nftables.SetElement) {
		if len(batch) == 0 {
			return
		}
		var err error
		if add {
			err = x.c.SetAddElements(s, batch)
		} else {
			err = x.c.SetDeleteElements(s, batch)
		}
		if err != nil {
			x.err = errors.Join(x.err, fmt.Errorf("map %s elements: %w", s.Name, err))
		}
		x.ops += len(batch)
	}
	var batch []nftables.SetElement
	size := 0
	for _, e := range es {
		ne := nftables.SetElement{Key: e.key, KeyEnd: e.keyEnd}
		switch {
		case !add || !s.IsMap:
		case s.DataType == nftables.TypeMark:
			// a drop-log map: the rule number, big-endian, so that
			// nft lists it as the number of the log prefixes (the
			// packet mark then holds these bytes; see FlowReader)
			ne.Val = binaryutil.BigEndian.PutUint32(ruleNumberOf(e.v.chain))
		default:
			ne.VerdictData = &expr.Verdict{Kind: e.v.kind, Chain: e.v.chain}
		}
		// attribute headers, key, key end, verdict and its chain name
		sz := 48 + len(e.key) + len(e.keyEnd) + len(e.v.chain)
		if len(batch) == elementChunk || size+sz > elementBytes {
			send(batch)
			batch, size = nil, 0
		}
		batch = append(batch, ne)
		size += sz
	}
	send(batch)
}

func sortElems(es []mapElem) {
	sort.Slice(es, func(i, j int) bool { return elemID(es[i]) < elemID(es[j]) })
}

// sortedElems returns the elements of a map in key order.
func sortedElems(m map[string]mapElem) []mapElem {
	out := make([]mapElem, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, m[k])
	}
	return out
}

func (x *txn) rules(c *chainSpec) {
	ch := x.chain(c)
	for _, r := range c.rules {
		nr := &nftables.Rule{Table: x.t, Chain: ch, Exprs: r.exprs}
		if r.comment != "" {
			nr.UserData = commentUserData(r.comment)
		}
		x.c.AddRule(nr)
		x.ops++
	}
}

func (x *txn) flush() error {
	if x.err != nil {
		return x.err
	}
	return x.c.Flush()
}

// rebuild replaces the whole table in one transaction: the regular
// chains (empty), the maps with their elements (which jump to those
// chains), then every chain's rules, base chains last.
func (b *Backend) rebuild(st *state) (int, error) {
	x := &txn{c: b.conn, t: b.table}
	x.c.AddTable(b.table)
	x.c.DelTable(b.table)
	x.c.AddTable(b.table)
	x.ops += 3
	order := st.sortedChains()
	for _, n := range order {
		if !st.chains[n].base {
			x.c.AddChain(x.chain(st.chains[n]))
			x.ops++
		}
	}
	for _, n := range sortedKeys(st.maps) {
		x.addMap(st.maps[n])
	}
	for _, n := range order {
		c := st.chains[n]
		if c.base {
			x.c.AddChain(x.chain(c))
			x.ops++
		}
		x.rules(c)
	}
	return x.ops, b.commit(x)
}

// delta is the difference between two states.
type delta struct {
	ops           int
	newMaps       []string
	delMaps       []string
	elemAdds      map[string][]mapElem
	elemDels      map[string][]mapElem
	newChains     []string
	changedChains []string
	delChains     []string
}

func (d *delta) empty() bool { return d.ops == 0 }

func diff(old, want *state) *delta {
	d := &delta{elemAdds: map[string][]mapElem{}, elemDels: map[string][]mapElem{}}
	if old.shape != nil && old.shape == want.shape {
		// The same chains and maps: only in-place patches differ.
		for n, p := range want.patches {
			if _, ok := want.maps[n]; !ok {
				continue
			}
			d.elemDels[n] = append(d.elemDels[n], p.dels...)
			d.elemAdds[n] = append(d.elemAdds[n], p.adds...)
			d.ops += len(p.dels) + len(p.adds)
		}
		return d
	}
	for n, w := range want.maps {
		o, ok := old.maps[n]
		if !ok {
			d.newMaps = append(d.newMaps, n)
			d.ops += 1 + len(w.elems)
			continue
		}
		if o == w {
			// The same compiled map (from the cache), possibly
			// patched in place since the old state.
			if p := want.patches[n]; p != nil {
				d.elemDels[n] = append(d.elemDels[n], p.dels...)
				d.elemAdds[n] = append(d.elemAdds[n], p.adds...)
				d.ops += len(p.dels) + len(p.adds)
			}
			continue
		}
		for k, e := range w.elems {
			oe, had := o.elems[k]
			if had && oe.v == e.v {
				continue
			}
			if had {
				d.elemDels[n] = append(d.elemDels[n], oe)
				d.ops++
			}
			d.elemAdds[n] = append(d.elemAdds[n], e)
			d.ops++
		}
		for k, e := range o.elems {
			if _, ok := w.elems[k]; !ok {
				d.elemDels[n] = append(d.elemDels[n], e)
				d.ops++
			}
		}
		sortElems(d.elemAdds[n])
		sortElems(d.elemDels[n])
	}
	for n := range old.maps {
		if _, ok := want.maps[n]; !ok {
			d.delMaps = append(d.delMaps, n)
			d.ops++
		}
	}
	sort.Strings(d.newMaps)
	sort.Strings(d.delMaps)
	for n, w := range want.chains {
		o, ok := old.chains[n]
		switch {
		case !ok:
			d.newChains = append(d.newChains, n)
			d.ops += 1 + len(w.rules)
		case o != w && !equalRules(o.rules, w.rules):
			d.changedChains = append(d.changedChains, n)
			d.ops += 1 + len(w.rules)
		}
	}
	for n := range old.chains {
		if _, ok := want.chains[n]; !ok {
			d.delChains = append(d.delChains, n)
			d.ops += 2
		}
	}
	sort.Strings(d.newChains)
	sort.Strings(d.changedChains)
	sort.Strings(d.delChains)
	return d
}

// applyDelta applies d in one transaction. Order: new chains (empty), new
// maps with their elements, element changes, the rules of new and
// rewritten chains, then removals: chains nothing jumps to any more are
// flushed, maps nothing looks up are deleted, and last those chains.
func (b *Backend) applyDelta(old, want *state, d *delta) (int, error) {
	x := &txn{c: b.conn, t: b.table}
	for _, n := range d.newChains {
		x.c.AddChain(x.chain(want.chains[n]))
		x.ops++
	}
	for _, n := range d.newMaps {
		x.addMap(want.maps[n])
	}
	for _, n := range sortedKeys(d.elemDels) {
		x.elements(x.setOf(want.maps[n]), d.elemDels[n], false)
	}
	for _, n := range sortedKeys(d.elemAdds) {
		x.elements(x.setOf(want.maps[n]), d.elemAdds[n], true)
	}
	for _, n := range d.newChains {
		x.rules(want.chains[n])
	}
	for _, n := range d.changedChains {
		x.c.FlushChain(x.chain(want.chains[n]))
		x.ops++
		x.rules(want.chains[n])
	}
	for _, n := range d.delChains {
		x.c.FlushChain(x.chain(old.chains[n]))
	}
	for _, n := range d.delMaps {
		x.c.DelSet(x.setOf(old.maps[n]))
		x.ops++
	}
	for _, n := range d.delChains {
		x.c.DelChain(x.chain(old.chains[n]))
		x.ops += 2
	}
	return x.ops, b.commit(x)
}

//go:build linux

package ebpf

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
	cebpf "github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// benchBackend opens a backend on a bare namespace whose endpoints get
// made-up interface indexes: it measures map updates, not attachment.
func benchBackend(b *testing.B, np *ir.NodePolicy) *Backend {
	b.Helper()
	testenv.RequireRoot(b)
	name := "bh-ebpf-bench-" + randSuffix()
	if err := netns.Create(name); err != nil {
		b.Fatalf("creating netns: %v", err)
	}
	b.Cleanup(func() {
		if err := netns.Delete(name); err != nil {
			b.Errorf("deleting netns: %v", err)
		}
	})
	be := newBackend(b, netns.Path(name), Options{DisableConnectionCutting: true})
	be.benchIfindex = map[string]uint32{}
	for i, ep := range np.Endpoints {
		be.benchIfindex[ep.Name] = uint32(1000 + i)
	}
	return be
}

func BenchmarkCompile(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			np := dptest.RulesPolicy(n)
			ifx := map[string]uint32{}
			for i, ep := range np.Endpoints {
				ifx[ep.Name] = uint32(1000 + i)
			}
			var prog *program
			for i := 0; i < b.N; i++ {
				var err error
				if prog, err = compile(np, ifx, newAllocator()); err != nil {
					b.Fatal(err)
				}
			}
			nCls, nPol := prog.counts()
			b.ReportMetric(float64(nPol), "policy-entries")
			b.ReportMetric(float64(prog.identCount()), "ident-entries")
			b.ReportMetric(float64(nCls), "class-entries")
		})
	}
}

// BenchmarkSyncFull measures a Sync that writes a whole policy into an
// empty buffer and flips: compile, map writes and the swap.
func BenchmarkSyncFull(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			np := dptest.RulesPolicy(n)
			be := benchBackend(b, np)
			empty := &ir.NodePolicy{Node: "bench"}
			tiny := &ir.NodePolicy{Node: "bench", Sets: []ir.AddressSet{dptest.Set("tiny", netip.MustParsePrefix("10.99.0.0/16"))}}
			writes := 0
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				// Empty both buffers: the inactive one holds the policy
				// of two Syncs ago.
				for _, p := range []*ir.NodePolicy{empty, tiny, empty} {
					if err := be.Sync(ctx, p); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				if err := be.Sync(ctx, np); err != nil {
					b.Fatal(err)
				}
				writes = be.Stats().LastWrites
			}
			b.StopTimer()
			st := be.Stats()
			if writes < st.IdentEntries+st.ClassEntries+st.PolicyEntries {
				b.Fatalf("wrote %d entries, want the whole policy (%d)", writes, st.IdentEntries+st.ClassEntries+st.PolicyEntries)
			}
			b.ReportMetric(float64(writes), "writes")
		})
	}
}

// BenchmarkSyncDelta measures small changes: one more address in a set,
// a quarantine moving from one endpoint to the next, and one rule of one
// endpoint changing its port (a one-endpoint delta). Each change arrives
// on its own: the timer stops for the 10 ms after the previous flip that
// a Sync would otherwise wait for the buffer (flipGuard), so ns/op is the
// Sync's own time. cpu-ms/op is the process's CPU time (user+system, GC
// included) per Sync, which a loaded machine inflates less than wall
// time.
func BenchmarkSyncDelta(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{100, 1000, 10000} {
		for _, c := range []string{"set-element", "quarantine-endpoint", "one-endpoint-rule"} {
			b.Run(fmt.Sprintf("rules=%d/%s", n, c), func(b *testing.B) {
				np := dptest.RulesPolicy(n)
				be := benchBackend(b, np)
				if err := be.Sync(ctx, np); err != nil {
					b.Fatal(err)
				}
				if err := be.Sync(ctx, np); err != nil {
					b.Fatal(err)
				}
				q := dptest.Tier(ir.TierQuarantine, dptest.Rule("Quarantine/ns/q", "", false, ir.Deny))
				orig := np.Endpoints[0].Ingress.Tiers
				total := 0
				var compileT, writeT, cpuT time.Duration
				// Two untimed rounds first, so that both buffers hold
				// the policy and the timed ones write only the change.
				for i := -2; i < b.N; i++ {
					if i == 0 {
						b.ResetTimer()
						total, compileT, writeT, cpuT = 0, 0, 0, 0
					}
					switch c {
					case "set-element":
						j := i + 2
						s := &np.Sets[j%len(np.Sets)]
						s.Prefixes = append(s.Prefixes, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 246, byte(j >> 8), byte(j)}), 32))
					case "one-endpoint-rule":
						j := i + 2
						ep := &np.Endpoints[j%len(np.Endpoints)]
						r := &ep.Ingress.Tiers[1].Rules[0]
						r.Ports = []ir.PortRange{{Protocol: ir.TCP, From: uint16(2000 + j), To: uint16(2000 + j)}}
					case "quarantine-endpoint":
						j := i + 2
						prev := &np.Endpoints[(j+len(np.Endpoints)-1)%len(np.Endpoints)]
						prev.Quarantined, prev.Ingress.Tiers, prev.Egress.Tiers = false, orig, nil
						ep := &np.Endpoints[j%len(np.Endpoints)]
						ep.Quarantined = true
						ep.Ingress.Tiers = []ir.Tier{q}
						ep.Egress.Tiers = []ir.Tier{q}
					}
					cpuT += timedSync(ctx, b, be, np)
					st := be.Stats()
					total += st.LastWrites
					compileT += st.LastCompile
					writeT += st.LastMapWrite
				}
				b.StopTimer()
				b.ReportMetric(float64(total)/float64(b.N), "writes/op")
				b.ReportMetric(float64(compileT.Microseconds())/1000/float64(b.N), "compile-ms/op")
				b.ReportMetric(float64(writeT.Microseconds())/1000/float64(b.N), "mapwrite-ms/op")
				b.ReportMetric(float64(cpuT.Microseconds())/1000/float64(b.N), "cpu-ms/op")
			})
		}
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSyncDeltaAttached measures one address added to a set on a
// real topology: the Sync also resolves every endpoint's interface by
// route lookup and reconciles the attached TCX links, which the other
// benchmarks leave out. Pods get the 20 rules each of RulesPolicy.
func BenchmarkSyncDeltaAttached(b *testing.B) {
	ctx := context.Background()
	for _, pods := range []int{10, 40} {
		b.Run(fmt.Sprintf("pods=%d", pods), func(b *testing.B) {
			topo := dptest.NewTopology(b, pods)
			be := newBackend(b, topo.NodePath, Options{})
			np := dptest.RulesPolicy(20 * pods)
			for i, p := range topo.Pods {
				np.Endpoints[i].Name, np.Endpoints[i].IPs = p.Name, p.IPs()
			}
			var compileT, cpuT time.Duration
			for i := -2; i < b.N; i++ {
				if i == 0 {
					b.ResetTimer()
					compileT, cpuT = 0, 0
				}
				j := i + 2
				s := &np.Sets[j%len(np.Sets)]
				s.Prefixes = append(s.Prefixes, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 246, byte(j >> 8), byte(j)}), 32))
				cpuT += timedSync(ctx, b, be, np)
				compileT += be.Stats().LastCompile
			}
			b.StopTimer()
			if st := be.Stats(); st.Attached != pods {
				b.Fatalf("%d interfaces attached, want %d", st.Attached, pods)
			}
			b.ReportMetric(float64(compileT.Microseconds())/1000/float64(b.N), "compile-ms/op")
			b.ReportMetric(float64(cpuT.Microseconds())/1000/float64(b.N), "cpu-ms/op")
		})
	}
}

// timedSync waits out the flip guard with the timer stopped (a Sync right
// after a flip waits for the buffer by design), then times one Sync and
// returns the process CPU time it took.
func timedSync(ctx context.Context, b *testing.B, be *Backend, np *ir.NodePolicy) time.Duration {
	b.StopTimer()
	time.Sleep(flipGuard)
	cpu0 := cpuTime(b)
	b.StartTimer()
	if err := be.Sync(ctx, np); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	d := cpuTime(b) - cpu0
	b.StartTimer()
	return d
}

// tcpFrame is an Ethernet/IPv4/TCP frame from src:sport to dst:dport
// with the given TCP flags and payload bytes.
func tcpFrame(src, dst netip.Addr, sport, dport uint16, flags byte, payload int) []byte {
	f := make([]byte, 14+20+20+payload)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+20+payload))
	ip[8] = 64
	ip[9] = 6
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	tcp[12] = 5 << 4
	tcp[13] = flags
	return f
}

// BenchmarkEstablishedPacket runs the datapath programs in the kernel
// (BPF_PROG_TEST_RUN) on a data packet of an established TCP connection,
// with the 10k-rule policy installed: the per-packet cost of the
// established path, without the noise of a throughput test.
func BenchmarkEstablishedPacket(b *testing.B) {
	np := dptest.RulesPolicy(10000)
	be := benchBackend(b, np)
	if err := be.Sync(context.Background(), np); err != nil {
		b.Fatal(err)
	}
	client, server := netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("10.244.2.3")
	for _, c := range []struct {
		name     string
		prog     *cebpf.Program
		src, dst netip.Addr
	}{
		{"from_pod", be.objs.FromPod, client, server},
		{"to_pod", be.objs.ToPod, client, server},
	} {
		b.Run(c.name, func(b *testing.B) {
			const tcpSYN, tcpACK = 0x02, 0x10
			if ret, err := c.prog.Run(&cebpf.RunOptions{Data: tcpFrame(c.src, c.dst, 40000, 5201, tcpSYN, 0)}); err != nil || int32(ret) != -1 {
				b.Fatalf("SYN: verdict %d, %v; want -1 (allowed)", int32(ret), err)
			}
			pkt := tcpFrame(c.src, c.dst, 40000, 5201, tcpACK, 64)
			b.ResetTimer()
			ret, per, err := c.prog.Benchmark(pkt, b.N, b.ResetTimer)
			if err != nil || int32(ret) != -1 {
				b.Fatalf("ACK: verdict %d, %v; want -1 (allowed)", int32(ret), err)
			}
			b.ReportMetric(float64(per.Nanoseconds()), "ns/packet")
		})
	}
	// Both directions of one connection at once, on two CPUs, as a
	// bulk transfer runs them (data one way, ACKs the other): both
	// programs use the same conntrack entry.
	b.Run("both-directions-2cpu", func(b *testing.B) {
		if runtime.NumCPU() < 2 {
			b.Skip("needs 2 CPUs")
		}
		const tcpSYN, tcpACK = 0x02, 0x10
		if ret, err := be.objs.FromPod.Run(&cebpf.RunOptions{Data: tcpFrame(client, server, 40010, 5201, tcpSYN, 0)}); err != nil || int32(ret) != -1 {
			b.Fatalf("SYN: verdict %d, %v; want -1 (allowed)", int32(ret), err)
		}
		data := tcpFrame(client, server, 40010, 5201, tcpACK, 1400)
		ack := tcpFrame(server, client, 5201, 40010, tcpACK, 0)
		var wg sync.WaitGroup
		pers := make([]time.Duration, 2)
		errs := make([]error, 2)
		b.ResetTimer()
		for i, c := range []struct {
			prog *cebpf.Program
			pkt  []byte
		}{{be.objs.FromPod, data}, {be.objs.ToPod, ack}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				var set unix.CPUSet
				set.Set(i)
				if err := unix.SchedSetaffinity(0, &set); err != nil {
					errs[i] = err
					return
				}
				var ret uint32
				ret, pers[i], errs[i] = c.prog.Benchmark(c.pkt, b.N, func() {})
				if errs[i] == nil && int32(ret) != -1 {
					errs[i] = fmt.Errorf("verdict %d, want -1 (allowed)", int32(ret))
				}
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(pers[0].Nanoseconds()), "ns/data-packet")
		b.ReportMetric(float64(pers[1].Nanoseconds()), "ns/ack-packet")
	})
}

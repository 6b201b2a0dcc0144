//go:build linux

package nftables

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

func BenchmarkProgram(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			ns := nsOnly(b)
			be := newBackend(b, ns, Options{})
			np := dptest.RulesPolicy(n)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				if err := be.Uninstall(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := be.Sync(ctx, np); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if s := be.Stats(); s.Rebuilds != b.N || s.Adopted != 0 {
				b.Fatalf("stats %+v: want %d rebuilds", s, b.N)
			}
			be.mu.Lock()
			b.ReportMetric(float64(be.applied.ruleCount()), "nft-rules")
			b.ReportMetric(float64(be.applied.elementCount()), "elements")
			b.ReportMetric(float64(len(be.applied.maps)), "sets")
			b.ReportMetric(float64(len(be.applied.chains)), "chains")
			be.mu.Unlock()
		})
	}
}

func BenchmarkDelta(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{1000, 10000} {
		np := dptest.RulesPolicy(n)
		// "solo" is named by one rule of one endpoint: a change of its
		// contents is one element in one map.
		np.Sets = append(np.Sets, dptest.Set("solo", netip.MustParsePrefix("10.247.0.1/32")))
		sortSets(np)
		ep0 := &np.Endpoints[0]
		ep0.Ingress.Tiers[1].Rules = append(ep0.Ingress.Tiers[1].Rules, dptest.Rule("NetworkPolicy/ns/solo/ingress/0", "solo", false, ir.Accept, ir.PortRange{Protocol: ir.TCP, From: 9999, To: 9999}))
		// "tiny" is named by the only rule of an endpoint of its own: a
		// change of its contents is one element in a map of one or two,
		// whatever the table's size.
		np.Sets = append(np.Sets, dptest.Set("tiny", netip.MustParsePrefix("10.248.0.1/32")))
		sortSets(np)
		np.Endpoints = append(np.Endpoints, ir.Endpoint{
			Name: "zz/tiny", IPs: []netip.Addr{netip.MustParseAddr("10.243.0.1")},
			Ingress: ir.Chain{Tiers: []ir.Tier{dptest.Tier(ir.TierNetworkPolicy, dptest.Rule("NetworkPolicy/zz/tiny/ingress/0", "tiny", false, ir.Accept, ir.PortRange{Protocol: ir.TCP, From: 9998, To: 9998}))}},
		})
		// "zone": 50 endpoints in one zone of 300 scattered pods, each
		// with the zone boundary (a Pass for members, a Deny for
		// everyone else) and a NetworkPolicy accepting the zone's web
		// pods on one port. A change of the zone's members touches the
		// 50 endpoints' maps.
		zone, web := scatteredZone(300, 3, 249)
		np.Sets = append(np.Sets, dptest.Set("zone", zone...), dptest.Set("zone-web", web...))
		sortSets(np)
		for i := 0; i < 50; i++ {
			np.Endpoints = append(np.Endpoints, ir.Endpoint{
				Name: fmt.Sprintf("zz/zoned-%02d", i), IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 242, 0, byte(i + 1)})},
				Ingress: ir.Chain{Tiers: append(zoneBoundaryTiers("zone", "zone-web", fmt.Sprintf("NetworkPolicy/zz/zoned-%02d/ingress/0", i)),
					dptest.Tier(ir.TierBaseline, dptest.Rule("Zone/z/baseline", "", false, ir.Deny)))},
			})
		}
		cases := []struct {
			name string
			edit func(np *ir.NodePolicy, on bool)
		}{
			{"zone-member", func(np *ir.NodePolicy, on bool) {
				s := np.Set("zone")
				if on {
					s.Prefixes = append(s.Prefixes, netip.MustParsePrefix("10.249.9.9/32"))
				} else {
					s.Prefixes = s.Prefixes[:len(s.Prefixes)-1]
				}
			}},
			{"set-element", func(np *ir.NodePolicy, on bool) {
				s := &np.Sets[0]
				if on {
					s.Prefixes = append(s.Prefixes, netip.MustParsePrefix("10.246.0.1/32"))
				} else {
					s.Prefixes = s.Prefixes[:len(s.Prefixes)-1]
				}
			}},
			{"one-map-element", func(np *ir.NodePolicy, on bool) {
				s := np.Set("solo")
				if on {
					s.Prefixes = append(s.Prefixes, netip.MustParsePrefix("10.247.0.9/32"))
				} else {
					s.Prefixes = s.Prefixes[:1]
				}
			}},
			{"tiny-map-element", func(np *ir.NodePolicy, on bool) {
				s := np.Set("tiny")
				if on {
					s.Prefixes = append(s.Prefixes, netip.MustParsePrefix("10.248.0.9/32"))
				} else {
					s.Prefixes = s.Prefixes[:1]
				}
			}},
			{"quarantine-endpoint", func(np *ir.NodePolicy, on bool) {
				ep := &np.Endpoints[len(np.Endpoints)/2]
				q := dptest.Tier(ir.TierQuarantine, dptest.Rule("Quarantine/ns/q", "", false, ir.Deny))
				if on {
					ep.Quarantined = true
					ep.Ingress.Tiers = append([]ir.Tier{q}, ep.Ingress.Tiers...)
					ep.Egress.Tiers = []ir.Tier{q}
				} else {
					ep.Quarantined = false
					ep.Ingress.Tiers = ep.Ingress.Tiers[1:]
					ep.Egress.Tiers = nil
				}
			}},
		}
		for _, c := range cases {
			b.Run(fmt.Sprintf("rules=%d/%s", n, c.name), func(b *testing.B) {
				ns := nsOnly(b)
				be := newBackend(b, ns, Options{})
				if err := be.Sync(ctx, np); err != nil {
					b.Fatal(err)
				}
				before := be.Stats()
				compiled, patched := be.cache.compiledEndpoints, be.cache.patchedTiers
				var commit, compile, onCommit, offCommit time.Duration
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					c.edit(np, i%2 == 0)
					if err := be.Sync(ctx, np); err != nil {
						b.Fatal(err)
					}
					st := be.Stats()
					commit += st.LastCommit
					compile += st.LastCompile
					if i%2 == 0 {
						onCommit += st.LastCommit
					} else {
						offCommit += st.LastCommit
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(commit.Microseconds())/float64(b.N)/1000, "commit-ms/op")
				// The edits alternate: additions (or quarantine on) and
				// removals (quarantine off), each commit timed apart.
				b.ReportMetric(float64(onCommit.Microseconds())/float64((b.N+1)/2)/1000, "add-commit-ms/op")
				if b.N > 1 {
					b.ReportMetric(float64(offCommit.Microseconds())/float64(b.N/2)/1000, "del-commit-ms/op")
				}
				b.ReportMetric(float64(compile.Microseconds())/float64(b.N)/1000, "compile-ms/op")
				b.ReportMetric(float64(be.cache.compiledEndpoints-compiled)/float64(b.N), "compiled-endpoints/op")
				b.ReportMetric(float64(be.cache.patchedTiers-patched)/float64(b.N), "patched-tiers/op")
				if i := b.N % 2; i == 1 {
					c.edit(np, false)
				}
				s := be.Stats()
				if s.Rebuilds != before.Rebuilds || s.Deltas != before.Deltas+b.N {
					b.Fatalf("stats %+v: want only deltas", s)
				}
				b.ReportMetric(float64(s.LastOps), "ops")
			})
		}
	}
}

// BenchmarkResync measures an unchanged Sync (the periodic resync): with
// the generation check, and with a full Verify of the kernel table.
func BenchmarkResync(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{1000, 10000} {
		for _, always := range []bool{false, true} {
			name := fmt.Sprintf("rules=%d/generation-check", n)
			if always {
				name = fmt.Sprintf("rules=%d/full-verify", n)
			}
			b.Run(name, func(b *testing.B) {
				ns := nsOnly(b)
				be := newBackend(b, ns, Options{AlwaysVerify: always})
				np := dptest.RulesPolicy(n)
				if err := be.Sync(ctx, np); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if err := be.Sync(ctx, np); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				if s := be.Stats(); s.NoOps != b.N {
					b.Fatalf("stats %+v: want only no-ops", s)
				}
			})
		}
	}
}

// BenchmarkRevocation measures a Sync that revokes one established TCP
// connection, including deleting its conntrack entry.
func BenchmarkRevocation(b *testing.B) {
	topo := dptest.NewTopology(b, 2)
	a, c := topo.Pods[0], topo.Pods[1]
	be := newBackend(b, topo.NodePath, Options{})
	ctx := context.Background()
	open := topo.Policy()
	deny := topo.Policy(dptest.Set("sel-a", a.Prefixes()...))
	deny.Endpoints[1].CutConnections = true
	deny.Endpoints[1].Ingress.Tiers = []ir.Tier{dptest.Tier(ir.TierAdmin, dptest.Rule("ZonePolicy/deny-a", "sel-a", false, ir.Deny))}
	var total, txn time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if err := be.Sync(ctx, open); err != nil {
			b.Fatal(err)
		}
		conn, err := dptest.DialTCP(a, c.IP4, 8080)
		if err != nil {
			b.Fatal(err)
		}
		if err := dptest.Exchange(conn, time.Second); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if err := be.Sync(ctx, deny); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		txn += be.Stats().LastDuration
		b.StopTimer()
		if err := dptest.Exchange(conn, 500*time.Millisecond); err == nil {
			b.Fatal("connection survived revocation")
		}
		conn.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms/revoke")
	b.ReportMetric(float64(txn.Microseconds())/float64(b.N)/1000, "ms/transaction")
	if s := be.Stats(); s.ConnectionsCut < b.N {
		b.Fatalf("cut %d connections, want at least %d", s.ConnectionsCut, b.N)
	}
}

// connRatePolicy gives pod b (index 1) a NetworkPolicy tier of n diverse
// rules whose last one is the only one that accepts the client (pod a,
// index 0) on TCP 8080, then a baseline deny. The other rules name 200
// selector sets of addresses outside the topology, with distinct ports
// over TCP and UDP, so a linear rule walk visits every one of them before
// it accepts. Pod c (index 2) gets the same with 100 rules; pod d (index
// 3) has no tiers at all (the base chains and an empty endpoint chain).
func connRatePolicy(topo *dptest.Topology, n100, n int) *ir.NodePolicy {
	var sets []ir.AddressSet
	for i := 0; i < 200; i++ {
		var ps []netip.Prefix
		for j := 0; j < 5; j++ {
			ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 245, byte(i), byte(j*7 + 1)}), 32))
		}
		sets = append(sets, dptest.Set(fmt.Sprintf("sel-%03d", i), ps...))
	}
	sets = append(sets, dptest.Set("client", topo.Pods[0].Prefixes()...))
	np := topo.Policy(sets...)
	tier := func(ep string, n int) []ir.Tier {
		t := ir.Tier{Kind: ir.TierNetworkPolicy}
		for k := 0; k < n-1; k++ {
			t.Rules = append(t.Rules, ir.Rule{
				ID:     fmt.Sprintf("NetworkPolicy/bench/%s-%d/ingress/0", ep, k),
				Peer:   ir.PeerMatch{Set: fmt.Sprintf("sel-%03d", k%200)},
				Ports:  []ir.PortRange{{Protocol: []ir.Protocol{ir.TCP, ir.UDP}[k%2], From: uint16(10000 + k), To: uint16(10000 + k + k%3)}},
				Action: ir.Accept,
			})
		}
		t.Rules = append(t.Rules, dptest.Rule("NetworkPolicy/bench/"+ep+"/client", "client", false, ir.Accept, ir.PortRange{Protocol: ir.TCP, From: 8080, To: 8080}))
		return []ir.Tier{t, dptest.Tier(ir.TierBaseline, dptest.Rule("Zone/bench/baseline", "", false, ir.Deny))}
	}
	for i := range np.Endpoints {
		switch np.Endpoints[i].Name {
		case topo.Pods[1].Name:
			np.Endpoints[i].Ingress.Tiers = tier("big", n)
		case topo.Pods[2].Name:
			np.Endpoints[i].Ingress.Tiers = tier("small", n100)
		}
	}
	return np
}

// dialRound opens and resets TCP connections from pod from to port 8080
// of each address in turn (one to each, again and again) for d, timing
// every handshake, and returns connections per second of handshake time
// for each address. Interleaving single connections cancels most of the
// drift in the machine's load between destinations. A failed connection
// aborts the benchmark.
func dialRound(b *testing.B, from *dptest.Pod, addrs []netip.Addr, d time.Duration) []float64 {
	busy := make([]time.Duration, len(addrs))
	n := make([]int, len(addrs))
	err := netns.Do(from.Path, func() error {
		dl := net.Dialer{Timeout: time.Second}
		start := time.Now()
		for i := 0; time.Since(start) < d; i++ {
			k := i % len(addrs)
			t0 := time.Now()
			c, err := dl.Dial("tcp", netip.AddrPortFrom(addrs[k], 8080).String())
			if err != nil {
				return fmt.Errorf("connection %d to %v: %w", n[k], addrs[k], err)
			}
			busy[k] += time.Since(t0)
			// RST instead of FIN: no TIME_WAIT, so ports do not run out.
			_ = c.(*net.TCPConn).SetLinger(0)
			c.Close()
			n[k]++
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	out := make([]float64, len(addrs))
	for k := range addrs {
		out[k] = float64(n[k]) / busy[k].Seconds()
	}
	return out
}

// BenchmarkNewConnections measures the new-connection rate through the
// backend: TCP handshakes from pod a to a pod whose ingress tier holds
// 10,000 rules, one with 100 rules, and one with no tiers, interleaving
// the destinations connection by connection in each of rounds runs of 1 s. It reports the median of the
// per-round ratios to the no-tier pod, and their spread (min, max).
// Run it with -benchtime=1x; BULKHEAD_BENCH_ROUNDS overrides the 10
// rounds.
func BenchmarkNewConnections(b *testing.B) {
	rounds := 10
	if v, err := strconv.Atoi(os.Getenv("BULKHEAD_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	topo := dptest.NewTopology(b, 4)
	be := newBackend(b, topo.NodePath, Options{})
	ctx := context.Background()
	np := connRatePolicy(topo, 100, 10000)
	start := time.Now()
	if err := be.Sync(ctx, np); err != nil {
		b.Fatal(err)
	}
	b.Logf("programmed %d nft rules and %d elements in %v", be.applied.ruleCount(), be.applied.elementCount(), time.Since(start).Round(time.Millisecond))
	a := topo.Pods[0]
	// The baseline deny must really stand behind the last rule: a peer
	// outside the client set is refused.
	if err := dptest.ProbeTCP(topo.Pods[3], topo.Pods[1].IP4, 8080); err == nil {
		b.Fatal("pod d reached pod b: the benchmark policy does not filter")
	}
	// none, 100 rules, 10k rules
	addrs := []netip.Addr{topo.Pods[3].IP4, topo.Pods[2].IP4, topo.Pods[1].IP4}
	const per = time.Second
	dialRound(b, a, addrs, 200*time.Millisecond) // warm up
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var r100, r10k, cps []float64
		for r := 0; r < rounds; r++ {
			got := dialRound(b, a, addrs, per)
			b.Logf("round %d: none %.0f/s, 100 rules %.0f/s, 10k rules %.0f/s", r, got[0], got[1], got[2])
			r100 = append(r100, got[1]/got[0])
			r10k = append(r10k, got[2]/got[0])
			cps = append(cps, got[0])
		}
		med := func(v []float64) (float64, float64, float64) {
			s := slices.Clone(v)
			slices.Sort(s)
			m := s[len(s)/2]
			if len(s)%2 == 0 {
				m = (s[len(s)/2-1] + s[len(s)/2]) / 2
			}
			return m, s[0], s[len(s)-1]
		}
		m, lo, hi := med(r10k)
		b.ReportMetric(m, "ratio-10k")
		b.ReportMetric(lo, "ratio-10k-min")
		b.ReportMetric(hi, "ratio-10k-max")
		m, lo, hi = med(r100)
		b.ReportMetric(m, "ratio-100")
		b.ReportMetric(lo, "ratio-100-min")
		b.ReportMetric(hi, "ratio-100-max")
		m, _, _ = med(cps)
		b.ReportMetric(m, "conn/s-none")
	}
}

//go:build linux

package nftables

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
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
			be.mu.Unlock()
		})
	}
}

func BenchmarkDelta(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{1000, 10000} {
		np := dptest.RulesPolicy(n)
		cases := []struct {
			name string
			edit func(np *ir.NodePolicy, on bool)
		}{
			{"set-element", func(np *ir.NodePolicy, on bool) {
				s := &np.Sets[0]
				if on {
					s.Prefixes = append(s.Prefixes, netip.MustParsePrefix("10.246.0.1/32"))
				} else {
					s.Prefixes = s.Prefixes[:len(s.Prefixes)-1]
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
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					c.edit(np, i%2 == 0)
					if err := be.Sync(ctx, np); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
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

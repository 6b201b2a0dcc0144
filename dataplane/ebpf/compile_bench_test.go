package ebpf

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/internal/ir"
)

// BenchmarkCompileDelta measures the Go side of a one-endpoint delta: a
// compile after one rule of one endpoint changed its port, with the
// previous compile's results at hand (as in a Backend).
func BenchmarkCompileDelta(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			np := dptest.RulesPolicy(n)
			ifx := map[string]uint32{}
			for i, ep := range np.Endpoints {
				ifx[ep.Name] = uint32(1000 + i)
			}
			alloc := newAllocator()
			if _, err := compile(np, ifx, alloc); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ep := &np.Endpoints[i%len(np.Endpoints)]
				r := &ep.Ingress.Tiers[1].Rules[0]
				r.Ports = []ir.PortRange{{Protocol: ir.TCP, From: uint16(2000 + i%1000), To: uint16(2000 + i%1000)}}
				if _, err := compile(np, ifx, alloc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCompileSetDelta measures the Go side of one address added to
// a set, with the previous compile's results at hand.
func BenchmarkCompileSetDelta(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			np := dptest.RulesPolicy(n)
			ifx := map[string]uint32{}
			for i, ep := range np.Endpoints {
				ifx[ep.Name] = uint32(1000 + i)
			}
			alloc := newAllocator()
			if _, err := compile(np, ifx, alloc); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s := &np.Sets[i%len(np.Sets)]
				s.Prefixes = append(s.Prefixes, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 246, byte(i >> 8), byte(i)}), 32))
				if _, err := compile(np, ifx, alloc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

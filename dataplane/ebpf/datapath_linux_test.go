//go:build linux

package ebpf

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	cebpf "github.com/cilium/ebpf"

	"github.com/bulkhead-dev/bulkhead/bpf"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// runBackend opens a backend on a namespace of its own, with no policy
// (everything is allowed and tracked), for running its programs on
// made-up packets with BPF_PROG_TEST_RUN.
func runBackend(t *testing.T) *Backend {
	t.Helper()
	name := "bh-ebpf-run-" + randSuffix()
	if err := netns.Create(name); err != nil {
		t.Fatalf("creating netns: %v", err)
	}
	t.Cleanup(func() {
		if err := netns.Delete(name); err != nil {
			t.Errorf("deleting netns: %v", err)
		}
	})
	return newBackend(t, netns.Path(name), Options{})
}

// runPackets runs prog n times on frame and wants every run allowed.
func runPackets(t *testing.T, prog *cebpf.Program, frame []byte, n int) {
	t.Helper()
	ret, err := prog.Run(&cebpf.RunOptions{Data: frame, Repeat: uint32(n)})
	if err != nil || int32(ret) != -1 {
		t.Fatalf("running %d packets: verdict %d, %v; want -1 (allowed)", n, int32(ret), err)
	}
}

// ctEntry returns the only conntrack entry with the given local port.
func ctEntry(t *testing.T, be *Backend, lport uint16) bpf.PolicyCtVal {
	t.Helper()
	var k bpf.PolicyCtKey
	var v, found bpf.PolicyCtVal
	n := 0
	it := be.objs.Ct.Iterate()
	for it.Next(&k, &v) {
		if ntohs(k.Lport) == lport {
			found = v
			n++
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d conntrack entries with local port %d, want 1", n, lport)
	}
	return found
}

func TestEstablishedPathCountersAndSeen(t *testing.T) {
	be := runBackend(t)
	const tcpSYN, tcpACK, payload = 0x02, 0x10, 100
	src, dst := netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("10.244.2.3")
	syn := tcpFrame(src, dst, 40001, 5201, tcpSYN, 0)
	ack := tcpFrame(src, dst, 40001, 5201, tcpACK, payload)
	runPackets(t, be.objs.FromPod, syn, 1)
	first := ctEntry(t, be, 40001)
	if first.Packets != 1 || first.Bytes != uint64(len(syn)) {
		t.Fatalf("after the SYN: %d packets, %d bytes; want 1, %d", first.Packets, first.Bytes, len(syn))
	}
	time.Sleep(20 * time.Millisecond)
	// The first packets are counted exactly.
	runPackets(t, be.objs.FromPod, ack, 63)
	v := ctEntry(t, be, 40001)
	if want := uint64(len(syn) + 63*len(ack)); v.Packets != 64 || v.Bytes != want {
		t.Errorf("after 64 packets: %d packets, %d bytes; want 64, %d", v.Packets, v.Bytes, want)
	}
	// seen moves at most once a second: packets 20 ms later leave it.
	if v.Seen != first.Seen {
		t.Errorf("seen moved from %d to %d within a second", first.Seen, v.Seen)
	}
	// Later packets are sampled: the estimate stays near the truth
	// (1,600 samples expected; 12% is about 5 standard deviations).
	const more = 100000
	runPackets(t, be.objs.FromPod, ack, more)
	v = ctEntry(t, be, 40001)
	wantP := float64(64 + more)
	if got := float64(v.Packets); got < wantP*0.88 || got > wantP*1.12 {
		t.Errorf("after %d packets: counted %d", 64+more, v.Packets)
	}
	if v.Bytes != uint64(len(syn)+63*len(ack))+(v.Packets-64)*uint64(len(ack)) {
		t.Errorf("bytes %d do not match %d packets of %d bytes", v.Bytes, v.Packets, len(ack))
	}
	// After a second of idleness the next packet moves seen.
	time.Sleep(1100 * time.Millisecond)
	runPackets(t, be.objs.FromPod, ack, 1)
	if v2 := ctEntry(t, be, 40001); v2.Seen <= v.Seen {
		t.Errorf("seen %d did not move after a second (was %d)", v2.Seen, v.Seen)
	}
	// FIN marks the entry closing and moves seen.
	before := ctEntry(t, be, 40001)
	runPackets(t, be.objs.FromPod, tcpFrame(src, dst, 40001, 5201, tcpACK|0x01, 0), 1)
	if v3 := ctEntry(t, be, 40001); v3.Flags&ctClosing == 0 || v3.Seen <= before.Seen {
		t.Errorf("after FIN: flags %#x, seen %d (was %d); want closing and seen moved", v3.Flags, v3.Seen, before.Seen)
	}
}

// TestPacketsReadInPlaceAndByCopyAgree checks that packets the program
// cannot read in place (IPv4 options, IPv6 extension headers) are parsed
// like the others: their connection is tracked under the same ports.
func TestPacketsReadInPlaceAndByCopyAgree(t *testing.T) {
	be := runBackend(t)
	src, dst := netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("10.244.2.3")
	// IPv4 with 4 bytes of options (NOPs).
	plain := tcpFrame(src, dst, 40002, 443, 0x02, 0)
	opts := make([]byte, 0, len(plain)+4)
	opts = append(opts, plain[:14+20]...)
	opts = append(opts, 1, 1, 1, 1)
	opts = append(opts, plain[14+20:]...)
	opts[14] = 0x46
	binary.BigEndian.PutUint16(opts[16:], uint16(len(opts)-14))
	runPackets(t, be.objs.FromPod, opts, 1)
	if v := ctEntry(t, be, 40002); v.Packets != 1 {
		t.Errorf("IPv4 with options: %d packets, want 1", v.Packets)
	}
	// IPv6 with a hop-by-hop header, and without.
	for _, c := range []struct {
		port uint16
		hbh  bool
	}{{40003, true}, {40004, false}} {
		f := make([]byte, 14+40, 14+40+8+20)
		binary.BigEndian.PutUint16(f[12:], 0x86dd)
		ip := f[14:]
		ip[0] = 0x60
		ip[6] = 6
		ip[7] = 64
		s6, d6 := netip.MustParseAddr("fd00:10:244:1::2").As16(), netip.MustParseAddr("fd00:10:244:2::3").As16()
		copy(ip[8:], s6[:])
		copy(ip[24:], d6[:])
		l := 20
		if c.hbh {
			ip[6] = 0
			f = append(f, 6, 0, 1, 4, 0, 0, 0, 0) // next TCP, PadN
			l += 8
		}
		binary.BigEndian.PutUint16(ip[4:], uint16(l))
		tcp := make([]byte, 20)
		binary.BigEndian.PutUint16(tcp[0:], c.port)
		binary.BigEndian.PutUint16(tcp[2:], 443)
		tcp[12] = 5 << 4
		tcp[13] = 0x02
		f = append(f, tcp...)
		runPackets(t, be.objs.FromPod, f, 1)
		if v := ctEntry(t, be, c.port); v.Packets != 1 {
			t.Errorf("IPv6 (hop-by-hop %v): %d packets, want 1", c.hbh, v.Packets)
		}
	}
}

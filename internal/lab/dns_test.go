package lab

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDNSQueryRoundTrip(t *testing.T) {
	msg, err := BuildDNSQuery(0x1234, "API.Shop.svc.cluster.local", DNSTypeA)
	if err != nil {
		t.Fatal(err)
	}
	q, err := ParseDNSQuery(msg)
	if err != nil {
		t.Fatal(err)
	}
	want := DNSQuestion{ID: 0x1234, Flags: 0x0100, Name: "api.shop.svc.cluster.local.", Type: DNSTypeA, Class: DNSClassIN}
	if d := cmp.Diff(want, q); d != "" {
		t.Errorf("question (-want +got):\n%s", d)
	}
}

func TestDNSZoneAnswer(t *testing.T) {
	z := &DNSZone{Records: map[string][]netip.Addr{
		"api.shop.svc.cluster.local.": {netip.MustParseAddr("10.96.0.20")},
		"pay.example.com.":            {netip.MustParseAddr("10.251.0.2"), netip.MustParseAddr("10.251.0.3"), netip.MustParseAddr("fd00:10:251::2")},
	}}
	tests := []struct {
		name      string
		qname     string
		qtype     uint16
		wantRcode int
		wantAddrs []netip.Addr
	}{
		{"a service name resolves to its ClusterIP", "api.shop.svc.cluster.local", DNSTypeA, DNSRcodeOK, []netip.Addr{netip.MustParseAddr("10.96.0.20")}},
		{"an external name gets every IPv4 address for A", "pay.example.com", DNSTypeA, DNSRcodeOK, []netip.Addr{netip.MustParseAddr("10.251.0.2"), netip.MustParseAddr("10.251.0.3")}},
		{"AAAA gets only the IPv6 addresses", "pay.example.com", DNSTypeAAAA, DNSRcodeOK, []netip.Addr{netip.MustParseAddr("fd00:10:251::2")}},
		{"an unknown name is NXDOMAIN", "nope.shop.svc.cluster.local", DNSTypeA, DNSRcodeNXDomain, nil},
		{"a known name with no address of the type is an empty answer", "api.shop.svc.cluster.local", DNSTypeAAAA, DNSRcodeOK, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := BuildDNSQuery(7, tt.qname, tt.qtype)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := z.Answer(q)
			if err != nil {
				t.Fatal(err)
			}
			rcode, addrs, err := ParseDNSResponse(resp, 7)
			if err != nil {
				t.Fatal(err)
			}
			if rcode != tt.wantRcode {
				t.Errorf("rcode %d, want %d", rcode, tt.wantRcode)
			}
			if d := cmp.Diff(tt.wantAddrs, addrs, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
				t.Errorf("addresses (-want +got):\n%s", d)
			}
		})
	}
}

func TestParseDNSQueryRejectsBadMessages(t *testing.T) {
	loop := []byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1}
	tests := []struct {
		name string
		msg  []byte
	}{
		{"a message shorter than the header", []byte{1, 2, 3}},
		{"a compression pointer loop", loop},
		{"a label running past the end", []byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 9, 'a'}},
		{"a response instead of a query", []byte{0, 1, 0x81, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1}},
		{"two questions", []byte{0, 1, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseDNSQuery(tt.msg); err == nil {
				t.Error("no error")
			}
		})
	}
	z := &DNSZone{}
	resp, err := z.Answer(loop)
	if err != nil {
		t.Fatal(err)
	}
	if rcode := int(resp[3] & 0xF); rcode != DNSRcodeFormErr {
		t.Errorf("answer to a looping query: rcode %d, want FORMERR", rcode)
	}
}

func TestDNSSearchNames(t *testing.T) {
	tests := []struct {
		name, in, ns string
		want         []string
	}{
		{"a short name tries the pod's namespace first", "api", "shop", []string{
			"api.shop.svc.cluster.local.", "api.svc.cluster.local.", "api.cluster.local.", "api."}},
		{"a fully qualified name is tried alone", "api.shop.svc.cluster.local.", "other", []string{"api.shop.svc.cluster.local."}},
		{"a name with five dots is tried as is only", "a.b.c.d.e.f", "shop", []string{"a.b.c.d.e.f."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d := cmp.Diff(tt.want, DNSSearchNames(tt.in, tt.ns)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

package dptest

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestExceptCarvesHoles(t *testing.T) {
	p := netip.MustParsePrefix
	cases := []struct {
		name  string
		base  netip.Prefix
		holes []netip.Prefix
		want  []netip.Prefix
	}{
		{"a /32 out of a /29", p("10.0.0.0/29"), []netip.Prefix{p("10.0.0.5/32")},
			[]netip.Prefix{p("10.0.0.0/30"), p("10.0.0.4/32"), p("10.0.0.6/31")}},
		{"a hole outside the base changes nothing", p("10.0.0.0/24"), []netip.Prefix{p("10.1.0.0/16")},
			[]netip.Prefix{p("10.0.0.0/24")}},
		{"a hole covering the base leaves nothing", p("10.0.0.0/24"), []netip.Prefix{p("10.0.0.0/8")}, nil},
		{"an IPv6 hole", p("fd00::/126"), []netip.Prefix{p("fd00::/128")},
			[]netip.Prefix{p("fd00::1/128"), p("fd00::2/127")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Except(c.base, c.holes...)
			if diff := cmp.Diff(c.want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("Except (-want +got):\n%s", diff)
			}
		})
	}
}

package agent

import (
	"flag"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestServiceFlags(t *testing.T) {
	tests := []struct {
		name        string
		args        []string
		wantCIDRs   []netip.Prefix
		wantUplinks []string
		wantErr     string
	}{
		{name: "repeated and comma-separated CIDRs are masked and kept in order",
			args:      []string{"--service-cidr", "10.96.0.1/12,fd00:96::/108", "--service-cidr", "10.100.0.0/16"},
			wantCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("fd00:96::/108"), netip.MustParsePrefix("10.100.0.0/16")}},
		{name: "uplinks are listed by name",
			args:        []string{"--service-cidr", "10.96.0.0/12", "--service-uplink", "eth0,eth1"},
			wantCIDRs:   []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")},
			wantUplinks: []string{"eth0", "eth1"}},
		{name: "a value that is not a CIDR names the flag", args: []string{"--service-cidr", "10.96.0.0"}, wantErr: "service-cidr"},
		{name: "an empty uplink name is refused", args: []string{"--service-uplink", "eth0,"}, wantErr: "empty interface name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var o Options
			fs := flag.NewFlagSet("agent", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			o.Bind(fs)
			err := fs.Parse(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse(%q) error = %v, want it to contain %q", tc.args, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.args, err)
			}
			if d := cmp.Diff(tc.wantCIDRs, o.ServiceCIDRs, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
				t.Errorf("ServiceCIDRs (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantUplinks, o.ServiceUplinks); d != "" {
				t.Errorf("ServiceUplinks (-want +got):\n%s", d)
			}
		})
	}
}

func TestServiceUplinkNeedsServiceCIDR(t *testing.T) {
	o := Options{Node: "n", Controllers: "c:1", ServiceUplinks: []string{"eth0"}}
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "--service-uplink needs --service-cidr") {
		t.Fatalf("Validate() = %v, want the --service-uplink error", err)
	}
}

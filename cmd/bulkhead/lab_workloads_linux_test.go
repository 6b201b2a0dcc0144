package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestParseServicePort(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    corev1.ServicePort
		wantErr bool
	}{
		{name: "a bare port is TCP to the same port", in: "80", want: corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolTCP}},
		{name: "a named target", in: "8080:http", want: corev1.ServicePort{Port: 8080, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("http")}},
		{name: "a numeric target and protocol", in: "53:5353/udp", want: corev1.ServicePort{Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(5353)}},
		{name: "an unknown protocol is an error", in: "80/icmp", wantErr: true},
		{name: "a port out of range is an error", in: "70000", wantErr: true},
		{name: "a target out of range is an error", in: "80:0", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseServicePort(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr {
				if d := cmp.Diff(tt.want, got); d != "" {
					t.Errorf("(-want +got):\n%s", d)
				}
			}
		})
	}
}

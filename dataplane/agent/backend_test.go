package agent

import (
	"errors"
	"strings"
	"testing"

	"github.com/go-logr/logr"

	"github.com/bulkhead-dev/bulkhead/dataplane"
)

func TestNewBackend(t *testing.T) {
	// Pretend this build lacks the ebpf backend.
	if f, ok := backends["ebpf"]; ok {
		delete(backends, "ebpf")
		t.Cleanup(func() { backends["ebpf"] = f })
	}
	for _, tc := range []struct {
		name, backend string
		notSupported  bool
		wantErr       string
	}{
		{"an unknown backend name is refused with the known names", "iptables", false, "unknown backend \"iptables\" (known: auto"},
		{"a backend not compiled in wraps ErrNotSupported", "ebpf", true, "not compiled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewBackend(tc.backend, BackendConfig{}, logr.Discard())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("NewBackend(%q) error = %v, want it to contain %q", tc.backend, err, tc.wantErr)
			}
			if got := errors.Is(err, dataplane.ErrNotSupported); got != tc.notSupported {
				t.Fatalf("errors.Is(err, ErrNotSupported) = %v, want %v (err %v)", got, tc.notSupported, err)
			}
		})
	}
}

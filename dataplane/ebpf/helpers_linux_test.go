//go:build linux

package ebpf

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"testing"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// newBackend opens a backend on nsPath and uninstalls it when the test
// ends; it checks that Uninstall leaves no pins behind.
func newBackend(t testing.TB, nsPath string, opts Options) *Backend {
	t.Helper()
	testenv.RequireRoot(t)
	if err := Detect(); err != nil {
		testenv.SkipOrFail(t, err.Error())
	}
	opts.NetNSPath = nsPath
	b, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Uninstall(context.Background()); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Uninstall: %v", err)
		}
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if _, err := os.Stat(b.PinDir()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pin directory %s still there after Uninstall (%v)", b.PinDir(), err)
			_ = os.RemoveAll(b.PinDir())
		}
	})
	return b
}

func newDataplane(t *testing.T, nsPath string) dataplane.Dataplane {
	return newBackend(t, nsPath, Options{})
}

func randSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

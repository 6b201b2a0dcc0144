package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// The privileged tests run lab daemons by re-executing the test binary
// with these variables set, as `bulkhead lab serve-*` does for the CLI.
const (
	envDaemonKind = "BULKHEAD_LAB_TEST_DAEMON"
	envDaemonDir  = "BULKHEAD_LAB_TEST_DIR"
)

func TestMain(m *testing.M) {
	if kind := os.Getenv(envDaemonKind); kind != "" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := runTestDaemon(ctx, kind, os.Getenv(envDaemonDir))
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	ctrllog.SetLogger(logr.Discard())
	os.Exit(m.Run())
}

func runTestDaemon(ctx context.Context, kind, dir string) error {
	switch kind {
	case DaemonControlPlane:
		return ServeControlPlane(ctx, dir)
	case DaemonProbes:
		return ServeProbes(ctx, dir)
	}
	return fmt.Errorf("unknown daemon %q", kind)
}

// testDaemon re-executes the test binary as a lab daemon.
func testDaemon(kind, dir string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envDaemonKind+"="+kind, envDaemonDir+"="+dir)
	return cmd, nil
}

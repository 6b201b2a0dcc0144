//go:build linux

package dptest

import (
	"fmt"
	"os"
)

func writeProc(path, val string) error {
	if err := os.WriteFile(path, []byte(val), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

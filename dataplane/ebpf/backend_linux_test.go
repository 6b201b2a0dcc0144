//go:build linux

package ebpf

import (
	"testing"

	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
)

func TestDataplaneTable(t *testing.T) {
	dptest.Run(t, newDataplane)
}

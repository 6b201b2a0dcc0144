//go:build linux

package nftables

import (
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/bulkhead-dev/bulkhead/dataplane/dptest"
)

func randHex() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func TestDataplaneTable(t *testing.T) {
	dptest.Run(t, newDataplane)
}

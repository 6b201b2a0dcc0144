package agent

import (
	"github.com/go-logr/logr"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/dataplane/nftables"
)

func init() {
	backends["nftables"] = func(netnsPath string, log logr.Logger) (dataplane.Dataplane, error) {
		return nftables.New(nftables.Options{NetNSPath: netnsPath, Logger: log.WithName("nftables"), NFLogGroup: NFLogGroup})
	}
}

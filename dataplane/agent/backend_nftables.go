package agent

import (
	"github.com/go-logr/logr"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/dataplane/nftables"
)

func init() {
	backends["nftables"] = func(c BackendConfig, log logr.Logger) (dataplane.Dataplane, error) {
		return nftables.New(nftables.Options{NetNSPath: c.NetNSPath, Logger: log.WithName("nftables"), NFLogGroup: NFLogGroup})
	}
}

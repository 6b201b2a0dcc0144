package agent

import (
	"github.com/go-logr/logr"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/dataplane/ebpf"
)

func init() {
	backends["ebpf"] = func(c BackendConfig, log logr.Logger) (dataplane.Dataplane, error) {
		if err := ebpf.Detect(); err != nil {
			return nil, err
		}
		return ebpf.New(ebpf.Options{NetNSPath: c.NetNSPath, ServiceCIDRs: c.ServiceCIDRs, ServiceUplinks: c.ServiceUplinks, Logger: log.WithName("ebpf")})
	}
}

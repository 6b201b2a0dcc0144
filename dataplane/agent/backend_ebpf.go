package agent

import (
	"github.com/go-logr/logr"

	"github.com/bulkhead-dev/bulkhead/dataplane"
	"github.com/bulkhead-dev/bulkhead/dataplane/ebpf"
)

func init() {
	backends["ebpf"] = func(netnsPath string, log logr.Logger) (dataplane.Dataplane, error) {
		if err := ebpf.Detect(); err != nil {
			return nil, err
		}
		return ebpf.New(ebpf.Options{NetNSPath: netnsPath, Logger: log.WithName("ebpf")})
	}
}

//go:build linux

package ebpf

import (
	"errors"
	"fmt"
	"os"

	cebpf "github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/dataplane"
)

// bpffsMagic is BPF_FS_MAGIC.
const bpffsMagic = 0xcafe4a11

// Detect reports why this backend cannot run here, or nil. Its errors wrap
// dataplane.ErrNotSupported and name what is missing: a bpffs at
// /sys/fs/bpf, kernel BTF, the permission to load BPF programs (CAP_BPF
// and CAP_NET_ADMIN), or a program or map type the datapath needs. TCX is
// not probed here: without it the backend falls back to clsact filters
// when programs are attached.
func Detect() error {
	var errs []error
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &st); err != nil {
		errs = append(errs, fmt.Errorf("no bpffs at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf): %w", err))
	} else if uint32(st.Type) != bpffsMagic {
		errs = append(errs, errors.New("/sys/fs/bpf is not a bpffs (mount -t bpf bpf /sys/fs/bpf)"))
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		errs = append(errs, fmt.Errorf("no kernel BTF (/sys/kernel/btf/vmlinux; CONFIG_DEBUG_INFO_BTF): %w", err))
	}
	if err := features.HaveProgramType(cebpf.SchedCLS); err != nil {
		errs = append(errs, fmt.Errorf("cannot load tc programs (needs CAP_BPF and CAP_NET_ADMIN, or root): %w", err))
	} else {
		for _, mt := range []cebpf.MapType{cebpf.LPMTrie, cebpf.LRUHash, cebpf.RingBuf, cebpf.PerCPUArray} {
			if err := features.HaveMapType(mt); err != nil {
				errs = append(errs, fmt.Errorf("map type %v: %w", mt, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ebpf backend: %w: %w", dataplane.ErrNotSupported, err)
	}
	return nil
}

// Package bpf holds Bulkhead's BPF C programs and the Go bindings and
// objects that bpf2go generates from them for little- and big-endian
// targets. The objects are committed, so building Go needs no clang;
// hack/gen-bpf.sh regenerates them byte for byte.
package bpf

//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip-14 -cflags "-O2 -g -Wall -Werror" -target bpfel,bpfeb -type event -type ct_key -type ct_val -type pol_key -type ident_key -type verdict -type config -type cls_key -type svc_pend_key -type svc_dst Policy policy.c -- -I/usr/include/x86_64-linux-gnu

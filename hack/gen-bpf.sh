#!/usr/bin/env bash
# Regenerates the BPF objects and Go bindings in bpf/ with bpf2go (the
# tool directive in go.mod) and Debian's clang-14. It never skips: when
# clang-14, llvm-strip-14 or libbpf's headers are missing it installs them
# as root, or fails saying what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--trimpath}"

need=()
command -v clang-14 >/dev/null 2>&1 || need+=(clang-14)
command -v llvm-strip-14 >/dev/null 2>&1 || need+=(llvm-14)
[[ -f /usr/include/bpf/bpf_helpers.h ]] || need+=(libbpf-dev)
[[ -f /usr/include/x86_64-linux-gnu/asm/types.h ]] || need+=(linux-libc-dev)
if ((${#need[@]})); then
	if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
		echo "gen-bpf: missing ${need[*]}; install them (Debian: apt-get install ${need[*]})" >&2
		exit 1
	fi
	echo ">> installing ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

go generate ./bpf/

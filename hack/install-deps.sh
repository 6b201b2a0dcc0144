#!/usr/bin/env bash
# Installs what Bulkhead's build, tests and lab need on a Debian machine, as
# root: Debian packages (only when missing), bpffs, and the control-plane
# binaries (hack/controlplane.sh). Safe to run again: it checks first.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# command -> Debian package
declare -A pkgs=(
  [clang]=clang
  [llvm-strip]=llvm
  [nft]=nftables
  [bpftool]=bpftool
  [ip]=iproute2
  [iperf3]=iperf3
  [conntrack]=conntrack
  [protoc]=protobuf-compiler
  [iptables-legacy]=iptables
)
missing=()
for cmd in "${!pkgs[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkgs[$cmd]}")
done
[[ -f /usr/include/bpf/bpf_helpers.h ]] || missing+=(libbpf-dev)

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing packages: ${missing[*]}; run this script as root to install them" >&2
    exit 1
  fi
  echo ">> installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ $(id -u) -eq 0 ]]; then
  if ! mountpoint -q /sys/fs/bpf; then
    echo ">> mounting bpffs at /sys/fs/bpf" >&2
    mount -t bpf bpffs /sys/fs/bpf
  fi
  mkdir -p /run/netns
fi

"$root/hack/controlplane.sh" >/dev/null

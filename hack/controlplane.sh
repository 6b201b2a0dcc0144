#!/usr/bin/env bash
# Builds kube-apiserver, etcd and kubectl at the versions pinned in
# hack/controlplane/go.mod into a cache outside the source tree, and prints
# the directory. Idempotent: binaries already in the cache are reused.
set -euo pipefail

K8S_VERSION=v1.37.2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir="${BULKHEAD_CONTROLPLANE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/bulkhead/controlplane/${K8S_VERSION}}"

if [[ -x "$dir/kube-apiserver" && -x "$dir/etcd" && -x "$dir/kubectl" ]]; then
  echo "$dir"
  exit 0
fi

mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo ">> building control plane ${K8S_VERSION} into $dir (one time, about 12 minutes on 2 cores)" >&2
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags=""
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  ldflags+=" -X $pkg.gitVersion=${K8S_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor}"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=${date}"
done
(
  cd "$root/hack/controlplane"
  go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kubectl \
    go.etcd.io/etcd/server/v3
)
mv "$tmp/server" "$tmp/etcd"
for b in kube-apiserver kubectl etcd; do mv -f "$tmp/$b" "$dir/$b"; done
echo "$dir"

#!/usr/bin/env bash
# Builds Bulkhead's binaries as static executables into the given directory
# (default ./bin). The Dockerfile's build stage runs this same script.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="${1:-$root/bin}"
cd "$root"
version="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
export CGO_ENABLED=0
cmds=()
for d in cmd/*/; do cmds+=("./${d%/}"); done
mkdir -p "$out"
go build -trimpath -ldflags "-s -w -X github.com/bulkhead-dev/bulkhead/internal/version.Version=${version}" -o "$out/" "${cmds[@]}"
echo ">> built ${cmds[*]} into $out" >&2

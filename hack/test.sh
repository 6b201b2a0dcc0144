#!/usr/bin/env bash
# Runs go test on the given packages (default: every package) with the
# flags the build cache is shared with, against the control plane that
# hack/install-deps.sh built, and prints a summary line.
# Usage: hack/test.sh [go test flags...] [packages...]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export GOFLAGS="${GOFLAGS:--trimpath}"
KUBEBUILDER_ASSETS=$("$root/hack/controlplane.sh")
export KUBEBUILDER_ASSETS

args=("$@")
has_pkg=0
for a in "${args[@]}"; do [[ $a == ./* ]] && has_pkg=1; done
((has_pkg)) || args+=(./...)

go build -o "$root/bin/testsummary" ./hack/testsummary
set +e
go test -json -count=1 -p 2 -timeout "${TEST_TIMEOUT:-40m}" "${args[@]}" | "$root/bin/testsummary"
st=("${PIPESTATUS[@]}")
((st[0] == 0 && st[1] == 0)) || exit 1

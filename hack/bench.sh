#!/usr/bin/env bash
# Runs the Go benchmarks (and a bounded fuzzing pass over the engine), and
# prints results in benchstat format. Record what matters in
# docs/benchmarks.md together with this command.
# Usage: hack/bench.sh [go test -bench regexp] [packages...]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export GOFLAGS="${GOFLAGS:--trimpath}"
KUBEBUILDER_ASSETS=$("$root/hack/controlplane.sh")
export KUBEBUILDER_ASSETS
pattern="${1:-.}"
shift || true
pkgs=("$@")
((${#pkgs[@]})) || pkgs=(./...)
go test -run '^$' -bench "$pattern" -benchmem -count "${BENCH_COUNT:-5}" -timeout 60m "${pkgs[@]}"
if [[ -z "${SKIP_FUZZ:-}" ]] && grep -rqs 'func FuzzEngine' internal/policy; then
  go test -run '^$' -fuzz '^FuzzEngine$' -fuzztime "${FUZZ_TIME:-2m}" ./internal/policy
fi
BULKHEAD_BENCH=1 go test -tags labbench -run '^TestQuarantineLatency$' -count 1 -v -timeout 30m ./test/bench/
# Dataplane throughput, connection rate and delta enforcement, side by side
# (no filter, nftables, eBPF, legacy iptables; 100/1k/10k rules).
BULKHEAD_BENCH=1 go test -tags labbench -run '^TestDataplaneThroughput$' -count 1 -v -timeout 60m ./test/bench/

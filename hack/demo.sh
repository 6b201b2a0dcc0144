#!/usr/bin/env bash
# The local lab demo (make demo): builds Bulkhead, brings a lab up with the
# real control plane, controller and agents, shows the reachability matrix
# measured with real packets before and after applying sample zones, checks
# that the datapath agrees with `bulkhead analyze`, and leaves the lab
# running until `bulkhead lab down`. Run as root. Every address it uses
# lives inside network namespaces the lab creates.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export GOFLAGS="${GOFLAGS:--trimpath}"
BIN="${BIN:-$root/bin}"
NODES="${NODES:-3}"
BACKEND="${BACKEND:-nftables}"
SCEN="$root/internal/lab/scenarios"
ZONES="$SCEN/demo-zones.yaml"
export BULKHEAD_LAB_DIR="${BULKHEAD_LAB_DIR:-/run/bulkhead/lab}"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [[ $(id -u) -ne 0 ]]; then
  echo "demo: needs root (network namespaces, veths, nftables); try: sudo make demo" >&2
  exit 1
fi

step "building bulkhead, bulkhead-controller and bulkhead-agent into $BIN"
mkdir -p "$BIN"
go build -o "$BIN/" ./cmd/bulkhead ./cmd/bulkhead-controller ./cmd/bulkhead-agent
bh="$BIN/bulkhead"

if [[ -e "$BULKHEAD_LAB_DIR/state.json" ]]; then
  step "removing the previous lab in $BULKHEAD_LAB_DIR"
  "$bh" lab down
fi

step "bringing the lab up: $NODES nodes, the default pods (web, api, db), $BACKEND agents"
"$bh" lab up --nodes "$NODES" --backend "$BACKEND"

step "reachability before any policy (lab probe: real TCP and UDP exchanges between pod namespaces)"
"$bh" lab probe -o table

step "applying zones pci (namespace db) and web (namespace web); web may reach pci on TCP/5432 only"
sed -n '/^# The demo/,/^apiVersion/p' "$ZONES" | sed '$d'
"$bh" lab apply -f "$ZONES" --wait

step "reachability after the zones"
"$bh" lab probe -o table

step "does the datapath agree with bulkhead analyze on the objects read back from the lab?"
"$bh" lab check

step "quarantining web/frontend-0 (an incident): how long until every node enforces it?"
"$bh" lab apply -f "$SCEN/demo-quarantine.yaml" --wait
"$bh" lab probe -o table | awk 'NR==1 || /frontend-0/'

step "agreement with analyze, quarantine included"
"$bh" lab check

step "releasing the quarantine (the object stays, phase Released)"
"$bh" lab apply -f "$SCEN/demo-release.yaml" --wait
"$bh" lab probe -o table | awk 'NR==1 || /frontend-0/'

kc=$("$bh" lab kubeconfig)
kubectl="${XDG_CACHE_HOME:-$HOME/.cache}/bulkhead/controlplane/v1.37.2/kubectl"
step "the lab is running; try next"
if [[ "$BULKHEAD_LAB_DIR" != /run/bulkhead/lab ]]; then
  echo "  export BULKHEAD_LAB_DIR=$BULKHEAD_LAB_DIR"
fi
cat <<EOT
  $bh lab status                               # processes, readiness, nodes, pods and their IPs
  $bh analyze --kubeconfig $kc -o table        # what the engine computes
  $bh explain --kubeconfig $kc --from api/api-0 --to db/postgres-0 --port TCP/5432
  $bh lab probe --probes TCP/5432,SCTP/9000 -o table
  ip netns exec bh-lab-node1 nft list table inet bulkhead   # the agent's rules on node 1
  $kubectl --kubeconfig $kc get zones,zonepolicies
  $bh lab apply -f FILE.yaml --wait            # your own NetworkPolicies, Zones, ZonePolicies, Quarantines
  $bh lab down                                 # remove everything
EOT

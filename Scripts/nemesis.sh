#!/usr/bin/env bash
# The nemesis against real processes, for as long as asked: a cluster of NODES `fulcrum`
# processes under FAULTS seeded faults (kill -9, SIGSTOP, partitions in network namespaces with
# nftables when run as root, else through proxies on the peer ports, leadership transfers, slow
# fsync, full disk, I/O errors, power loss, wall-clock jumps, membership changes) or SECONDS,
# whichever ends first, with clients writing, reading linearizably and routing; then every check
# of NemesisTests. Prints faults, operations, the longest unavailability per fault kind and any
# violation with the seed that replays it. FULCRUM_NEMESIS_PROXY=1 forces the proxy.
#   Scripts/nemesis.sh [FAULTS] [SECONDS] [SEED] [NODES]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

install_system_dependencies
install_system_dependencies iproute2 nftables || echo "warning: no nftables; partitions go through the TCP proxy"
swift build --build-tests
export FULCRUM_NEMESIS_FAULTS="${1:-500}"
export FULCRUM_NEMESIS_SECONDS="${2:-1800}"
export FULCRUM_NEMESIS_SEED="${3:-$(date +%s)}"
export FULCRUM_NEMESIS_NODES="${4:-3}"
echo "nemesis: $FULCRUM_NEMESIS_FAULTS faults or $FULCRUM_NEMESIS_SECONDS s, seed $FULCRUM_NEMESIS_SEED, $FULCRUM_NEMESIS_NODES nodes"
swift test --skip-build --filter NemesisTests 2>&1 | grep -v "^\[" | grep -E -A4 "nemesis seed|✘|error|passed|failed"

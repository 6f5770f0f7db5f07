#!/usr/bin/env bash
# Failover timing of a 3-node loopback cluster (release build, default settings): over TRIALS
# trials (default 20), the time from kill -9 of the leader to the first write committed by the
# new leader; then the time of a planned leadership transfer. Prints medians and p99.
#   Scripts/failover-bench.sh [TRIALS]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

install_system_dependencies
swift build -c release --product fulcrum
python3 Scripts/bench/failover.py .build/release/fulcrum "${1:-20}"

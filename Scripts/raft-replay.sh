#!/usr/bin/env bash
# Replays one simulator seed exactly, printing its event trace and the property it broke.
#   Scripts/raft-replay.sh SEED [--tail N]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

[ $# -ge 1 ] || { echo "usage: Scripts/raft-replay.sh SEED [--tail N]" >&2; exit 2; }
seed="$1"
shift
swift build -c release --product fulcrum-raft-sim
.build/release/fulcrum-raft-sim replay --seed "$seed" "$@"

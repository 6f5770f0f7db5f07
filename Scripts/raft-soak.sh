#!/usr/bin/env bash
# Soak the Raft core: run fresh simulator seeds for a given time (default 600 s) and print
# seeds/second and every failing seed with the command that replays it.
#   Scripts/raft-soak.sh [SECONDS] [--from SEED]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

seconds="${1:-600}"
shift || true
swift build -c release --product fulcrum-raft-sim
.build/release/fulcrum-raft-sim soak --seconds "$seconds" "$@"

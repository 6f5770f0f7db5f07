#!/usr/bin/env bash
# The main job. Until the node runtime lands, it runs the deterministic Raft cluster simulator
# over a range of seeds (3-, 5- and 7-node clusters under crashes, partitions, message loss and
# membership changes) and prints what happened and the summary.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

install_system_dependencies
swift build -c release --product fulcrum-raft-sim
.build/release/fulcrum-raft-sim run --seeds "${SEEDS:-200}" --verbose "$@"

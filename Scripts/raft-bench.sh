#!/usr/bin/env bash
# Benchmarks the Raft core alone (no I/O): a 3-node replicate-and-commit loop, with and without
# batching, so later work has a baseline. Release build.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

swift build -c release --product fulcrum-raft-sim
for batch in 1 16 64 256; do
    .build/release/fulcrum-raft-sim bench --batch "$batch" --entries 200000 --size 128 --runs 5
done
echo "simulator throughput (the cost of a whole simulated cluster with faults and checks):"
.build/release/fulcrum-raft-sim run --from 1 --seeds 300

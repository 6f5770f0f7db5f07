#!/usr/bin/env bash
# Times one routing decision per strategy with 16, 256 and 1,024 workers and 4,096-token
# prompts (256 blocks); prints median and p99 in microseconds. Release build.
#   Scripts/balancer-bench.sh [--decisions N] [--workers 16,256] [--strategies cache_aware,...]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

# FULCRUM_BALANCER_BENCH names another build of the benchmark (to compare two builds).
if [ -z "${FULCRUM_BALANCER_BENCH:-}" ]; then swift build -c release --product fulcrum-balancer-bench; fi
"${FULCRUM_BALANCER_BENCH:-.build/release/fulcrum-balancer-bench}" "$@"

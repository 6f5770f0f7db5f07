#!/usr/bin/env bash
# Runs every test of Fulcrum on a fresh machine: installs what is missing, builds (no warnings
# allowed), then runs the whole suite in three passes, so that tests which load the machine on
# purpose never starve the timing-sensitive ones (elections, timeouts) of the 2 cores:
#   1. the pure, CPU-bound suites (Raft simulator seeds, balancer properties, simulator, fuzzing);
#   2. everything else but the fault and exhaustion suites (clusters in process and as real
#      processes, storage, transport, the HTTP server), one suite at a time: several of them
#      wait for child processes (openssl, kubernetes-validate, fulcrumctl), and two such waits
#      at once hold both threads of the concurrency pool, starving the others' timers;
#   3. the nemesis and exhaustion suites (kill -9 and SIGSTOP storms, thousands of connections).
# With arguments (e.g. --filter X), one pass with them.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

install_system_dependencies
# promtool (Debian's prometheus package) checks the alert rules.
install_system_dependencies prometheus
# The nemesis partitions nodes in network namespaces with nftables where the machine allows it
# (root); without them it falls back to a TCP proxy, so a failed install is not fatal.
install_system_dependencies iproute2 nftables || echo "warning: iproute2/nftables not installed; the nemesis partitions through its TCP proxy"
install_python_tools
build_without_warnings
if [ $# -gt 0 ]; then
    exec swift test --skip-build "$@"
fi
# A test process that crashes leaves its `fulcrum` children running, loading the machine for
# the passes after it: remove any left by a pass (only this build's, by their path).
reap_strays() { pkill -9 -f "^$PWD/.build/.*/fulcrum serve" 2>/dev/null || true; }
trap reap_strays EXIT
pure="^(RaftTests|BalancerTests|FuzzingTests|SimulatorTests)\."
heavy="NemesisTests|ExhaustionTests"
swift test --skip-build --filter "$pure"
reap_strays
swift test --skip-build --skip "$pure" --skip "$heavy" --no-parallel
reap_strays
swift test --skip-build --filter "$heavy"

#!/usr/bin/env bash
# Runs every test of Fulcrum on a fresh machine: installs what is missing, builds (no warnings
# allowed), then runs the whole suite in two passes: everything but the fault and exhaustion
# suites (in parallel), then those two on their own, since they load the machine on purpose
# (kill -9 and SIGSTOP storms, thousands of connections) and would make the timing of the
# other multi-process tests meaningless. With arguments (e.g. --filter X), one pass with them.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

install_system_dependencies
install_python_tools
build_without_warnings
if [ $# -gt 0 ]; then
    exec swift test --skip-build "$@"
fi
heavy="NemesisTests|ExhaustionTests"
swift test --skip-build --skip "$heavy"
swift test --skip-build --filter "$heavy"

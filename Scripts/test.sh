#!/usr/bin/env bash
# Runs every test of Fulcrum on a fresh machine: installs what is missing, builds (no warnings
# allowed), then runs the whole suite.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

install_system_dependencies
install_python_tools
build_without_warnings
swift test --skip-build "$@"

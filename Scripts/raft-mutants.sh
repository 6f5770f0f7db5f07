#!/usr/bin/env bash
# Plants known Raft bugs one at a time (Scripts/mutants/*.patch) in a copy of the sources and
# runs the simulator's CI seed budget against each, stopping at the first failing seed. Prints,
# per bug, whether it was found, after how many seeds and seconds, and the violation.
#   Scripts/raft-mutants.sh [SEEDS]          (default 2000, the test suite's budget)
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

seeds="${1:-2000}"
root="$PWD"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
found=0
total=0
for patch in Scripts/mutants/*.patch; do
    name=$(basename "$patch" .patch)
    total=$((total + 1))
    rm -rf "$work/tree"
    mkdir -p "$work/tree"
    cp -r Package.swift Sources Tests "$work/tree/"
    patch -s -p1 -d "$work/tree" < "$patch"
    swift build -c release --package-path "$work/tree" --scratch-path "$root/.build-mutants" \
        --product fulcrum-raft-sim >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
    started=$(date +%s.%N)
    status=0
    "$root/.build-mutants/release/fulcrum-raft-sim" run --from 1 --seeds "$seeds" --stop-on-failure --verbose \
        >"$work/run.log" 2>&1 || status=$?
    seconds=$(awk "BEGIN { print $(date +%s.%N) - $started }")
    failing=$(grep -m1 -E "^seed [0-9]+ .*FAILED" "$work/run.log" | cut -d' ' -f2 || true)
    if [ -n "$failing" ]; then
        found=$((found + 1))
        violation=$(grep -m1 -oE "FAILED \[[^]]+\]" "$work/run.log")
        printf '%-28s found at seed %5s (%.1f s): %s\n' "$name" "$failing" "$seconds" "$violation"
    elif [ "$status" -gt 128 ]; then
        # A precondition in the core trapped: the bug broke an invariant the core asserts.
        found=$((found + 1))
        failing=$(( $(grep -c "^seed " "$work/run.log") + 1 ))
        trap_message=$(grep -m1 -oE "Fatal error: .*" "$work/run.log" | cut -c1-90 || true)
        printf '%-28s found at seed %5s (%.1f s): the core trapped: %s\n' "$name" "$failing" "$seconds" "$trap_message"
    else
        printf '%-28s NOT found in %s seeds (%.1f s)\n' "$name" "$seeds" "$seconds"
    fi
done
echo "$found of $total planted bugs found within $seeds seeds"
[ "$found" -eq "$total" ]

#!/usr/bin/env bash
# Profiles the replicated write path: a 3-node release cluster on loopback, wrk posting worker
# registrations (each a log entry fsynced on a majority) to the leader at concurrency CONC for
# SECONDS, while `perf record` (Debian's linux-perf; software cpu-clock sampling, which works
# where hardware counters do not) samples the leader and one follower. Prints the write
# throughput and the hottest symbols of each, self and with children.
#   Scripts/profile-writes.sh [SECONDS] [CONC]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

seconds="${1:-8}"
conc="${2:-1}"
install_system_dependencies wrk curl linux-perf
if [ -z "${FULCRUM_BIN:-}" ]; then
    swift build -c release --product fulcrum
    FULCRUM_BIN=.build/release/fulcrum
fi
start_scratch

bootstrap="1=127.0.0.1:17501,2=127.0.0.1:17502,3=127.0.0.1:17503"
for i in 1 2 3; do
    FULCRUM_LOG_LEVEL=warning FULCRUM_FLEXLB_GRPC_LISTEN=off "$FULCRUM_BIN" serve --cluster-id prof --node-id "$i" --data-dir "$work/n$i" \
        --peer-listen "127.0.0.1:1750$i" --http-listen "127.0.0.1:1850$i" --bootstrap "$bootstrap" >"$work/n$i.log" 2>&1 &
    pids+=($!)
done
for i in 1 2 3; do wait_for "http://127.0.0.1:1850$i/readyz"; done
leader=$(curl -s http://127.0.0.1:18501/admin/cluster | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])')
follower=$(( leader % 3 + 1 ))
cat >"$work/writes.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"id":"bench-worker","model":"m","role":"PDFUSION","address":"127.0.0.1:9000","labels":{"status":"none"}}'
LUA
threads=1; [ "$conc" -ge 2 ] && threads=2
wrk -t"$threads" -c"$conc" -d"$((seconds + 2))s" --latency -s "$work/writes.lua" "http://127.0.0.1:1850$leader/admin/workers" >"$work/wrk.out" 2>&1 &
wrkpid=$!
sleep 1
perf record -F 1999 -g -o "$work/leader.data" -p "${pids[$((leader - 1))]}" -- sleep "$seconds" >/dev/null 2>&1 &
perf_leader=$!
perf record -F 1999 -g -o "$work/follower.data" -p "${pids[$((follower - 1))]}" -- sleep "$seconds" >/dev/null 2>&1 &
perf_follower=$!
wait "$perf_leader" "$perf_follower" "$wrkpid" || true
grep -E "Requests/sec|50%|99%" "$work/wrk.out"
for role in leader follower; do
    echo "== $role: hottest symbols (self)"
    perf report -i "$work/$role.data" --no-children --sort symbol --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -25
    echo "== $role: hottest symbols (with children)"
    perf report -i "$work/$role.data" --children --sort symbol --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -25
done

#!/usr/bin/env bash
# Does a routing decision wait for the disk? /v1/route latency on the leader of a 3-node
# cluster (release build, durability full, 8 simulated engines), first alone, then while a
# second wrk drives replicated writes (worker registrations through the log, each fsynced on a
# majority) at concurrency 16. Prints the route p50/p99 of both and their ratio.
# With FULCRUM_BIN pointing at another build's `fulcrum` (e.g. an earlier commit's), the same
# measurement runs against it, so two builds can be compared in one sitting; FULCRUM_SIM names
# the simulator binary the same way.
#   Scripts/route-under-writes.sh [SECONDS]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

duration="${1:-15}"
install_system_dependencies wrk curl
if [ -z "${FULCRUM_BIN:-}" ]; then
    swift build -c release --product fulcrum
    FULCRUM_BIN=.build/release/fulcrum
fi
if [ -z "${FULCRUM_SIM:-}" ]; then
    swift build -c release --product fulcrum-sim
    FULCRUM_SIM=.build/release/fulcrum-sim
fi
start_scratch

"$FULCRUM_SIM" engines --count 8 --base-port 19101 --profile fast >"$work/engines.log" 2>&1 &
pids+=($!)
for port in $(seq 19101 19108); do wait_for "http://127.0.0.1:$port/health"; done

bootstrap="1=127.0.0.1:17401,2=127.0.0.1:17402,3=127.0.0.1:17403"
for i in 1 2 3; do
    FULCRUM_LOG_LEVEL=warning FULCRUM_FLEXLB_GRPC_LISTEN=off "$FULCRUM_BIN" serve --cluster-id bench --node-id "$i" --data-dir "$work/fulcrum-$i" \
        --peer-listen "127.0.0.1:1740$i" --http-listen "127.0.0.1:1840$i" --bootstrap "$bootstrap" --durability full \
        >"$work/fulcrum-$i.log" 2>&1 &
    pids+=($!)
done
for i in 1 2 3; do wait_for "http://127.0.0.1:1840$i/readyz"; done
leader=$(curl -s http://127.0.0.1:18401/admin/cluster | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])')
url="http://127.0.0.1:1840$leader"
for port in $(seq 19101 19108); do
    curl -sf -X POST "$url/v1/workers" -H 'Content-Type: application/json' \
        -d "{\"id\":\"engine-$port\",\"model\":\"sim-model\",\"role\":\"PDFUSION\",\"address\":\"127.0.0.1:$port\"}" >/dev/null
done
curl -sf -X PATCH "$url/admin/config/settings" -d '{"reservation_ttl_ms":2000}' >/dev/null

# Writes: registrations of a worker the router never picks (another model), through the log.
cat >"$work/writes.lua" <<'LUA'
local counter = 0
request = function()
    counter = counter + 1
    local body = string.format('{"id":"writer-%d","model":"other","role":"PDFUSION","address":"127.0.0.1:9","labels":{"status":"none"}}', counter % 64)
    return wrk.format("POST", "/admin/workers", {["Content-Type"] = "application/json"}, body)
end
LUA

route() {  # label -> "p50 p99 rps"
    wrk -t1 -c4 -d"${duration}s" --latency -s Scripts/bench/route.lua "$url" >"$work/route.out" 2>&1
    local line
    line=$(grep '^RESULT ' "$work/route.out" | sed 's/^RESULT //')
    echo "$1 $line"
}

echo "== /v1/route on the leader (node $leader), c=4, ${duration} s; binary: $FULCRUM_BIN"
alone=$(route "alone")
echo "$alone"
wrk -t1 -c16 -d"$((duration + 4))s" --latency -s "$work/writes.lua" "$url" >"$work/writes.out" 2>&1 &
writer=$!
sleep 2
loaded=$(route "with-writes")
echo "$loaded"
wait "$writer"
echo "writes: $(grep -E 'Requests/sec' "$work/writes.out") $(grep -E '^\s+99%' "$work/writes.out" | tr -s ' ')"
python3 - "$alone" "$loaded" <<'PY'
import json, sys
def parse(line):
    return json.loads(line.split(" ", 1)[1])
a, b = parse(sys.argv[1]), parse(sys.argv[2])
print(f"route p50 {a['p50_ms']:.3f} -> {b['p50_ms']:.3f} ms ({b['p50_ms'] / a['p50_ms']:.2f}x), "
      f"p99 {a['p99_ms']:.3f} -> {b['p99_ms']:.3f} ms ({b['p99_ms'] / a['p99_ms']:.2f}x) with writes at c=16")
PY

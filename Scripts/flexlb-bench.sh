#!/usr/bin/env bash
# FlexLB's scale on loopback, release build: 750 PREFILL + 500 DECODE light rtp-llm engines
# (`fulcrum-sim status-engines`: only the engine gRPC's GetWorkerStatus and GetCacheStatus; each
# prefill engine reports the prefix keys of two workload groups), a 3-node Fulcrum cluster
# polling them as FlexLB does, and `fulcrum-sim flexlb-load` calling FlexlbService.Schedule as
# rtp-llm frontends do (model engine_service, block_cache_keys of a 2,048-token shared prefix
# plus a 512-token question at 64 tokens per block: 40 keys). Prints requests/s, p50, p99 and
# errors at concurrency 64 and 256 on the master, and 64 through a follower.
#   Scripts/flexlb-bench.sh [DURATION]
# STATUS_INTERVAL_MS (default 1000) and CACHE_INTERVAL_MS (default 3000, FlexLB's upper bound)
# set how often the leader polls each engine; FULCRUM_BIN and FULCRUM_SIM name other builds.
# FlexLB's published figure, on its own hardware: 5.1 k schedules/s with p99 858 ms.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

duration="${1:-20}"
status_interval="${STATUS_INTERVAL_MS:-1000}"
cache_interval="${CACHE_INTERVAL_MS:-3000}"
install_system_dependencies curl python3
if [ -z "${FULCRUM_BIN:-}" ]; then swift build -c release --product fulcrum; fi
if [ -z "${FULCRUM_SIM:-}" ]; then swift build -c release --product fulcrum-sim; fi
fulcrum_bin="${FULCRUM_BIN:-.build/release/fulcrum}"
sim_bin="${FULCRUM_SIM:-.build/release/fulcrum-sim}"
start_scratch
ulimit -n 20000 2>/dev/null || true

prefill=750
decode=500
base=30000
"$sim_bin" status-engines --prefill $prefill --decode $decode --base-port $base >"$work/engines.log" 2>&1 &
pids+=($!)

# Fulcrum: peers on 17411-17413, HTTP on 18410/18420/18430, FlexLB gRPC on HTTP + 2.
bootstrap="1=127.0.0.1:17411,2=127.0.0.1:17412,3=127.0.0.1:17413"
for i in 1 2 3; do
    FULCRUM_LOG_LEVEL=warning FULCRUM_PEER_SECRET=flexlb-bench-shared-secret \
    FULCRUM_STATUS_INTERVAL_MS="$status_interval" FULCRUM_STATUS_TIMEOUT_MS=1000 FULCRUM_ENGINE_CACHE_INTERVAL_MS="$cache_interval" \
        "$fulcrum_bin" serve --cluster-id flexlb-bench --node-id "$i" --data-dir "$work/fulcrum-$i" \
        --peer-listen "127.0.0.1:1741$i" --http-listen "127.0.0.1:184${i}0" --bootstrap "$bootstrap" \
        >"$work/fulcrum-$i.log" 2>&1 &
    pids+=($!)
done
for i in 1 2 3; do wait_for "http://127.0.0.1:184${i}0/readyz"; done
leader=$(curl -s http://127.0.0.1:18410/admin/cluster | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])')
follower=$(( leader % 3 + 1 ))

python3 - "$leader" "$prefill" "$decode" "$base" <<'EOF'
import http.client, json, sys, time
leader, prefill, decode, base = (int(v) for v in sys.argv[1:])
connection = http.client.HTTPConnection("127.0.0.1", 18400 + 10 * leader)
for index in range(prefill + decode):
    role = "PREFILL" if index < prefill else "DECODE"
    body = {"id": f"{role.lower()}-{index}", "model": "qwen", "role": role, "address": f"127.0.0.1:{base + 2 * index}",
            "engine": "rtp-llm", "capacity": {"block_size": 64}}
    connection.request("POST", "/v1/workers", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        sys.exit(f"registering {body['id']}: {response.status}")
# Healthy and cached: every engine answered twice, every prefill engine's keys are in the index.
deadline = time.time() + 120
while time.time() < deadline:
    connection.request("GET", "/admin/workers")
    workers = json.loads(connection.getresponse().read())["workers"]
    healthy = sum(1 for w in workers if w["health"] == "healthy")
    cached = sum(1 for w in workers if w.get("cached_blocks", 0) > 0)
    if healthy == prefill + decode and cached == prefill:
        print(f"{healthy} engines healthy, {cached} prefill engines' keys in the index")
        break
    time.sleep(1)
else:
    sys.exit(f"engines not ready: {healthy} healthy, {cached} with keys")
EOF

grpc() { echo "127.0.0.1:$(( 18402 + 10 * $1 ))"; }
echo "== Schedule, ${duration} s each (3 nodes, leader $leader; status every ${status_interval} ms, cache keys every ${cache_interval} ms)"
"$sim_bin" flexlb-load --target "$(grpc "$leader")" --concurrency 64 --duration-seconds "$duration" --label master
"$sim_bin" flexlb-load --target "$(grpc "$leader")" --concurrency 256 --duration-seconds "$duration" --label master
"$sim_bin" flexlb-load --target "$(grpc "$follower")" --concurrency 64 --duration-seconds "$duration" --label follower
# Failed status polls and refusals, if any (both should be empty).
curl -s "http://127.0.0.1:184${leader}0/metrics" | grep -E '^fulcrum_(routing_errors_total|status_polls_total)' || true

#!/usr/bin/env bash
# Serving-layer benchmarks on loopback, release build, in one run:
#  1. wrk against POST /v1/route on the leader and on a follower of a 3-node cluster with 8
#     simulated engines (c=64, DURATION seconds each): requests/s, p50, p99.
#  2. Proxy overhead on a streaming chat completion (16 tokens from fast simulated engines),
#     side by side: direct to one engine, through Fulcrum (the leader), through sglang-router
#     (PyPI, cache_aware, pinned flags) and through nginx as a plain reverse proxy (c=32,
#     PROXY_DURATION seconds each). Prints requests/s, p50, p99, the p50 each adds over direct,
#     and Fulcrum's ratios to sglang-router.
#   Scripts/serving-bench.sh [DURATION] [PROXY_DURATION]
# FULCRUM_BIN and FULCRUM_SIM name other builds of `fulcrum` and `fulcrum-sim` (to compare two
# builds with the same script); by default this tree's release build.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

duration="${1:-30}"
proxy_duration="${2:-20}"
install_system_dependencies wrk nginx curl python3-venv
if [ -z "${FULCRUM_BIN:-}" ]; then swift build -c release --product fulcrum; fi
if [ -z "${FULCRUM_SIM:-}" ]; then swift build -c release --product fulcrum-sim; fi
fulcrum_bin="${FULCRUM_BIN:-.build/release/fulcrum}"
sim_bin="${FULCRUM_SIM:-.build/release/fulcrum-sim}"
start_scratch

venv="${FULCRUM_BENCH_VENV:-$HOME/.cache/fulcrum-bench-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import sglang_router" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q sglang-router
fi
sglang_version=$("$venv/bin/pip" show sglang-router | awk '/^Version/ {print $2}')


# Simulated engines: 8 on 19001-19008.
"$sim_bin" engines --count 8 --base-port 19001 --profile fast --output-tokens 16 >"$work/engines.log" 2>&1 &
pids+=($!)
for port in $(seq 19001 19008); do wait_for "http://127.0.0.1:$port/health"; done

# Fulcrum: peers on 17301-17303, HTTP on 18301-18303.
bootstrap="1=127.0.0.1:17301,2=127.0.0.1:17302,3=127.0.0.1:17303"
for i in 1 2 3; do
    FULCRUM_LOG_LEVEL=warning FULCRUM_FLEXLB_GRPC_LISTEN=off "$fulcrum_bin" serve --cluster-id bench --node-id "$i" --data-dir "$work/fulcrum-$i" \
        --peer-listen "127.0.0.1:1730$i" --http-listen "127.0.0.1:1830$i" --bootstrap "$bootstrap" \
        >"$work/fulcrum-$i.log" 2>&1 &
    pids+=($!)
done
for i in 1 2 3; do wait_for "http://127.0.0.1:1830$i/readyz"; done
leader=$(curl -s http://127.0.0.1:18301/admin/cluster | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])')
follower=$(( leader % 3 + 1 ))
for port in $(seq 19001 19008); do
    curl -sf -X POST "http://127.0.0.1:1830$leader/v1/workers" -H 'Content-Type: application/json' \
        -d "{\"id\":\"engine-$port\",\"model\":\"sim-model\",\"role\":\"PDFUSION\",\"address\":\"127.0.0.1:$port\"}" >/dev/null
done
# Reservations of decisions nobody releases (wrk does not) expire after 2 s instead of 10 min.
curl -sf -X PATCH "http://127.0.0.1:1830$leader/admin/config/settings" -d '{"reservation_ttl_ms":2000}' >/dev/null

# The leader as node 1 sees it, and the cluster's term: a leader change between rows would
# otherwise turn "leader" rows into forwarded ones (the machine is saturated at c=64).
current_leader() {
    curl -s http://127.0.0.1:18301/admin/cluster | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])'
}
term() {
    curl -s "http://127.0.0.1:1830$1/metrics" | awk '/^fulcrum_raft_term / {print int($2)}'
}
start_term=$(term "$leader")
check_leader() {  # label
    local now
    now=$(current_leader)
    if [ "$now" != "$leader" ]; then
        echo "warning: the leader changed during $1 (node $leader -> node $now, term $start_term -> $(term "$now")); rows from here on follow the new leader"
        leader=$now
        follower=$(( leader % 3 + 1 ))
    fi
}

result() {  # label, wrk output file
    local line
    line=$(grep '^RESULT ' "$2" | sed 's/^RESULT //')
    echo "$1 $line" >>"$work/results"
    echo "$1 $line"
}

echo "== /v1/route, c=64, ${duration} s each (3 nodes, 8 engines, leader $leader)"
curl -s -o /dev/null -X POST "http://127.0.0.1:1830$follower/v1/route" -d '{"model":"sim-model"}'
wrk -t2 -c64 -d"${duration}s" --latency -s Scripts/bench/route.lua "http://127.0.0.1:1830$leader" >"$work/route-leader.txt"
result route_leader "$work/route-leader.txt"
check_leader route_leader
# Refusals by code and failed status polls, if any (both should be empty).
curl -s "http://127.0.0.1:1830$leader/metrics" | grep -E '^fulcrum_(routing_errors_total|status_polls_total\{outcome="error")' || true
wrk -t2 -c64 -d"${duration}s" --latency -s Scripts/bench/route.lua "http://127.0.0.1:1830$follower" >"$work/route-follower.txt"
result route_follower "$work/route-follower.txt"
check_leader route_follower
echo "== /v1/route, c=1, 10 s each: what forwarding through a follower adds"
wrk -t1 -c1 -d10s --latency -s Scripts/bench/route.lua "http://127.0.0.1:1830$leader" >"$work/route-leader-c1.txt"
result route_leader_c1 "$work/route-leader-c1.txt"
check_leader route_leader_c1
wrk -t1 -c1 -d10s --latency -s Scripts/bench/route.lua "http://127.0.0.1:1830$follower" >"$work/route-follower-c1.txt"
result route_follower_c1 "$work/route-follower-c1.txt"

# Peers for the proxy comparison: the same 8 engines behind each.
"$venv/bin/python" -m sglang_router.launch_router --host 127.0.0.1 --port 18400 \
    --worker-urls $(for port in $(seq 19001 19008); do printf 'http://127.0.0.1:%s ' "$port"; done) \
    --policy cache_aware --cache-threshold 0.5 --balance-abs-threshold 32 --balance-rel-threshold 1.5 \
    --prometheus-host 127.0.0.1 --prometheus-port 18401 --log-level warn >"$work/sglang-router.log" 2>&1 &
pids+=($!)
cat >"$work/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx-body;
    proxy_temp_path $work/nginx-proxy;
    upstream engines {
$(for port in $(seq 19001 19008); do echo "        server 127.0.0.1:$port;"; done)
        keepalive 64;
    }
    server {
        listen 127.0.0.1:18500;
        location / {
            proxy_pass http://engines;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
NGINX
nginx -c "$work/nginx.conf" -g 'daemon off;' >"$work/nginx.log" 2>&1 &
pids+=($!)
wait_for http://127.0.0.1:18500/health
sglang_up=0
for _ in $(seq 1 300); do
    if curl -sf -o /dev/null -X POST http://127.0.0.1:18400/v1/chat/completions -H 'Content-Type: application/json' \
        -d '{"model":"sim-model","max_tokens":1,"messages":[{"role":"user","content":"warm up"}]}'; then
        sglang_up=1
        break
    fi
    sleep 0.2
done
if [ "$sglang_up" -ne 1 ]; then
    echo "error: sglang-router did not come up:" >&2
    tail -20 "$work/sglang-router.log" >&2
    exit 1
fi

check_leader route_follower_c1
echo "== streaming chat completion (16 tokens), c=32, ${proxy_duration} s each"
for target in direct:http://127.0.0.1:19001 fulcrum:http://127.0.0.1:1830$leader sglang_router:http://127.0.0.1:18400 nginx:http://127.0.0.1:18500; do
    name=${target%%:*}
    url=${target#*:}
    wrk -t2 -c32 -d"${proxy_duration}s" --latency -s Scripts/bench/chat-stream.lua "$url" >"$work/proxy-$name.txt"
    result "proxy_$name" "$work/proxy-$name.txt"
done
# sglang-router's kept-alive streaming answers stall ~40 ms (small writes without TCP_NODELAY
# meeting delayed ACKs; a fresh connection per request does not see it), so the same runs again
# with a new connection per request.
echo "== the same with a new connection per request (Connection: close)"
for target in direct:http://127.0.0.1:19001 fulcrum:http://127.0.0.1:1830$leader sglang_router:http://127.0.0.1:18400 nginx:http://127.0.0.1:18500; do
    name=${target%%:*}
    url=${target#*:}
    CONNECTION_CLOSE=1 wrk -t2 -c32 -d"${proxy_duration}s" --latency -s Scripts/bench/chat-stream.lua "$url" >"$work/close-$name.txt"
    result "close_$name" "$work/close-$name.txt"
done

check_leader close_nginx
echo "term at the start $start_term, at the end $(term "$leader") (leader node $leader)"
python3 - "$work/results" "$sglang_version" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    label, data = line.split(" ", 1)
    rows[label] = json.loads(data)
print()
print("| run | requests/s | p50 ms | p99 ms | errors | non-2xx |")
print("|---|---|---|---|---|---|")
for label, row in rows.items():
    print(f"| {label} | {row['rps']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['errors']} | {row['non2xx']} |")
print()
print(f"forwarding adds at c=1: p50 {rows['route_follower_c1']['p50_ms'] - rows['route_leader_c1']['p50_ms']:.3f} ms")
for prefix, what in [("proxy", "kept-alive"), ("close", "connection per request")]:
    direct = rows[prefix + "_direct"]["p50_ms"]
    fulcrum, sglang, nginx = rows[prefix + "_fulcrum"], rows[prefix + "_sglang_router"], rows[prefix + "_nginx"]
    added_f, added_s, added_n = fulcrum["p50_ms"] - direct, sglang["p50_ms"] - direct, nginx["p50_ms"] - direct
    print(f"{what}: added p50 over direct: Fulcrum {added_f:.2f} ms, sglang-router {added_s:.2f} ms, nginx {added_n:.2f} ms")
    print(f"{what}: Fulcrum vs sglang-router {sys.argv[2]}: throughput {fulcrum['rps'] / sglang['rps']:.2f}x, "
          f"added p50 {added_f / added_s if added_s > 0 else float('inf'):.2f}x")
PY

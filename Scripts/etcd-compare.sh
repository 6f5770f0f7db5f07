#!/usr/bin/env bash
# Replicated-write throughput and latency: a 3-node Fulcrum cluster against a 3-node etcd
# cluster (Debian's etcd-server), both on 127.0.0.1 with default durability (fsync per commit),
# in one run. The same load generator (wrk) posts small writes to each leader's HTTP API at
# concurrency 1, 16 and 64: Fulcrum registers a worker through the log (POST /admin/workers),
# etcd puts a key (POST /v3/kv/put through its JSON gateway). Prints requests/s, p50 and p99 and
# the ratios. Bounded: DURATION seconds per run (default 10).
# FULCRUM_BIN runs another build's `fulcrum` (e.g. an earlier commit's) instead of building.
#   Scripts/etcd-compare.sh [DURATION]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

duration="${1:-10}"
install_system_dependencies etcd-server wrk curl
if [ -z "${FULCRUM_BIN:-}" ]; then
    swift build -c release --product fulcrum
    FULCRUM_BIN=.build/release/fulcrum
fi
start_scratch

# Fulcrum: peers on 17101-17103, HTTP on 18101-18103.
bootstrap="1=127.0.0.1:17101,2=127.0.0.1:17102,3=127.0.0.1:17103"
for i in 1 2 3; do
    FULCRUM_FLEXLB_GRPC_LISTEN=off "$FULCRUM_BIN" serve --cluster-id bench --node-id "$i" --data-dir "$work/fulcrum-$i" \
        --peer-listen "127.0.0.1:1710$i" --http-listen "127.0.0.1:1810$i" --bootstrap "$bootstrap" \
        >"$work/fulcrum-$i.log" 2>&1 &
    pids+=($!)
done
# etcd: peers on 17201-17203, clients on 18201-18203.
cluster="e1=http://127.0.0.1:17201,e2=http://127.0.0.1:17202,e3=http://127.0.0.1:17203"
for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$work/etcd-$i" \
        --listen-peer-urls "http://127.0.0.1:1720$i" --initial-advertise-peer-urls "http://127.0.0.1:1720$i" \
        --listen-client-urls "http://127.0.0.1:1820$i" --advertise-client-urls "http://127.0.0.1:1820$i" \
        --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token bench \
        --log-level error >"$work/etcd-$i.log" 2>&1 &
    pids+=($!)
done
sleep 3

fulcrum_leader=""
for attempt in $(seq 1 100); do
    for i in 1 2 3; do
        role=$(curl -s "127.0.0.1:1810$i/admin/cluster" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("role",""))' 2>/dev/null || true)
        [ "$role" = "leader" ] && fulcrum_leader="http://127.0.0.1:1810$i"
    done
    [ -n "$fulcrum_leader" ] && break
    sleep 0.1
done
etcd_leader=""
for i in 1 2 3; do
    is_leader=$(curl -s -X POST "127.0.0.1:1820$i/v3/maintenance/status" -d '{}' |
        python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["header"]["member_id"] == s["leader"])' 2>/dev/null || true)
    [ "$is_leader" = "True" ] && etcd_leader="http://127.0.0.1:1820$i"
done
[ -n "$fulcrum_leader" ] && [ -n "$etcd_leader" ] || { echo "no leader found (logs in $work)"; exit 1; }
echo "fulcrum leader: $fulcrum_leader   etcd leader: $etcd_leader   $duration s per run"

cat >"$work/fulcrum.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"id":"bench-worker","model":"m","role":"PDFUSION","address":"127.0.0.1:9000"}'
LUA
cat >"$work/etcd.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
-- key "bench-key", a 64-byte value (base64)
wrk.body = '{"key":"YmVuY2gta2V5","value":"' .. string.rep("QUFB", 21) .. '"}'
LUA

run() { # name url script connections -> "rps p50_ms p99_ms"
    local threads=2
    [ "$4" -lt 2 ] && threads=1
    wrk -t"$threads" -c"$4" -d"${duration}s" --latency -s "$3" "$2" >"$work/wrk.out" 2>&1
    python3 - "$work/wrk.out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(label):
    m = re.search(r"^\s*" + label + r"\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(f"{rps:.0f} {ms('50%'):.2f} {ms('99%'):.2f} {errors.group(1) if errors else 0}")
PY
}

printf '%-6s | %-28s | %-28s | %s\n' "conc." "Fulcrum  req/s  p50   p99 ms" "etcd     req/s  p50   p99 ms" "throughput ratio, p99 ratio"
for c in 1 16 64; do
    read -r f_rps f_p50 f_p99 f_err < <(run fulcrum "$fulcrum_leader/admin/workers" "$work/fulcrum.lua" "$c")
    read -r e_rps e_p50 e_p99 e_err < <(run etcd "$etcd_leader/v3/kv/put" "$work/etcd.lua" "$c")
    ratio=$(python3 -c "print(f'{$f_rps / max($e_rps, 1):.2f}x, {$f_p99 / max($e_p99, 0.001):.2f}x')")
    printf '%-6s | %8s %7s %7s       | %8s %7s %7s       | %s' "$c" "$f_rps" "$f_p50" "$f_p99" "$e_rps" "$e_p50" "$e_p99" "$ratio"
    [ "$f_err" != "0" ] || [ "$e_err" != "0" ] && printf '  (non-2xx: fulcrum %s, etcd %s)' "$f_err" "$e_err"
    printf '\n'
done

#!/usr/bin/env bash
# Seeded mutation fuzzing, release build: every binary decoder a peer or the log can feed (peer
# frames, hello, Raft messages, chunked transfers, balancer commands applied to a state, balancer
# and stored snapshots) for SECONDS each, then the JSON API of a live single node (loopback
# only, worker_cidrs 127.0.0.0/8) for SECONDS. Starts from the committed corpus; inputs that
# break something are saved under fuzz-findings/ with the seed printed, so they replay.
#   Scripts/fuzz.sh [SECONDS] [SEED]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

seconds="${1:-60}"
seed="${2:-$(date +%s)}"
install_system_dependencies curl
swift build -c release --product fulcrum-fuzz
swift build -c release --product fulcrum
swift build -c release --product fulcrum-sim
start_scratch
echo "seed $seed, $seconds s per target"

status=0
.build/release/fulcrum-fuzz binary --seconds "$seconds" --seed "$seed" --corpus Tests/FuzzingTests/Corpus --findings fuzz-findings || status=1

engine_port=$(free_port)
peer_port=$(free_port)
http_port=$(free_port)
.build/release/fulcrum-sim engines --count 1 --base-port "$engine_port" --profile fast >"$work/engine.log" 2>&1 &
pids+=($!)
FULCRUM_WORKER_CIDRS=127.0.0.0/8 FULCRUM_LOG_LEVEL=error .build/release/fulcrum serve --cluster-id fuzz --node-id 1 \
    --data-dir "$work/node" --peer-listen "127.0.0.1:$peer_port" --http-listen "127.0.0.1:$http_port" \
    --bootstrap "1=127.0.0.1:$peer_port" >"$work/node.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$http_port/readyz"
wait_for "http://127.0.0.1:$engine_port/health"
curl -sf -X POST "http://127.0.0.1:$http_port/v1/workers" -H 'Content-Type: application/json' \
    -d "{\"id\":\"e1\",\"model\":\"m\",\"role\":\"PDFUSION\",\"address\":\"127.0.0.1:$engine_port\"}" >/dev/null
.build/release/fulcrum-fuzz http --url "http://127.0.0.1:$http_port" --seconds "$seconds" --seed "$seed" || status=1
if ! kill -0 "${pids[1]}" 2>/dev/null; then
    echo "FAIL: the node died; its log:"; tail -20 "$work/node.log"; status=1
fi
echo "node peak memory: $(awk '/VmHWM/ {print $2/1024 " MiB"}' /proc/"${pids[1]}"/status 2>/dev/null || echo unknown)"
exit $status

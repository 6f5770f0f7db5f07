#!/usr/bin/env bash
# The main job: on this machine, with embedded defaults, a 3-node Fulcrum cluster (Raft on
# 7101-7103, HTTP on 8101-8103) and 4 simulated inference engines (9101-9104); multi-turn chat
# traffic goes through the cluster's OpenAI-compatible proxy and every 5 s a line says what
# happened: the leader, requests, failures, the prefix-cache hit ratio and requests per worker.
# After 30 s the leader is killed (kill -9) to show the failover, and restarted 10 s later.
# Runs until Ctrl-C (or DURATION seconds), then stops everything cleanly.
#   Scripts/run.sh             DURATION=60 Scripts/run.sh             FAILOVER=0 Scripts/run.sh
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

install_system_dependencies curl python3
swift build --product fulcrum
swift build --product fulcrum-sim
export FULCRUM_LOCAL_DIR="$PWD/.fulcrum-local/run"
export FULCRUM_LOG_LEVEL=warning
rm -rf "$FULCRUM_LOCAL_DIR"
engines_pid=""
traffic_pid=""
failover_pid=""
stop() {
    trap - INT TERM EXIT
    [ -n "$traffic_pid" ] && kill -INT "$traffic_pid" 2>/dev/null && wait "$traffic_pid" 2>/dev/null || true
    [ -n "$failover_pid" ] && kill "$failover_pid" 2>/dev/null || true
    echo "stopping..."
    Scripts/cluster down || true
    [ -n "$engines_pid" ] && kill "$engines_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$FULCRUM_LOCAL_DIR"
    echo "stopped."
}
trap stop INT TERM EXIT

.build/debug/fulcrum-sim engines --count 4 --base-port 9101 --profile h100-8b --output-tokens 8 &
engines_pid=$!
Scripts/cluster up 3
for i in 1 2 3 4; do
    curl -sf -X POST http://127.0.0.1:8102/v1/workers -H 'Content-Type: application/json' \
        -d "{\"id\":\"engine-$i\",\"model\":\"sim-model\",\"role\":\"PDFUSION\",\"address\":\"127.0.0.1:$((9100 + i))\"}" >/dev/null
done
echo "4 engines registered (through a follower). Traffic through all three nodes; Ctrl-C stops."
Scripts/cluster status
.build/debug/fulcrum-sim traffic --targets http://127.0.0.1:8101,http://127.0.0.1:8102,http://127.0.0.1:8103 \
    --duration-seconds "${DURATION:-0}" &
traffic_pid=$!
if [ "${FAILOVER:-1}" = 1 ]; then
    ( sleep 30
      leader=$(curl -s http://127.0.0.1:8101/rtp_llm/master/info | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader_id"])' 2>/dev/null || echo 1)
      echo ">>> kill -9 the leader, node $leader"
      Scripts/cluster kill "$leader" >/dev/null
      sleep 10
      echo ">>> restarting node $leader"
      Scripts/cluster restart "$leader" >/dev/null && echo ">>> node $leader is back" ) &
    failover_pid=$!
fi
wait "$traffic_pid" || true
traffic_pid=""

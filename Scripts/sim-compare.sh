#!/usr/bin/env bash
# Routing on a real trace, one run, same engines: 8 simulated H100 engines (8B model, KV blocks
# of 512 tokens as the trace's), the Mooncake synthetic trace replayed at SPEED (3: about 85 %
# of what the fleet can prefill without cache hits) for DURATION seconds per run, cold caches
# before each run, against:
#   Fulcrum (3-node cluster, through a follower): each strategy that applies to a trace without
#   sessions or host resources (round_robin is the floor); sglang-router from PyPI (pinned
#   flags): cache_aware, round_robin, power_of_two.
# Then failover under load: Fulcrum with FAILOVER_STRATEGY (shortest_ttft), the leader killed (-9) at KILL_AT (150 s) of a
# FAILOVER_DURATION (240 s) replay; errors, the routing gap, and the hit ratio in the 10 s after
# the kill against the 60 s before.
# Prints the side-by-side table and the ratios; reports land in sim-compare-report/ (OUT=…).
# FULCRUM_STRATEGIES="cache_aware …" and SGLANG_POLICIES="cache_aware …" limit the runs;
# PREFIX_CAP sets Fulcrum's prefix_blocks_per_worker (25000); FAILOVER=0 skips the failover run.
# sglang-router gets Fulcrum's default thresholds: --cache-threshold 0.2 (SGLANG_CACHE_THRESHOLD;
# runs before 2026-12-05 used 0.5, Fulcrum's default then), --balance-abs-threshold 32,
# --balance-rel-threshold 1.5.
# The rtp-llm path (FLEXLB=0 skips it): the same trace served as rtp-llm frontends serve it, with
# Fulcrum (FLEXLB_STRATEGY, cache_aware) routing on the keys simulated rtp-llm engines report.
# ENGINE=vllm: the same trace under eviction pressure on simulated vLLM engines (vLLM's dialect,
# KV blocks of 16 tokens, 400 k tokens of KV cache each against a working set of 2.8 M tokens per
# engine, KV events over ZeroMQ, /tokenize): Fulcrum with the precise index (workers registered
# with kv_events, prompts tokenised by an engine's /tokenize) and with the history index (the
# same workers without either), each with every strategy in FULCRUM_STRATEGIES (cache_aware,
# the default), and sglang-router cache_aware; each run's hit ratio set against the one Fulcrum
# expected (its matched blocks). No rtp-llm or failover runs in this mode.
# WORKLOAD=FAMILY:SEED (e.g. multi_turn:21): a generated workload (fulcrum-sim generate, 64-token
# blocks, Docs/simulator.md) at load SPEED instead of the Mooncake trace, on engines with 64-token
# KV blocks: Fulcrum with each strategy in FULCRUM_STRATEGIES (default: cache_aware, the default
# strategy) and sglang-router cache_aware. No rtp-llm or failover runs in this mode.
#   Scripts/sim-compare.sh [SPEED] [DURATION]     (DURATION 0 or empty: the whole trace)
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

speed="${1:-3}"
duration="${2:-0}"
out="${OUT:-$PWD/sim-compare-report}"
trace="${TRACE:-$(cd .. && pwd)/shared/traces/mooncake/synthetic_trace.jsonl}"
[ -f "$trace" ] || { echo "error: trace not found: $trace (set TRACE=…)" >&2; exit 1; }
install_system_dependencies curl python3-venv
swift build -c release --product fulcrum
swift build -c release --product fulcrum-sim
start_scratch
mkdir -p "$out"

venv="${FULCRUM_BENCH_VENV:-$HOME/.cache/fulcrum-bench-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import sglang_router" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q sglang-router
fi
sglang_version=$("$venv/bin/pip" show sglang-router | awk '/^Version/ {print $2}')

sim=.build/release/fulcrum-sim
trace_block_size=512
if [ -n "${WORKLOAD:-}" ]; then
    # The generated trace carries the load: replay it at speed 1.
    trace="$out/workload-${WORKLOAD/:/-}-${speed}x.jsonl"
    generated_seconds="$duration"
    [ -z "$generated_seconds" ] || [ "$generated_seconds" = 0 ] && generated_seconds=300
    "$sim" generate --family "${WORKLOAD%%:*}" --seed "${WORKLOAD##*:}" --load "$speed" --duration "$generated_seconds" \
        --traces "$(cd .. && pwd)/shared/traces" --out "$trace"
    speed=1
    trace_block_size=64
    FLEXLB=0 FAILOVER=0
    FULCRUM_STRATEGIES="${FULCRUM_STRATEGIES:-cache_aware}"
    SGLANG_POLICIES="${SGLANG_POLICIES:-cache_aware}"
fi
engine="${ENGINE:-fulcrum}"
case "$engine" in
    fulcrum)
        engine_flags=(--block-size "$trace_block_size")
        capacity="\"kv_blocks\":$((400000 / trace_block_size)),\"block_size\":$trace_block_size"
        indexes="history" ;;
    vllm)
        engine_flags=(--engine vllm --block-size 16 --kv-tokens 399872 --kv-events-base-port 19301)
        capacity='"kv_blocks":24992,"block_size":16'
        indexes="${INDEXES:-precise history}"
        FLEXLB=0 FAILOVER=0
        FULCRUM_STRATEGIES="${FULCRUM_STRATEGIES:-cache_aware}"
        SGLANG_POLICIES="${SGLANG_POLICIES:-cache_aware}" ;;
    *) echo "error: ENGINE must be fulcrum or vllm, not $engine" >&2; exit 1 ;;
esac
"$sim" engines --count 8 --base-port 19101 "${engine_flags[@]}" >"$work/engines.log" 2>&1 &
pids+=($!)
engines=""
for port in $(seq 19101 19108); do wait_for "http://127.0.0.1:$port/health"; engines+="http://127.0.0.1:$port,"; done
profile=$(head -1 "$work/engines.log" | sed 's/^profile: //')

# A fresh Fulcrum cluster per run: its replicated prefix index must start as cold as the engines.
# fresh_fulcrum [precise|history]: precise registers vLLM engines with their KV events and
# tokenises prompts on engine 1's /tokenize.
node_pids=()
fresh_fulcrum() {
    local index="${1:-history}" registration tokenizers=""
    for pid in "${node_pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    node_pids=()
    rm -rf "$work"/fulcrum-*
    local bootstrap="1=127.0.0.1:17501,2=127.0.0.1:17502,3=127.0.0.1:17503" i
    for i in 1 2 3; do
        [ "$index" = precise ] && tokenizers="sim-model=http://127.0.0.1:19101/tokenize"
        FULCRUM_TOKENIZERS="$tokenizers" FULCRUM_LOG_LEVEL=warning FULCRUM_FLEXLB_GRPC_LISTEN=off .build/release/fulcrum serve --cluster-id simcompare --node-id "$i" --data-dir "$work/fulcrum-$i" \
            --peer-listen "127.0.0.1:1750$i" --http-listen "127.0.0.1:1850$i" --bootstrap "$bootstrap" >>"$work/fulcrum-$i.log" 2>&1 &
        node_pids[$i]=$!
        pids+=($!)
    done
    for i in 1 2 3; do wait_for "http://127.0.0.1:1850$i/readyz"; done
    leader=$(curl -s http://127.0.0.1:18501/admin/cluster | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])')
    follower=$(( leader % 3 + 1 ))
    for i in $(seq 1 8); do
        registration="\"id\":\"engine-$i\",\"model\":\"sim-model\",\"role\":\"PDFUSION\",\"address\":\"127.0.0.1:$((19100 + i))\",\"capacity\":{$capacity,\"prefill_tokens_per_second\":48000}"
        if [ "$engine" = vllm ]; then
            registration+=",\"engine\":\"vllm\""
            [ "$index" = precise ] && registration+=",\"kv_events\":{\"endpoint\":\"tcp://127.0.0.1:$((19299 + 2 * i))\",\"replay_endpoint\":\"tcp://127.0.0.1:$((19300 + 2 * i))\"}"
        fi
        curl -sf -X POST "http://127.0.0.1:1850$follower/v1/workers" -H 'Content-Type: application/json' -d "{$registration}" >/dev/null
    done
    # The router's prefix index should not believe a worker holds more than its KV cache does:
    # 400 k tokens per engine is 25,000 of the router's text blocks (64 bytes, 16 tokens each).
    curl -sf -X PATCH "http://127.0.0.1:1850$leader/admin/config/settings" -d "{\"prefix_blocks_per_worker\":${PREFIX_CAP:-25000}}" >/dev/null
}

port=18601
sglang_targets=()
sglang_policies="${SGLANG_POLICIES:-cache_aware round_robin power_of_two}"
for policy in $sglang_policies; do
    "$venv/bin/python" -m sglang_router.launch_router --host 127.0.0.1 --port "$port" \
        --worker-urls $(for p in $(seq 19101 19108); do printf 'http://127.0.0.1:%s ' "$p"; done) \
        --policy "$policy" --cache-threshold "${SGLANG_CACHE_THRESHOLD:-0.2}" --balance-abs-threshold 32 --balance-rel-threshold 1.5 \
        --prometheus-host 127.0.0.1 --prometheus-port $((port + 100)) --log-level warn >"$work/sglang-$policy.log" 2>&1 &
    pids+=($!)
    sglang_targets+=(--target "sglang-$policy=http://127.0.0.1:$port")
    port=$((port + 1))
done
for p in $(seq 18601 $((port - 1))); do
    for _ in $(seq 1 300); do
        curl -sf -o /dev/null -X POST "http://127.0.0.1:$p/v1/completions" -H 'Content-Type: application/json' \
            -d '{"model":"sim-model","prompt":"warm up","max_tokens":1}' && break
        sleep 0.2
    done
done

window=()
[ -n "$duration" ] && [ "$duration" != 0 ] && window=(--duration "$duration")
for strategy in ${FULCRUM_STRATEGIES:-shortest_ttft cache_aware consistent_hash least_load power_of_two random round_robin}; do
    for index in $indexes; do
        name="fulcrum-$strategy"
        [ "$engine" = vllm ] && name="fulcrum-$index-$strategy"
        rm -rf "$out/runs-$name"
        fresh_fulcrum "$index"
        "$sim" compare --trace "$trace" --engines "$engines" --speed "$speed" "${window[@]}" --out "$out/runs-$name" --profile "$profile" \
            --trace-block-size "$trace_block_size" --target "$name=http://127.0.0.1:1850$follower#strategy=$strategy" | grep -v '^t=' | tail -1
    done
done
if [ "${FLEXLB:-1}" != 0 ]; then
    # The rtp-llm path: 8 engines of the same profile with rtp-llm's engine gRPC (HTTP on 19201,
    # 19203, ...; gRPC on each + 1), a fresh 3-node cluster polling them as FlexLB does, and the
    # trace served as rtp-llm frontends serve it (Schedule through a follower, then
    # GenerateStreamCall on the chosen engine): routing on the keys the engines report.
    flexlb_strategy="${FLEXLB_STRATEGY:-cache_aware}"
    "$sim" engines --engine rtp-llm --count 8 --base-port 19201 --block-size 512 >"$work/rtp-engines.log" 2>&1 &
    rtp_engines=$!
    pids+=($rtp_engines)
    for i in $(seq 0 7); do wait_for "http://127.0.0.1:$((19201 + 2 * i))/health"; done
    flexlb_pids=()
    for i in 1 2 3; do
        FULCRUM_LOG_LEVEL=warning .build/release/fulcrum serve --cluster-id simcompare-flexlb --node-id "$i" --data-dir "$work/flexlb-$i" \
            --peer-listen "127.0.0.1:1752$i" --http-listen "127.0.0.1:186${i}0" --bootstrap "1=127.0.0.1:17521,2=127.0.0.1:17522,3=127.0.0.1:17523" \
            >>"$work/flexlb-$i.log" 2>&1 &
        flexlb_pids+=($!)
        pids+=($!)
    done
    for i in 1 2 3; do wait_for "http://127.0.0.1:186${i}0/readyz"; done
    flexlb_leader=$(curl -s http://127.0.0.1:18610/admin/cluster | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])')
    flexlb_follower=$(( flexlb_leader % 3 + 1 ))
    for i in $(seq 0 7); do
        curl -sf -X POST "http://127.0.0.1:186${flexlb_follower}0/v1/workers" -H 'Content-Type: application/json' -d "{\"id\":\"rtp-engine-$((i + 1))\",\"model\":\"sim-model\",\"role\":\"PDFUSION\",\"engine\":\"rtp-llm\",\"address\":\"127.0.0.1:$((19201 + 2 * i))\",\"capacity\":{\"kv_blocks\":781,\"block_size\":512,\"prefill_tokens_per_second\":48000}}" >/dev/null
    done
    curl -sf -X PUT "http://127.0.0.1:186${flexlb_leader}0/admin/config/default_policy" -d "{\"strategies\":{\"PDFUSION\":\"$flexlb_strategy\"}}" >/dev/null
    rm -rf "$out/runs-flexlb"
    echo "== fulcrum-flexlb-$flexlb_strategy: rtp-llm frontends' path through node $flexlb_follower"
    "$sim" replay --flexlb --trace "$trace" --target "http://127.0.0.1:186${flexlb_follower}0" --speed "$speed" "${window[@]}" \
        --name "fulcrum-flexlb-$flexlb_strategy" --out "$out/runs-flexlb/fulcrum-flexlb-$flexlb_strategy" --profile "$profile" | grep '^| fulcrum-flexlb'
    for pid in "${flexlb_pids[@]}" "$rtp_engines"; do kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
fi

rm -rf "$out/runs-sglang" "$out/failover"
"$sim" compare --trace "$trace" --engines "$engines" --speed "$speed" "${window[@]}" --out "$out/runs-sglang" --profile "$profile" \
    --trace-block-size "$trace_block_size" "${sglang_targets[@]}" | grep -v '^t=' | tail -4

if [ "${FAILOVER:-1}" = 0 ]; then
    rm -f "$work/killed_at"
else
fresh_fulcrum
failover_window="${FAILOVER_DURATION:-240}"
kill_at="${KILL_AT:-150}"  # late enough that the 60 s before it see warm caches
failover_strategy="${FAILOVER_STRATEGY:-shortest_ttft}"
echo "== failover under load: Fulcrum $failover_strategy through node $follower, leader $leader killed at $kill_at s"
curl -sf -X PUT "http://127.0.0.1:1850$leader/admin/config/default_policy" -d "{\"strategies\":{\"PDFUSION\":\"$failover_strategy\"}}" >/dev/null
for engine in ${engines//,/ }; do curl -s -o /dev/null -X POST "$engine/reset"; done
( sleep "$kill_at"; date +%s.%N >"$work/killed_at"; kill -9 "${node_pids[$leader]}" ) &
"$sim" replay --trace "$trace" --target "http://127.0.0.1:1850$follower" --speed "$speed" --duration "$failover_window" --name failover --out "$out/failover" --profile "$profile" | tail -2
fi

python3 - "$out" "$work/killed_at" "$sglang_version" <<'PY'
import json, sys
out, killed_file, version = sys.argv[1], sys.argv[2], sys.argv[3]
import glob, os
summaries = {}
for path in sorted(glob.glob(f"{out}/runs-*/*/summary.json")):
    data = json.load(open(path))
    summaries[data["name"]] = data
print()
print("| run | completed | errors | hit ratio (engines) | expected by Fulcrum | TTFT mean s | p50 s | p90 s | p99 s | req/s | max/mean per worker |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for name, d in summaries.items():
    expected = f"{100*d['predicted_hit_ratio']:.1f} %" if d.get("predicted_hit_ratio") is not None else "—"
    print(f"| {name} | {d['completed']} | {d['errors']} | {100*d['hit_ratio']:.1f} % | {expected} | {d['ttft_mean']:.3f} | {d['ttft_p50']:.3f} | "
          f"{d['ttft_p90']:.3f} | {d['ttft_p99']:.3f} | {d['throughput']:.2f} | {d['max_over_mean_requests_per_worker']:.2f} |")
print()
for name, d in summaries.items():
    if d.get("predicted_hit_ratio") is not None and name.startswith("fulcrum-"):
        print(f"{name}: Fulcrum expected {100*d['predicted_hit_ratio']:.1f} % hits, the engines found {100*d['hit_ratio']:.1f} % "
              f"({100*(d['predicted_hit_ratio']-d['hit_ratio']):+.1f} points)")
for name, precise in summaries.items():
    history = summaries.get(name.replace("fulcrum-precise-", "fulcrum-history-"))
    if name.startswith("fulcrum-precise-") and history and history["ttft_p99"]:
        print(f"{name} vs {history['name']}: TTFT p99 {precise['ttft_p99']:.3f} vs {history['ttft_p99']:.3f} s "
              f"({precise['ttft_p99']/history['ttft_p99']:.2f}x), hit ratio {100*(precise['hit_ratio']-history['hit_ratio']):+.1f} points")
s = summaries.get("sglang-cache_aware")
for name, f in summaries.items():
    if not s or not name.startswith("fulcrum-"):
        continue
    ratio = lambda key: f[key] / s[key] if s[key] else float("nan")
    print(f"{name} vs sglang-router {version} cache_aware: hit ratio {100*f['hit_ratio']:.1f} % vs {100*s['hit_ratio']:.1f} % "
          f"({100*(f['hit_ratio']-s['hit_ratio']):+.1f} points), TTFT p99 {f['ttft_p99']:.3f} vs {s['ttft_p99']:.3f} s ({ratio('ttft_p99'):.2f}x), "
          f"mean {f['ttft_mean']:.3f} vs {s['ttft_mean']:.3f} s ({ratio('ttft_mean'):.2f}x)")
if not os.path.exists(killed_file):
    sys.exit(0)
started = float(open(f"{out}/failover/started_at").read())
killed = float(open(killed_file).read()) - started
records = [json.loads(l) for l in open(f"{out}/failover/requests.jsonl")]
def hit(lo, hi):
    sel = [r for r in records if lo <= r["sent_at"] < hi and r.get("error") is None]
    i = sum(r["input_tokens"] for r in sel)
    return (100 * sum(r["cached_tokens"] for r in sel) / i) if i else float("nan"), len(sel)
before, n_before = hit(killed - 60, killed)
after, n_after = hit(killed, killed + 10)
errors = [r for r in records if r.get("error")]
never_reached = [r for r in errors if "HTTP 503" in r["error"] or "HTTP 502" in r["error"]]
after_kill = sorted(r["sent_at"] + (r.get("ttft") or 0) for r in records if r.get("error") is None and r["sent_at"] >= killed)
gap = (after_kill[0] - killed) if after_kill else float("nan")
def median_ttft(lo, hi):
    values = sorted(r["ttft"] for r in records if lo <= r["sent_at"] < hi and r.get("error") is None)
    return values[len(values) // 2] if values else float("nan")
print(f"failover: leader killed at {killed:.1f} s; errors {len(errors)} (not reaching a worker: {len(never_reached)}); "
      f"first token after the kill {gap*1000:.0f} ms later; median TTFT of requests sent in the 2 s after the kill "
      f"{median_ttft(killed, killed + 2):.2f} s against {median_ttft(killed - 10, killed):.2f} s in the 10 s before; "
      f"hit ratio 60 s before {before:.1f} % ({n_before} requests), 10 s after {after:.1f} % ({n_after}), "
      f"ratio {after/before if before else float('nan'):.2f}")
PY

"""Plays an rtp-llm frontend against Fulcrum, as alibaba/rtp-llm does at 4b8d39cd5:

- discovery as rtp_llm/server/host_service.py: POST {} to /rtp_llm/master/info on every node,
  the master is the node whose real_master_host equals the ip:port probed;
- Schedule as rtp_llm/server/master_client.py: gRPC FlexlbService on the HTTP port + 2, the
  request filled as get_backend_role_addrs fills it (model "engine_service", priority, ...).

- a request as a frontend serves it: block_cache_keys computed from the token ids with the
  rolling hash of rtp_llm/cpp/utils/HashUtil.h (hashInt64Func, written here from its definition),
  Schedule, then GenerateStreamCall (model_rpc_service.proto's RpcService) on the chosen
  engine's gRPC port with the same request id.

Usage: rtp_llm_frontend.py GENERATED_DIR NODES COMMAND...
  NODES: ip:http_port,ip:http_port,...
  commands: discover | schedule ADDR REQUEST_ID | cancel ADDR REQUEST_ID | state ADDR REQUEST_ID
            | request ADDR REQUEST_ID TOKENS SEED   (Schedule on ADDR, then generate on the engine)
            | generate ENGINE_HTTP_ADDR REQUEST_ID TOKENS SEED   (straight to an engine)
Prints one JSON object per command.
"""
import json
import sys
import time
import urllib.request

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
import flexlb_schedule_service_pb2 as pb  # noqa: E402
import flexlb_schedule_service_pb2_grpc as rpc  # noqa: E402
import model_rpc_service_pb2 as engine_pb  # noqa: E402
import model_rpc_service_pb2_grpc as engine_rpc  # noqa: E402

FLEXLB_GRPC_PORT_OFFSET = 2
nodes = sys.argv[2].split(",")


def probe(addr):
    request = urllib.request.Request(
        f"http://{addr}/rtp_llm/master/info", data=b"{}", headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=0.5) as response:
        if response.status != 200:
            return None
        result = json.load(response)
        return {"real_master_host": result.get("real_master_host"), "queue_length": result.get("queue_length", 0)}


def discover():
    masters = []
    queue_length = 0
    for addr in nodes:
        try:
            result = probe(addr)
        except Exception:
            continue
        if result and result["real_master_host"] == addr:
            masters.append(addr)
            queue_length = result["queue_length"]
    return {"masters": masters, "queue_length": queue_length}


def stub(addr):
    ip, port = addr.split(":")
    channel = grpc.insecure_channel(f"{ip}:{int(port) + FLEXLB_GRPC_PORT_OFFSET}")
    return channel, rpc.FlexlbServiceStub(channel)


def schedule(addr, request_id):
    channel, service = stub(addr)
    with channel:
        request = pb.FlexlbScheduleRequestPB(
            request_id=request_id,
            block_cache_keys=[7_161_531_891_384_532_105, -2_155_130_372_881_104_337, 42],
            seq_len=48,
            generate_timeout=3000,
            request_time_ms=int(time.time() * 1000),
            max_new_tokens=64,
            num_beams=1,
            force_disable_sp_run=False,
            model="engine_service",
            api_key="",
            cache_key_block_size=16,
            priority=50,
        )
        response = service.Schedule(request, timeout=10)
        return {
            "success": response.success,
            "code": response.code,
            "error_message": response.error_message,
            "real_master_host": response.real_master_host,
            "queue_length": response.queue_length,
            "enqueued_by_master": response.enqueued_by_master,
            "servers": [
                {"role": s.role, "server_ip": s.server_ip, "http_port": s.http_port, "grpc_port": s.grpc_port}
                for s in response.server_status
            ],
            "state": pb.RequestStatePB.Name(response.lifecycle.state),
        }


MASK = (1 << 64) - 1
BLOCK_SIZE = 16


def hash_int64(hash_value, value):
    """hashInt64Func: hash ^= std::hash<int32_t>(value) + 0x9e3779b97f4a7c15 + (hash << 12) + (hash >> 32),
    on a signed 64-bit hash (arithmetic shift), the int32 token sign-extended, sums wrapping."""
    unsigned = hash_value & MASK
    total = ((value & MASK) + 0x9E3779B97F4A7C15 + ((unsigned << 12) & MASK) + ((hash_value >> 32) & MASK)) & MASK
    result = unsigned ^ total
    return result - (1 << 64) if result >= (1 << 63) else result


def block_cache_keys(tokens, block_size=BLOCK_SIZE):
    keys, hash_value = [], 0
    for start in range(0, len(tokens), block_size):
        for token in tokens[start:start + block_size]:
            hash_value = hash_int64(hash_value, token)
        keys.append(hash_value)
    return keys


def prompt(count, seed):
    return [(index * 31 + seed * 1009) % 32000 for index in range(count)]


def generate(engine_http_addr, request_id, count, seed):
    ip, port = engine_http_addr.split(":")
    with grpc.insecure_channel(f"{ip}:{int(port) + 1}") as channel:
        service = engine_rpc.RpcServiceStub(channel)
        request = engine_pb.GenerateInputPB(
            request_id=request_id, token_ids=prompt(count, seed), generate_config=engine_pb.GenerateConfigPB(max_new_tokens=4)
        )
        outputs = list(service.GenerateStreamCall(request, timeout=10))
        last = outputs[-1].flatten_output
        return {"outputs": len(outputs), "finished": list(last.finished), "reuse_len": last.aux_info[0].total_reuse_len}


def serve_request(addr, request_id, count, seed):
    tokens = prompt(count, seed)
    channel, service = stub(addr)
    with channel:
        response = service.Schedule(
            pb.FlexlbScheduleRequestPB(
                request_id=request_id, block_cache_keys=block_cache_keys(tokens), seq_len=len(tokens), generate_timeout=3000,
                request_time_ms=int(time.time() * 1000), max_new_tokens=4, num_beams=1, model="engine_service",
                cache_key_block_size=BLOCK_SIZE, priority=50,
            ),
            timeout=10,
        )
    if response.code != 200:
        return {"code": response.code, "error_message": response.error_message}
    server = response.server_status[0]
    if server.grpc_port != server.http_port + 1:
        return {"code": -1, "error_message": f"grpc_port {server.grpc_port} is not http_port + 1"}
    result = generate(f"{server.server_ip}:{server.http_port}", request_id, count, seed)
    result.update({"code": response.code, "server": f"{server.server_ip}:{server.http_port}", "role": server.role})
    return result


def cancel(addr, request_id):
    channel, service = stub(addr)
    with channel:
        response = service.Cancel(
            pb.FlexlbCancelRequestPB(request_id=request_id, reason=pb.CANCEL_REASON_CLIENT_CANCELLED), timeout=5
        )
        return {"found": response.found, "state": pb.RequestStatePB.Name(response.lifecycle.state)}


def state(addr, request_id):
    channel, service = stub(addr)
    with channel:
        response = service.GetRequestState(pb.GetRequestStateRequestPB(request_id=request_id), timeout=5)
        return {"found": response.found, "state": pb.RequestStatePB.Name(response.lifecycle.state)}


arguments = sys.argv[3:]
while arguments:
    command = arguments.pop(0)
    if command == "discover":
        print(json.dumps(discover()))
    elif command in ("request", "generate"):
        addr, request_id, count, seed = arguments.pop(0), int(arguments.pop(0)), int(arguments.pop(0)), int(arguments.pop(0))
        print(json.dumps({"request": serve_request, "generate": generate}[command](addr, request_id, count, seed)))
    else:
        addr, request_id = arguments.pop(0), int(arguments.pop(0))
        print(json.dumps({"schedule": schedule, "cancel": cancel, "state": state}[command](addr, request_id)))

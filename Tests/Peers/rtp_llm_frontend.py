"""Plays an rtp-llm frontend against Fulcrum, as alibaba/rtp-llm does at 4b8d39cd5:

- discovery as rtp_llm/server/host_service.py: POST {} to /rtp_llm/master/info on every node,
  the master is the node whose real_master_host equals the ip:port probed;
- Schedule as rtp_llm/server/master_client.py: gRPC FlexlbService on the HTTP port + 2, the
  request filled as get_backend_role_addrs fills it (model "engine_service", priority, ...).

Usage: rtp_llm_frontend.py GENERATED_DIR NODES COMMAND...
  NODES: ip:http_port,ip:http_port,...
  commands: discover | schedule ADDR REQUEST_ID | cancel ADDR REQUEST_ID | state ADDR REQUEST_ID
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
    else:
        addr, request_id = arguments.pop(0), int(arguments.pop(0))
        print(json.dumps({"schedule": schedule, "cancel": cancel, "state": state}[command](addr, request_id)))

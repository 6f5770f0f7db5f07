#!/usr/bin/env python3
"""Failover and planned-transfer timing for a 3-node Fulcrum cluster on 127.0.0.1.

For each trial: find the leader, kill -9 it, and time until a write (a worker registration)
is committed through one of the two survivors; then restart the killed node and wait until it
follows again. Then time planned leadership transfers (POST /admin/leader/transfer). Prints
every trial, the median and p99, and exits. Loopback only, bounded in trials and time.
"""
import json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request, urllib.error

BINARY = sys.argv[1]
TRIALS = int(sys.argv[2]) if len(sys.argv) > 2 else 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=2.0):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


root = tempfile.mkdtemp(prefix="fulcrum-failover-")
ids = [1, 2, 3]
peer = {i: free_port() for i in ids}
web = {i: free_port() for i in ids}
bootstrap = ",".join(f"{i}=127.0.0.1:{peer[i]}" for i in ids)
processes = {}


def start(i):
    log = open(f"{root}/node-{i}.log", "a")
    processes[i] = subprocess.Popen(
        [BINARY, "serve", "--cluster-id", "bench", "--node-id", str(i), "--data-dir", f"{root}/node-{i}",
         "--peer-listen", f"127.0.0.1:{peer[i]}", "--http-listen", f"127.0.0.1:{web[i]}", "--bootstrap", bootstrap],
        stdout=log, stderr=log)


def status(i):
    try:
        return http("GET", f"http://127.0.0.1:{web[i]}/admin/cluster", timeout=0.5)[1]
    except Exception:
        return None


def agreed_leader(deadline=15.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        leaders = {(status(i) or {}).get("leader") for i in processes}
        if len(leaders) == 1 and None not in leaders and next(iter(leaders)) in processes:
            return next(iter(leaders))
        time.sleep(0.02)
    raise SystemExit("no leader agreed within %.0f s (logs in %s)" % (deadline, root))


def write_through(nodes, name, deadline=10.0):
    """Registers a worker through any of `nodes` (following 421); returns when committed."""
    end = time.monotonic() + deadline
    body = {"id": name, "model": "m", "role": "PDFUSION", "address": "127.0.0.1:9000"}
    while time.monotonic() < end:
        for i in nodes:
            try:
                code, answer = http("POST", f"http://127.0.0.1:{web[i]}/admin/workers", body, timeout=1.0)
            except Exception:
                continue
            if code == 200 and answer.get("result") == "applied":
                return
        time.sleep(0.002)
    raise SystemExit("no write committed within %.0f s" % deadline)


def summary(name, values):
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    print(f"{name}: median {statistics.median(values):.0f} ms, p99 {p99:.0f} ms, "
          f"min {values[0]:.0f} ms, max {values[-1]:.0f} ms over {len(values)} trials")


try:
    for i in ids:
        start(i)
    agreed_leader()
    failovers = []
    for trial in range(TRIALS):
        leader = agreed_leader()
        survivors = [i for i in ids if i != leader]
        write_through([leader], f"warm-{trial}")
        killed_at = time.monotonic()
        processes[leader].send_signal(signal.SIGKILL)
        processes[leader].wait()
        del processes[leader]
        write_through(survivors, f"after-kill-{trial}")
        elapsed = (time.monotonic() - killed_at) * 1000
        failovers.append(elapsed)
        print(f"trial {trial + 1}: killed leader {leader}; first write committed by the new leader after {elapsed:.0f} ms")
        start(leader)
        agreed_leader()
    transfers = []
    for trial in range(TRIALS):
        leader = agreed_leader()
        target = [i for i in ids if i != leader][trial % 2]
        began = time.monotonic()
        code, answer = http("POST", f"http://127.0.0.1:{web[leader]}/admin/leader/transfer", {"to": target}, timeout=5)
        transfers.append((time.monotonic() - began) * 1000)
        if code != 200:
            raise SystemExit(f"transfer failed: {code} {answer}")
    summary("failover (kill -9 of the leader to the first committed write)", failovers)
    summary("planned leader transfer (request to new leader in place)", transfers)
finally:
    for p in processes.values():
        p.kill()
    shutil.rmtree(root, ignore_errors=True)

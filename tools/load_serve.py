"""A bounded load test of `netdsl serve` on 127.0.0.1: throughput, p50/p99 latency and errors, per replica count.

    python tools/load_serve.py                                  # resnet18, 1 and 2 replicas, 8 clients
    python tools/load_serve.py --model networks/lenet5.net --requests 2000 --clients 16 --json

For each ``--replicas`` value the tool starts ``netdsl serve MODEL --replicas N`` (its own local Ray instance) on a
free port, waits until it answers, sends ``--warmup`` requests, then ``--requests`` requests from ``--clients``
concurrent clients (each a thread with its own HTTP connection), stopping early at ``--duration`` seconds, and
stops the service with SIGTERM. Every request carries one sample as an ``.npy`` body (seeded random values of the
model's input shape). Latency is measured per request on the client, from sending to the complete answer.
Reported: requests answered, errors (HTTP status not 200, or a failed connection), throughput (answered requests
per second of the measured phase), p50 and p99 latency, and the mean number of requests per model call (the
``batch`` field of the answers: dynamic batching at work).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import netdsl  # noqa: E402
from netdsl.machine import cpu_name, logical_cpus  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def body_for(model: str) -> tuple[str, bytes]:
    """The model's name and one sample of its input as an .npy body."""
    net = netdsl.load(model)
    spec = net.session().inputs[0]
    x = np.random.default_rng(0).standard_normal((1, *spec.shape[1:])).astype(spec.dtype)
    buf = io.BytesIO()
    np.save(buf, x)
    return net.name, buf.getvalue()


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, dict | None]:
    conn.request("POST", path, body=body, headers={"content-type": "application/x-npy"})
    r = conn.getresponse()
    data = r.read()
    try:
        return r.status, json.loads(data)
    except ValueError:
        return r.status, None


def load(port: int, path: str, body: bytes, requests: int, clients: int, duration: float) -> dict:
    lock = threading.Lock()
    state = {"next": 0, "latencies": [], "errors": 0, "batches": []}
    deadline = time.perf_counter() + duration

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                if state["next"] >= requests or time.perf_counter() > deadline:
                    break
                state["next"] += 1
            start = time.perf_counter()
            try:
                status, answer = post(conn, path, body)
            except (OSError, http.client.HTTPException):
                status, answer = 0, None
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            took = time.perf_counter() - start
            with lock:
                if status == 200 and answer is not None:
                    state["latencies"].append(took)
                    state["batches"].append(answer.get("batch", 1))
                else:
                    state["errors"] += 1
        conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = sorted(state["latencies"])
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
    return {"answered": len(lat), "errors": state["errors"], "seconds": wall,
            "throughput": len(lat) / wall if wall else 0.0,
            "p50_ms": q[49] * 1000 if lat else None, "p99_ms": q[98] * 1000 if lat else None,
            "mean_batch": statistics.fmean(state["batches"]) if state["batches"] else None}


def serve(model: str, port: int, replicas: int, args) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "netdsl", "serve", model, "--port", str(port), "--replicas", str(replicas),
           "--max-batch", str(args.max_batch), "--batch-wait-ms", str(args.batch_wait_ms)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    line = proc.stdout.readline()
    if "netdsl serve:" not in line:
        proc.kill()
        raise SystemExit(f"netdsl serve did not start: {line!r}")
    return proc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "networks" / "resnet18.net"))
    p.add_argument("--replicas", default="1,2", help="comma-separated replica counts (default 1,2)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--requests", type=int, default=400, help="requests per measurement (default 400)")
    p.add_argument("--duration", type=float, default=120.0, help="most seconds per measurement (default 120)")
    p.add_argument("--warmup", type=int, default=16, help="requests before measuring (default 16)")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--batch-wait-ms", type=float, default=10.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    name, body = body_for(args.model)
    path = f"/v1/models/{name}:predict"
    results = []
    for replicas in (int(r) for r in args.replicas.split(",")):
        port = free_port()
        proc = serve(args.model, port, replicas, args)
        try:
            load(port, path, body, args.warmup, min(args.clients, args.warmup), args.duration)
            result = load(port, path, body, args.requests, args.clients, args.duration)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        results.append({"replicas": replicas, **result})
    import ray

    versions = {"netdsl": netdsl.__version__, "ray": ray.__version__, "python": platform.python_version(),
                "cpu": cpu_name(), "logical_cpus": logical_cpus(),
                "load_average_1min": round(os.getloadavg()[0], 1)}  # other work on the machine skews the figures
    if args.json:
        print(json.dumps({"model": name, "clients": args.clients, "versions": versions, "results": results},
                         indent=1))
        return 0
    print(f"{name}, {args.clients} clients, {args.requests} requests of one sample (.npy), max batch "
          f"{args.max_batch}, wait {args.batch_wait_ms:g} ms; " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print()
    print("| replicas | answered | errors | requests/s | p50 ms | p99 ms | mean batch |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['replicas']} | {r['answered']} | {r['errors']} | {r['throughput']:.1f} | {r['p50_ms']:.0f} | "
              f"{r['p99_ms']:.0f} | {r['mean_batch']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""TensorRT engine builds and engine-cache hits, on a machine without a GPU (TensorRT for RTX).

    python tools/bench_trt_build.py                                  # default networks, fp32 and fp16
    python tools/bench_trt_build.py --networks resnet50 --reps 5 --json

For each network and precision, in one process:

* compile: the .net file to an in-memory ONNX model (weights included), once;
* cold build: ``netdsl.engines.trt.build`` into an empty cache directory: hashing the ONNX, TensorRT's
  parser and builder, and writing the plan into the cache (median of ``--reps``, each in a fresh cache);
* cache hit: the same call against the warm cache: hashing the ONNX, taking the lock, reading the plan
  and checking its sha256 (median of ``--reps``). This is what a second ``netdsl build``/``run`` pays
  for the engine, beside compiling the network; on a GPU, ``run`` adds deserialising the plan.

TensorRT for RTX builds portable engines ahead of time on the CPU, so these are build figures, not
inference figures; tools/gpu_selftest.py measures inference on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import netdsl  # noqa: E402
from netdsl.engines import EngineOptions, cpu_name  # noqa: E402
from netdsl.engines.trt import build, describe_trt, import_tensorrt  # noqa: E402
from netdsl.session import model_source  # noqa: E402

DEFAULT = "lenet5,resnet18,resnet50,mobilenet_v2,efficientnet_b0,densenet121,vgg16"


def measure(name: str, precision: str, reps: int, batch: tuple[int, int, int]) -> dict:
    net = netdsl.load(ROOT / "networks" / f"{name}.net")
    start = time.perf_counter()
    options = {"dtype": precision, "keep_io_fp32": True} if precision == "fp16" else {}
    source = model_source(net, compile_options=options)
    compile_s = time.perf_counter() - start
    cold, hit, builder = [], [], []
    size = 0
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as cache:
            opts = EngineOptions(precision=precision, batch_range=batch, cache_dir=cache)
            start = time.perf_counter()
            plan = build(source, opts)
            cold.append(time.perf_counter() - start)
            builder.append(plan.build_seconds)
            size = len(plan.data)
            start = time.perf_counter()
            again = build(source, opts)
            hit.append(time.perf_counter() - start)
            assert again.cached and again.data == plan.data
    return {"network": name, "precision": precision, "params": net.summary().params,
            "onnx_mb": len(source.read_bytes()) / 1e6, "plan_mb": size / 1e6, "compile_s": compile_s,
            "cold_build_s": statistics.median(cold), "builder_s": statistics.median(builder),
            "cache_hit_ms": statistics.median(hit) * 1e3, "reps": reps}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", default=DEFAULT, help=f"comma list of zoo networks (default {DEFAULT})")
    ap.add_argument("--precisions", default="fp32,fp16")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", default="1,32,64", help="profile MIN,OPT,MAX (default 1,32,64)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    batch = tuple(int(v) for v in args.batch.split(","))
    trt = import_tensorrt()
    rows = [measure(n, p, args.reps, batch) for n in args.networks.split(",") for p in args.precisions.split(",")]
    report = {"tensorrt": describe_trt(trt), "cpu": cpu_name(), "python": platform.python_version(),
              "netdsl": netdsl.__version__, "profile": batch, "results": rows}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{report['tensorrt']} on {report['cpu']}, profile {batch[0]}..{batch[2]} (opt {batch[1]}), "
          f"median of {args.reps}\n")
    print("| network | precision | params | ONNX MB | plan MB | compile s | cold build s | (builder s) "
          "| cache hit ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['network']} | {r['precision']} | {r['params']:,} | {r['onnx_mb']:.1f} | {r['plan_mb']:.1f} "
              f"| {r['compile_s']:.2f} | {r['cold_build_s']:.2f} | {r['builder_s']:.2f} | {r['cache_hit_ms']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

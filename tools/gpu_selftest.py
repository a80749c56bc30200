"""GPU self-test: everything netdsl does on an NVIDIA GPU, in one command, with one report.

    python tools/gpu_selftest.py [--networks lenet5,alexnet,...] [--duration 5] [--out DIR]

Steps (each one runs even when an earlier one failed; failures are reported, not hidden):

1. ``netdsl doctor --json``: versions, GPU, CUDA/cuDNN/TensorRT libraries, which engines are usable.
2. For each core zoo network: ``netdsl compare`` of TensorRT against ONNX Runtime CPU, fp32
   (``--rtol 1e-3``) and fp16 (``trt:cuda+fp16``, atol/rtol 5e-2 of the logits' scale: float16 keeps
   11 significant bits and errors add up over the network's depth; docs/parity.md measures ~1e-3).
3. ``netdsl build`` of resnet50 fp32 and fp16 engines (build time, then a second build from the cache).
4. ``netdsl bench`` of resnet50 on TensorRT fp16 at batch 1, 32 and 256 (and on ONNX Runtime CUDA when
   its CUDA provider is usable), GPU compute time and host latency with copies.
5. When torch and torchvision are importable: the torchvision ResNet-50 exported by ``torch.onnx.export``,
   built and benchmarked by the same TensorRT path at batch 256 fp16, as the reference for netdsl's engine.

Prints a markdown report and, with ``--out DIR``, writes it and the raw JSON there. Exit 0 when every step
passed, 1 otherwise. It needs a GPU machine with onnxruntime (CPU is enough for the reference),
TensorRT (``tensorrt`` or ``tensorrt_rtx``) and cuda-python; docs/tensorrt.md says how to bring them.
TensorRT for RTX targets compute capabilities 7.5-8.9 and 12.x (no SM90), so on an H100 or H200 the
engine steps need datacenter ``tensorrt``; with only ``tensorrt_rtx`` there they fail, and the report
shows how.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE_ZOO = ("lenet5", "alexnet", "vgg16", "googlenet", "resnet18", "resnet50")


def netdsl(*args: str, timeout: float = 1800) -> tuple[int, str, str, float]:
    env = dict(os.environ, NO_COLOR="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "netdsl", *args], capture_output=True, text=True, env=env,
                           timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return 124, "", f"timed out after {timeout} s", time.perf_counter() - start
    return r.returncode, r.stdout, r.stderr, time.perf_counter() - start


def _json(out: str) -> dict | None:
    try:
        return json.loads(out)
    except ValueError:
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", default=",".join(CORE_ZOO))
    ap.add_argument("--duration", type=float, default=5.0, help="bench seconds per batch size")
    ap.add_argument("--batches", default="1,32,256")
    ap.add_argument("--out", help="directory for report.md and report.json")
    ap.add_argument("--cache-dir", default=None, help="engine cache (default: a fresh temporary directory)")
    args = ap.parse_args()
    cache = args.cache_dir or tempfile.mkdtemp(prefix="netdsl-trt-")
    os.environ["NETDSL_CACHE_DIR"] = cache
    report: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "steps": []}
    lines = ["# netdsl GPU self-test", ""]
    failures = 0

    def step(name: str, rc: int, seconds: float, detail: str, data=None) -> None:
        nonlocal failures
        ok = rc == 0
        failures += not ok
        report["steps"].append({"step": name, "ok": ok, "rc": rc, "seconds": round(seconds, 2), "data": data,
                                "detail": detail[-4000:]})
        lines.append(f"- {'PASS' if ok else 'FAIL'} {name} ({seconds:.1f} s)" + ("" if ok else f": {detail[-600:]}"))
        print(lines[-1], flush=True)

    # 1. doctor
    rc, out, err, t = netdsl("doctor", "--json")
    doctor = _json(out)
    report["doctor"] = doctor
    step("doctor", rc if doctor else 1, t, err)
    usable = {k: v.get("usable") for k, v in (doctor or {}).get("engines", {}).items()}
    lines.append(f"  engines usable: {usable}")

    # 2. compare TensorRT with ONNX Runtime CPU
    lines += ["", "## compare (TensorRT vs ONNX Runtime CPU)", "", "| network | precision | max abs | max rel | pass |",
              "|---|---|---|---|---|"]
    table_at = len(lines)
    rows = []
    for net in args.networks.split(","):
        for precision, target, tol in (("fp32", "trt:cuda", ("1e-3", "1e-3")), ("fp16", "trt:cuda+fp16",
                                                                                 ("5e-2", "5e-2"))):
            rc, out, err, t = netdsl("compare", f"networks/{net}.net", "--engines", f"ort:cpu,{target}",
                                     "--atol", tol[0], "--rtol", tol[1], "--batch", "2", "--json")
            data = _json(out)
            step(f"compare {net} {precision}", rc, t, err, data)
            worst = _worst(data)
            rows.append(f"| {net} | {precision} | {worst[0]} | {worst[1]} | {'yes' if rc == 0 else 'NO'} |")
    lines[table_at:table_at] = rows

    # 3. build (and rebuild from the cache)
    lines += ["", "## build resnet50", ""]
    for precision in ("fp32", "fp16"):
        for attempt in ("build", "cached"):
            out_plan = os.path.join(cache, f"resnet50-{precision}.plan")
            rc, out, err, t = netdsl("build", "networks/resnet50.net", "--precision", precision, "--batch", "1..256",
                                     "--opt-batch", "32", "-o", out_plan)
            step(f"build resnet50 {precision} ({attempt})", rc, t, err or out)
            lines.append(f"  {out.strip()}")

    # 4. bench
    lines += ["", "## bench resnet50", ""]
    benches = [("trt fp16", ["--engine", "trt", "--device", "cuda", "--precision", "fp16"]),
               ("trt fp16 + CUDA graphs", ["--engine", "trt", "--device", "cuda", "--precision", "fp16",
                                           "--cuda-graph"]),
               ("trt fp32", ["--engine", "trt", "--device", "cuda"])]
    if usable.get("ort:cuda"):
        benches.append(("ort cuda fp16", ["--engine", "ort", "--device", "cuda", "--precision", "fp16"]))
    for label, extra in benches:
        rc, out, err, t = netdsl("bench", "networks/resnet50.net", *extra, "--batch", args.batches, "--duration",
                                 str(args.duration), "--json")
        data = _json(out)
        step(f"bench resnet50 {label}", rc, t, err, data)
        lines.extend(_bench_rows(label, data))

    # 5. the torchvision export through the same TensorRT path
    lines += ["", "## reference: torchvision ResNet-50 via torch.onnx.export, same TensorRT build", ""]
    tv = os.path.join(cache, "torchvision_resnet50.onnx")
    code = ("import torch, torchvision; m = torchvision.models.resnet50().eval(); "
            f"torch.onnx.export(m, torch.randn(1, 3, 224, 224), {tv!r}, input_names=['image'], "
            "output_names=['logits'], dynamic_axes={'image': {0: 'batch'}, 'logits': {0: 'batch'}}, "
            "opset_version=17, dynamo=False)")
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    step("torch.onnx.export torchvision resnet50", r.returncode, time.perf_counter() - start, r.stderr)
    if r.returncode == 0:
        rc, out, err, t = netdsl("bench", tv, "--engine", "trt", "--device", "cuda", "--precision", "fp16",
                                 "--batch", args.batches.split(",")[-1], "--duration", str(args.duration), "--json")
        data = _json(out)
        step("bench torchvision-exported resnet50 trt fp16", rc, t, err, data)
        lines.extend(_bench_rows("torchvision export, trt fp16", data))

    lines += ["", f"{failures} step(s) failed." if failures else "All steps passed."]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        Path(args.out, "report.md").write_text(text)
        Path(args.out, "report.json").write_text(json.dumps(report, indent=1))
    return 1 if failures else 0


def _worst(data: dict | None) -> tuple[str, str]:
    if not data:
        return ("-", "-")
    abs_, rel = 0.0, 0.0
    for pair in data.get("pairs", data.get("comparisons", [])):
        for o in (pair.get("outputs") or {}).values() if isinstance(pair.get("outputs"), dict) else \
                pair.get("outputs", []):
            abs_ = max(abs_, float(o.get("max_abs", o.get("max_abs_error", 0.0)) or 0.0))
            rel = max(rel, float(o.get("max_rel", o.get("max_rel_error", 0.0)) or 0.0))
    return (f"{abs_:.3g}", f"{rel:.3g}")


def _bench_rows(label: str, data: dict | None) -> list[str]:
    if not data:
        return [f"  {label}: no result"]
    rows = [f"### {label}", "", "| batch | p50 ms | p99 ms | images/s | GPU compute ms |", "|---|---|---|---|---|"]
    for r in data.get("results", []):
        lat = r.get("latency_ms") or r.get("latency") or {}
        rows.append(f"| {r.get('batch')} | {lat.get('p50', '-')} | {lat.get('p99', '-')} | "
                    f"{r.get('throughput_ips', '-')} | {r.get('device_event_ms', '-')} |")
    return rows + [""]


if __name__ == "__main__":
    sys.exit(main())

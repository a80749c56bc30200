#!/usr/bin/env python3
"""Benchmark: netdsl's ONNX against torchvision + torch.onnx.export, in ONNX Runtime on the CPU.

Re-runs every figure of docs/runtime.md, "ONNX Runtime speed vs torch.onnx.export", in one command:

    /work/venv/bin/python tools/bench_ort_vs_torch.py --torch-python /work/tvenv/bin/python

Step 1, in a subprocess of ``--torch-python`` (a Python with torch and torchvision; netdsl is not
needed there): build ``torchvision.models.<model>()`` (random init, eval mode), save its state_dict
to ``weights.npz`` and export it with ``torch.onnx.export`` twice, with the default (dynamo) exporter
and with the TorchScript one (``dynamo=False``): dynamic batch, into a temporary directory.

Step 2, in this process (needs onnxruntime and netdsl, not torch): compile ``networks/<model>.net``
with those same weights, plain, with ``fold_bn=True``, and with its weights in an external data file
(``--external-data always``); check that all models compute the same
logits; then create one session per model and ONNX Runtime graph-optimisation level, all with the
same options (intra-op threads, one inter-op thread, sequential execution), and time them all in
interleaved rounds (each round runs every level and model ``--runs`` times, starting one further
along each round), so slow drifts in machine load hit every configuration alike. Reported: the
median latency per model and level, the ratio of medians netdsl / torch export (target <= 1.00),
the median of the per-round ratios, session creation time, and node counts in the file and after
ONNX Runtime's optimisation.

Opset 17 is asked of every exporter; torch's dynamo exporter cannot go below 18 and writes 18.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LEVELS = ("disable", "basic", "extended", "all")


# ----------------------------------------------------------------------------- step 1 (torch python)
def export_torch(model_name: str, out_dir: str, opset: int) -> None:
    """Runs under --torch-python: weights.npz, torch_dynamo.onnx, torch_script.onnx in out_dir."""
    import warnings

    import numpy as np
    import torch
    import torchvision

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)(weights=None).eval()
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    np.savez(os.path.join(out_dir, "weights.npz"), **state)
    x = torch.randn(1, 3, 224, 224)
    info = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    for name, dynamo in (("torch_dynamo", True), ("torch_script", False)):
        path = os.path.join(out_dir, f"{name}.onnx")
        start = time.perf_counter()
        try:
            with torch.no_grad():
                torch.onnx.export(model, (x,), path, input_names=["image"], output_names=["logits"],
                                  dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                                  dynamo=dynamo)
            info[name] = {"seconds": time.perf_counter() - start}
        except Exception as e:  # noqa: BLE001 - record why an exporter failed, keep the other
            info[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    with open(os.path.join(out_dir, "export.json"), "w") as f:
        json.dump(info, f)


# ----------------------------------------------------------------------------- step 2 (this process)
def build_models(args, work: Path) -> tuple[dict[str, Path], dict]:
    """Export with torch (subprocess), compile with netdsl; returns {label: onnx path} and export info."""
    import numpy as np

    import netdsl

    cmd = [args.torch_python, str(Path(__file__).resolve()), "--export-to", str(work), "--model", args.model,
           "--opset", str(args.opset)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"torch export failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    info = json.loads((work / "export.json").read_text())
    with np.load(work / "weights.npz") as z:
        weights = {k: z[k] for k in z.files}
    net = netdsl.load(REPO / "networks" / f"{args.model}.net")
    expected = {name for name, _, _ in net.graph.weight_specs()}
    if expected != set(weights):
        sys.exit(f"state_dict keys differ from {args.model}.net's weights: "
                 f"{sorted(expected ^ set(weights))[:10]}")
    paths = {}
    for label, file, options in (("netdsl", "netdsl.onnx", {}),
                                 ("netdsl --fold-bn", "netdsl_fold_bn.onnx", {"fold_bn": True}),
                                 ("netdsl --external-data always", "netdsl_external.onnx", {"external_data": True})):
        net.save(work / file, opset=args.opset, weights=weights, **options)
        paths[label] = work / file
    for name, label in (("torch_dynamo", "torch.onnx.export (dynamo)"),
                        ("torch_script", "torch.onnx.export (TorchScript)")):
        if "error" not in info[name]:
            paths[label] = work / f"{name}.onnx"
    return paths, info


def session(path: Path, level: str, threads: int, save_to: Path | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                   "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                   "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                   "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if save_to is not None:
        so.optimized_model_filepath = str(save_to)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def node_counts(path: Path) -> tuple[int, dict[str, int]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops: dict[str, int] = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return len(model.graph.node), dict(sorted(ops.items(), key=lambda kv: -kv[1]))


def file_facts(path: Path) -> dict:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    nodes, ops = node_counts(path)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    data = sum(f.stat().st_size for f in path.parent.glob(path.name + ".data"))
    return {"nodes": nodes, "ops": ops, "opset": opset, "bytes": path.stat().st_size + data,
            "external_data": data > 0}


def bench(paths: dict[str, Path], levels: list[str], feeds, args, work: Path) -> dict:
    """Time every (level, model) pair in the same interleaved rounds; returns results[level][model]."""
    configs = [(level, label) for level in levels for label in paths]
    sessions, created, optimized = {}, {}, {}
    for level, label in configs:
        saved = work / "optimized.onnx"
        sessions[level, label] = session(paths[label], level, args.threads, saved)
        optimized[level, label] = node_counts(saved)
        for f in work.glob("optimized.onnx*"):
            f.unlink()
        seconds = []
        for _ in range(args.session_repeats):  # creation time without the optimised-model save
            start = time.perf_counter()
            session(paths[label], level, args.threads)
            seconds.append(time.perf_counter() - start)
        created[level, label] = statistics.median(seconds)
    for config in configs:  # warm-up
        for _ in range(args.warmup):
            sessions[config].run(None, feeds)
    times = {config: [] for config in configs}
    round_means = {config: [] for config in configs}
    gc.collect()
    gc.disable()
    try:
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
            shift = r % len(configs)
            for config in configs[shift:] + configs[:shift]:
                run = sessions[config].run
                t = []
                for _ in range(args.runs):
                    start = time.perf_counter()
                    run(None, feeds)
                    t.append(time.perf_counter() - start)
                times[config] += t
                round_means[config].append(statistics.fmean(t))
    finally:
        gc.enable()
    out: dict[str, dict] = {level: {} for level in levels}
    for level, label in configs:
        ms = [x * 1000 for x in times[level, label]]
        q = statistics.quantiles(ms, n=10)
        out[level][label] = {
            "median_ms": statistics.median(ms), "p10_ms": q[0], "p90_ms": q[-1], "min_ms": min(ms), "runs": len(ms),
            "session_seconds": created[level, label], "nodes_after_ort": optimized[level, label][0],
            "ops_after_ort": optimized[level, label][1],
            "round_means_ms": [x * 1000 for x in round_means[level, label]]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet50", help="torchvision model with a networks/<model>.net (resnet50)")
    p.add_argument("--torch-python", default="/work/tvenv/bin/python", help="a Python with torch + torchvision")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: physical cores)")
    p.add_argument("--levels", default=",".join(LEVELS), help="ORT optimisation levels to measure")
    p.add_argument("--rounds", type=int, default=30, help="interleaved rounds (each runs every level and model)")
    p.add_argument("--runs", type=int, default=3, help="consecutive runs of each level and model per round")
    p.add_argument("--session-repeats", type=int, default=3, help="session creations timed per model and level")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    p.add_argument("--export-to", help=argparse.SUPPRESS)  # step 1, run under --torch-python
    args = p.parse_args(argv)
    if args.export_to:
        export_torch(args.model, args.export_to, args.opset)
        return 0

    import numpy as np
    import onnxruntime as ort

    sys.path.insert(0, str(REPO))
    from netdsl.engines import cpu_name, physical_cores

    args.threads = args.threads or physical_cores()
    levels = [lv for lv in args.levels.split(",") if lv]
    with tempfile.TemporaryDirectory(prefix="bench_ort_vs_torch.") as tmp:
        work = Path(tmp)
        paths, export_info = build_models(args, work)
        feeds = {"image": np.random.default_rng(0).standard_normal((args.batch, 3, 224, 224)).astype(np.float32)}
        # all models compute the same function (same weights), checked at the most optimised level
        check = {label: session(path, "all", args.threads).run(None, feeds)[0] for label, path in paths.items()}
        ref = check["netdsl"]
        agreement = {label: float(np.abs(v - ref).max()) for label, v in check.items()}
        del check
        files = {label: file_facts(path) for label, path in paths.items()}
        load_before = os.getloadavg()
        results = bench(paths, levels, feeds, args, work)

    torch_labels = [lb for lb in paths if lb.startswith("torch")]
    ratios = {}
    for level, res in results.items():
        for ours in (lb for lb in paths if lb.startswith("netdsl")):
            for theirs in torch_labels:
                per_round = [a / b for a, b in zip(res[ours]["round_means_ms"], res[theirs]["round_means_ms"],
                                                   strict=True)]
                ratios[f"{level}: {ours} / {theirs}"] = {
                    "ratio_of_medians": res[ours]["median_ms"] / res[theirs]["median_ms"],
                    "median_round_ratio": statistics.median(per_round)}
    report = {"command": " ".join([Path(sys.executable).as_posix(), *sys.argv]), "model": args.model,
              "batch": args.batch, "threads": args.threads, "cpu": cpu_name(), "cores_available": os.cpu_count(),
              "onnxruntime": ort.__version__, "python": platform.python_version(), "export": export_info,
              "load_average_before": load_before, "load_average_after": os.getloadavg(), "rounds": args.rounds,
              "runs_per_round": args.runs, "max_abs_diff_vs_netdsl": agreement,
              "files": files, "results": results, "ratios": ratios}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print_markdown(report)
    return 0


def print_markdown(r: dict) -> None:
    print(f"{r['model']}, batch {r['batch']}, {r['threads']} intra-op threads, {r['cpu']} "
          f"({r['cores_available']} cores), onnxruntime {r['onnxruntime']}, torch {r['export']['torch']}, "
          f"torchvision {r['export']['torchvision']}; {r['rounds']} interleaved rounds x {r['runs_per_round']} runs "
          f"of every model and level; load average {r['load_average_before'][0]:.2f} before, "
          f"{r['load_average_after'][0]:.2f} after\n")
    print("| model file | opset | nodes | size (MB) | weights | max abs diff of logits vs netdsl |")
    print("|---|---:|---:|---:|---|---:|")
    for label, f in r["files"].items():
        where = "external .data file" if f["external_data"] else "inline"
        print(f"| {label} | {f['opset']} | {f['nodes']} | {f['bytes'] / 1e6:.1f} | {where} | "
              f"{r['max_abs_diff_vs_netdsl'][label]:.2g} |")
    print()
    labels = list(r["files"])
    print("| ORT opt level | " + " | ".join(labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for level, res in r["results"].items():
        cells = [f"{res[lb]['median_ms']:.2f} ms ({res[lb]['nodes_after_ort']} nodes, "
                 f"session {res[lb]['session_seconds'] * 1000:.0f} ms)" for lb in labels]
        print(f"| {level} | " + " | ".join(cells) + " |")
    print()
    print("| ratio (median latency) | ratio of medians | median of per-round ratios |")
    print("|---|---:|---:|")
    for name, v in r["ratios"].items():
        print(f"| {name} | {v['ratio_of_medians']:.3f} | {v['median_round_ratio']:.3f} |")


if __name__ == "__main__":
    sys.exit(main())

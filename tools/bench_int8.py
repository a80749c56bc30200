#!/usr/bin/env python3
"""Benchmark: fp32 against int8 from the same netdsl source, in ONNX Runtime on the CPU.

    python tools/bench_int8.py                                  # ResNet-50, MobileNetV2, VGG-16
    python tools/bench_int8.py --networks resnet50 --variants fp32,u8s8,s8s8   # the activation-type choice
    python tools/bench_int8.py --networks all --batches 1 --variants fp32,u8s8,fastest   # every zoo network

For each network (``--networks all``: every file in networks/): compile ``networks/<name>.net`` (seeded
random weights, the input at its declared size) to fp32 ONNX, quantize it with
``netdsl.quantize.quantize`` (``--target ort-cpu``, minmax, ``--samples`` random calibration samples:
the ranges are meaningless for accuracy, and irrelevant to speed), and time every variant at each batch
size with ``netdsl.quantize.time_models`` (what ``netdsl quantize --fastest`` times with): the same session
options for all (``--threads`` intra-op threads, one inter-op thread, all graph optimisations), ``--rounds``
interleaved rounds, each starting one variant further along so that drifts in machine load hit every variant
alike; in each round a variant runs once untimed (the run after another variant's finds the caches holding
that one's data), then for at least ``--round-seconds`` and ``--runs`` timed runs. Reported: the median
latency per variant and batch, and the ratio fp32 / variant (above 1: the variant is faster). ``--json PATH``
also writes the figures.

``--sensitivity``: instead of timing, how much the fp32 network itself amplifies rounding (fp16, input noise).

``--agreement``: instead of timing, for each network report how the int8 model (both targets) agrees with
fp32 on a fixed set of random images (``--images``, seed 1; calibrated on ``--samples`` other random images,
seed 0): the output SQNR, the relative error and the top-1 agreement. The networks have random weights, so
this measures the quantizer, not accuracy on real data (tools/train_digits.py does that).

Variants: ``fp32``; ``u8s8`` (uint8 activations, int8 weights: ``--target ort-cpu``'s default);
``s8s8`` (symmetric int8 activations, int8 weights); ``fastest`` (what ``netdsl quantize --fastest`` writes:
the fastest of int8, int8-partial and fp32 as its own timing found them; the line it prints says which);
``u8s8-keep`` (u8s8 with the convs and fcs that feed or read an op ONNX Runtime has no int8 kernel for, such
as hard-swish or tanh, kept in fp32: ``--fastest``'s int8-partial).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def session(model_bytes: bytes, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def variants_of(name: str, wanted: list[str], samples: int, threads: int) -> dict:
    import netdsl
    from netdsl.quantize import around_float_ops, prepare_fp32, quantize

    fp32 = netdsl.load(REPO / "networks" / f"{name}.net").to_onnx()
    out = {}
    for v in wanted:
        if v == "fp32":
            out[v] = fp32
        elif v == "fastest":
            q = quantize(fp32, "random", target="ort-cpu", samples=samples, report=False, fastest=True,
                         threads=threads)
            print(f"{name}: --fastest kept {q.speed.chosen} ("
                  + ", ".join(f"{k} {ms:.3f} ms" for k, ms in q.speed.median_ms.items()) + ")", flush=True)
            out[v] = q.model
        else:
            keep = around_float_ops(prepare_fp32(fp32)) if v == "u8s8-keep" else ()
            q = quantize(fp32, "random", target="ort-cpu", samples=samples, report=False,
                         activations="int8" if v == "s8s8" else None, exclude=keep)
            out[v] = q.model
    return out


def time_network(name: str, args) -> dict:
    import numpy as np

    from netdsl.quantize import time_models

    models = variants_of(name, args.variants, args.samples, args.threads)
    first = next(iter(models.values())).graph.input[0]
    dims = [d.dim_value for d in first.type.tensor_type.shape.dim[1:]]
    rng = np.random.default_rng(0)
    result = {}
    for batch in args.batches:
        x = rng.standard_normal((batch, *dims)).astype(np.float32)
        med, runs, _ = time_models(models, {first.name: x}, args.threads, args.rounds, args.round_seconds, args.runs)
        result[batch] = {v: {"median_ms": med[v], "fp32_ratio": med["fp32"] / med[v] if "fp32" in med else None,
                             "runs": runs} for v in med}
        line = ", ".join(f"{v} {med[v]:.3g} ms" + (f" ({med['fp32'] / med[v]:.2f}x)" if v != "fp32"
                                                    and "fp32" in med else "") for v in med)
        print(f"{name} batch {batch}: {line}", flush=True)
    return result


def agreement(name: str, args) -> dict:
    import numpy as np

    import netdsl
    from netdsl.quantize import calibration_data, quantize, sqnr_db

    fp32 = netdsl.load(REPO / "networks" / f"{name}.net").to_onnx()
    dims = [d.dim_value for d in fp32.graph.input[0].type.tensor_type.shape.dim[1:]]
    images = np.random.default_rng(1).standard_normal((args.images, *dims)).astype(np.float32)
    cal = calibration_data("random", fp32, samples=args.samples, seed=0)

    def logits(model_bytes: bytes) -> np.ndarray:
        s = session(model_bytes, args.threads)
        feed = s.get_inputs()[0].name
        return np.concatenate([s.run(None, {feed: images[i:i + 8]})[0] for i in range(0, len(images), 8)])

    ref = logits(fp32.SerializeToString())
    out = {}
    for target in ("ort-cpu", "trt"):
        got = logits(quantize(fp32, cal, target=target, report=False).model.SerializeToString())
        rel = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
        top1 = float(np.mean(got.argmax(1) == ref.argmax(1)))  # per pixel for a segmentation network
        out[target] = {"sqnr_db": sqnr_db(rel), "rel_error": rel, "top1_agreement": top1}
        print(f"{name} {target}: SQNR {sqnr_db(rel):.1f} dB, rel error {rel:.4f}, top-1 agreement {top1:.1%} "
              f"({len(images)} images)", flush=True)
    return out


def sensitivity(name: str, args) -> dict:
    """How much the fp32 network itself amplifies rounding: the relative change of its outputs under fp16
    (``--dtype fp16``, fp32 inputs and outputs) and under added input noise of 1e-4, 1e-3 and 1e-2 of the
    input's scale, on 4 random images (seed 1). A network that amplifies these cannot stay close in int8."""
    import numpy as np

    import netdsl

    net = netdsl.load(REPO / "networks" / f"{name}.net")
    s32 = session(net.to_onnx().SerializeToString(), args.threads)
    s16 = session(net.to_onnx(dtype="fp16", keep_io_fp32=True).SerializeToString(), args.threads)
    feed = s32.get_inputs()[0]
    x = np.random.default_rng(1).standard_normal((4, *feed.shape[1:])).astype(np.float32)
    ref = s32.run(None, {feed.name: x})[0]

    def rel(out: np.ndarray) -> float:
        return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))

    out = {"fp16": rel(s16.run(None, {feed.name: x})[0])}
    noise = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    for eps in (1e-4, 1e-3, 1e-2):
        out[f"noise {eps:g}"] = rel(s32.run(None, {feed.name: x + np.float32(eps) * noise})[0])
    print(f"{name}: relative output change " + ", ".join(f"{k} {v:.4g}" for k, v in out.items()), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--networks", default="resnet50,mobilenet_v2,vgg16",
                    help="comma-separated names from networks/, or `all`")
    ap.add_argument("--variants", default="fp32,u8s8")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=3, help="timed runs of each variant per round, at least")
    ap.add_argument("--round-seconds", type=float, default=0.1,
                    help="timed seconds of each variant per round, at least (after one untimed run)")
    ap.add_argument("--samples", type=int, default=8, help="random calibration samples")
    ap.add_argument("--agreement", action="store_true", help="SQNR and top-1 agreement instead of timings")
    ap.add_argument("--images", type=int, default=64, help="random images of --agreement")
    ap.add_argument("--sensitivity", action="store_true",
                    help="how much fp16 and input noise move the fp32 network's outputs, instead of timings")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    args.variants = args.variants.split(",")
    args.batches = [int(b) for b in args.batches.split(",")]
    import numpy as np
    import onnxruntime as ort

    from netdsl.machine import cpu_name

    info = {"cpu": cpu_name(), "python": platform.python_version(), "onnxruntime": ort.__version__,
            "numpy": np.__version__, "threads": args.threads, "rounds": args.rounds, "runs": args.runs,
            "round_seconds": args.round_seconds}
    print(json.dumps(info), flush=True)
    measure = sensitivity if args.sensitivity else agreement if args.agreement else time_network
    names = (sorted(p.stem for p in (REPO / "networks").glob("*.net")) if args.networks == "all"
             else args.networks.split(","))
    results = {}
    for n in names:
        results[n] = measure(n, args)
        if args.json:  # after every network, so that a long run keeps what it measured
            Path(args.json).write_text(json.dumps({"info": info, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

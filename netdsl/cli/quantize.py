"""`netdsl quantize`: calibrated post-training int8 quantization of a .net (with --weights) or a compiled .onnx.

    netdsl quantize networks/resnet18.net --weights r18.safetensors --calibrate images/ -o r18.int8.onnx
    netdsl quantize model.onnx --calibrate batches.npz --target trt --exclude 'layer4.*' --budget 0.05

Writes the quantized model (QDQ format, see :mod:`netdsl.quantize`) atomically, then prints each quantized
layer's output error against fp32 on the calibration data, worst first, with its label and .net location.
Bad calibration data is a one-line error with exit 1, and nothing is written.
"""

from __future__ import annotations

import argparse
import math
import sys

from ..errors import UsageError
from ..text import plain
from .common import add_weight_options, check_outputs, compilation, default_output, print_json, safe_file_name


def fp32_model(args: argparse.Namespace, **options):
    """The fp32 ONNX model to quantize: the .onnx file, or the .net compiled with the weight options."""
    if args.model.endswith(".onnx"):
        if args.weights:
            raise UsageError("--weights applies when compiling a .net file, not to a compiled .onnx model")
        from ..session import load_onnx

        return load_onnx(args.model)
    return compilation(args, args.model, **options).to_onnx()


def cmd_quantize(args: argparse.Namespace) -> int:
    from ..files import output_directory, save_model
    from ..quantize import quantize

    if args.samples is not None and args.samples < 1:
        raise UsageError("--samples must be at least 1")
    if args.budget is not None and not (math.isfinite(args.budget) and args.budget > 0):
        raise UsageError("--budget must be a positive number (a relative error, e.g. 0.05)")
    if args.fastest and args.target != "ort-cpu":
        raise UsageError("--fastest times ONNX Runtime on this CPU: it applies to --target ort-cpu")
    if args.threads is not None and not args.fastest:
        raise UsageError("--threads applies with --fastest (the threads its timing runs use)")
    if args.output:
        output_directory(args.output)
        check_outputs(args, {"-o": args.output})
    model = fp32_model(args)
    out = args.output or (default_output(args.model, ".int8.onnx") if args.model.endswith(".onnx")
                          else safe_file_name(model.graph.name) + ".int8.onnx")
    if not args.output:
        check_outputs(args, {"-o": out})
    result = quantize(model, args.calibrate, target=args.target, method=args.method, samples=args.samples,
                      exclude=tuple(args.exclude or ()), budget=args.budget, seed=args.seed, fastest=args.fastest,
                      threads=args.threads)
    files = save_model(result.model, out)
    if args.json:
        print_json({"output": files, **result.to_json()})
    else:
        print_report(result, files[0], args.top)
    return 0


def print_report(result, out: str, top: int) -> None:
    from ..quantize import RANDOM_NOTE, sqnr_db, weight_bytes

    print(f"quantized for {result.target}: {result.activations} activations, int8 per-channel symmetric weights; "
          f"{result.method} calibration on {result.samples} sample(s) from {plain(result.calibration, 200)}")
    if result.random:
        print(f"note: {RANDOM_NOTE}")
    layers = result.layers
    if layers:
        shown = layers[:top]
        print(f"per-layer error against fp32 ({len(layers)} quantized layers, the {len(shown)} that add the most):")
        width = max(len(plain(x.label, 60)) for x in shown)
        for x in shown:
            print(f"  {plain(x.label, 60):<{width}}  {x.op:<17} rel {x.error:8.4f}  added {x.added:+8.4f}  "
                  f"SQNR {sqnr_db(x.error):6.1f} dB  {plain(x.location or '(no .net location)', 200)}")
    agree = "" if result.top1_agreement is None else f", top-1 agreement {result.top1_agreement:.1%}"
    if not result.kept_fp32:
        print(f"output: rel error {result.output_error:.4f}, SQNR {sqnr_db(result.output_error):.1f} dB{agree}")
    if result.budget is not None:
        kept = ", ".join(plain(x, 60) for x in result.budget_excluded) or "none"
        verdict = "within" if result.within_budget else "NOT within"
        print(f"budget {result.budget:g}: {verdict} budget; kept in fp32 to meet it: {kept}")
    given = [x for x in result.excluded if x not in result.budget_excluded and x not in result.speed_excluded]
    if given:
        print("kept in fp32 (--exclude): " + ", ".join(plain(x, 60) for x in given))
    if result.float_ops:
        ops = ", ".join(f"{op} x{n}" for op, n in result.float_ops.items())
        print(f"note: ONNX Runtime has no int8 kernel for {sum(result.float_ops.values())} op(s) here ({ops}): each "
              "runs in float between a dequantize and a quantize, which can make the model slower than fp32; "
              "time both (netdsl bench --precision int8), or let --fastest time the choices on this CPU")
    if result.speed is not None:
        print_speed(result)
    sizes = weight_bytes(result.model)
    print(f"wrote {plain(out)}: int8 weights {sizes.get('int8', 0):,} bytes, other weights "
          f"{sum(v for k, v in sizes.items() if k != 'int8'):,} bytes")
    if result.budget is not None and not result.within_budget:
        print(f"netdsl: warning: the output error {result.output_error:.4f} is above --budget {result.budget:g}",
              file=sys.stderr)


def print_speed(result) -> None:
    from ..quantize import SPEED_MARGIN

    speed = result.speed
    names = {"int8": "int8", "int8-partial": "int8-partial (the layers around them in fp32)", "fp32": "fp32"}
    print(f"speed on this CPU (batch 1, {speed.threads} thread(s), median of at least {speed.runs} runs each, "
          "interleaved):")
    for name, ms in speed.median_ms.items():
        ratio = "" if name == "fp32" else f"  {speed.speedup(name):.2f}x fp32"
        mark = "  <- kept" if name == speed.chosen else ""
        print(f"  {names[name]:<46} {ms:9.3f} ms{ratio}{mark}")
    if result.speed_excluded:
        print("kept in fp32 (--fastest): " + ", ".join(plain(x, 60) for x in result.speed_excluded))
    if result.kept_fp32:
        print(f"int8 was not at least {SPEED_MARGIN:g}x as fast as fp32 here: the model written is the fp32 one "
              "(batch norms folded), nothing quantized")


def register(sub) -> None:
    from ..quantize import METHODS, TARGETS

    p = sub.add_parser("quantize", help="calibrated int8 quantization (QDQ) with a per-layer error report")
    p.add_argument("model", help="a .net source file (with --weights) or a compiled fp32 .onnx model")
    p.add_argument("--network", metavar="NAME", help="the network to use when a .net file holds several")
    p.add_argument("--arg", action="append", metavar="NAME=VALUE", help="override a network parameter (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="weight-initialisation seed for .net models, and the seed "
                                                        "of --calibrate random (default 0)")
    add_weight_options(p, dtype=False)
    p.add_argument("--calibrate", required=True, metavar="DATA",
                   help="calibration data: a folder of images (read with the input's declared preprocessing), an "
                        ".npy or .npz file of samples, or `random` (a smoke run: meaningless for accuracy)")
    p.add_argument("-o", "--output", metavar="PATH",
                   help="the quantized model (default: <network>.int8.onnx, or the .onnx file's name with .int8.onnx)")
    p.add_argument("--target", choices=TARGETS, default="ort-cpu",
                   help="ort-cpu: uint8 activations for ONNX Runtime's x86 kernels (default); trt: symmetric int8 "
                        "for TensorRT's strongly typed engines")
    p.add_argument("--method", choices=METHODS, default="minmax", help="calibration method (default minmax)")
    p.add_argument("--samples", type=int, metavar="N", help="calibration samples to use (default 32; random: 8)")
    p.add_argument("--exclude", action="append", metavar="PATTERN",
                   help="keep layers in fp32: a label or glob, e.g. fc or 'layer4.*' (repeatable)")
    p.add_argument("--budget", type=float, metavar="REL",
                   help="keep the layers that add the most error in fp32 until the output's relative error is at "
                        "most REL")
    p.add_argument("--fastest", action="store_true",
                   help="time int8, int8 with the layers around ops that have no int8 kernel in fp32, and fp32 on this "
                        "CPU (batch 1); write the faster int8 model if it is at least 1.1x as fast as fp32, else the "
                        "fp32 one (ort-cpu)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="intra-op threads of --fastest's timing (default: the physical cores, as netdsl run)")
    p.add_argument("--top", type=int, default=10, metavar="N", help="layers shown in the report (default 10)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_quantize)

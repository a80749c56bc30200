"""`netdsl export triton`: a Triton Inference Server model repository from a .net or .onnx model.

Writes ``REPO/<name>/config.pbtxt`` and ``REPO/<name>/<version>/model.onnx`` (``--platform onnxruntime_onnx``)
or ``model.plan`` (``--platform tensorrt_plan``, built as ``netdsl build`` builds it); see :mod:`netdsl.triton`.
"""

from __future__ import annotations

import argparse
import os

from ..errors import UsageError
from ..text import plain
from .common import add_weight_options, compile_model, default_output, model_inputs, safe_file_name


def _batch_sizes(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--preferred-batch {text}: expected batch sizes such as 4,8") from None
    return sizes


def cmd_export_triton(args: argparse.Namespace) -> int:
    from ..files import refuse_overwrite
    from ..session import model_source
    from ..triton import PLATFORMS, TritonOptions, check_config, check_model_name, model_config, write_repository
    from .run import read_labels

    labels = read_labels(args.labels)
    options = TritonOptions(
        platform=args.platform, max_batch=args.max_batch, instances=args.instances, kind=args.kind,
        dynamic_batching=not args.no_dynamic_batching, max_queue_delay_us=args.batch_delay_us,
        preferred_batch=_batch_sizes(args.preferred_batch), trt_accelerator=args.trt_accelerator,
        trt_cache_path=args.trt_cache_path, labels="labels.txt" if labels is not None else None,
        version=args.version)
    options.validate()  # before compiling or building anything
    if args.name is not None:
        check_model_name(args.name)
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UsageError(f"-o {args.output}: exists and is not a folder (a model repository is a folder)")

    model, weights, compile_options = compile_model(args)
    source = model_source(model, seed=args.seed, weights=weights, compile_options=compile_options)
    # named after the file the user gave (a .net: its network, an identifier), never after a name inside a model
    name = args.name or (default_output(args.model, "") if args.model.endswith(".onnx")
                         else safe_file_name(source.name))
    name = check_model_name(name)
    target = os.path.join(args.output, name, str(options.version), PLATFORMS[options.platform])
    refuse_overwrite(target, model_inputs(args), "-o")
    config = model_config(source, name, options)
    checked = check_config(config)
    built = ""
    if options.platform == "tensorrt_plan":
        from ..engines import EngineOptions
        from ..engines.trt import build

        batch = max(options.max_batch, 1)
        plan = build(source, EngineOptions(precision=compile_options["dtype"], batch_range=(1, batch, batch),
                                           progress=True))
        data = plan.data
        how = "from the cache" if plan.cached else f"built in {plan.build_seconds:.1f} s"
        built = f", {plan.trt} ({how})"
        if "RTX" in plan.trt:
            print(f"note: this plan was built with {plan.trt}; Triton's tensorrt backend loads plans built by the "
                  f"TensorRT of its own release: rebuild there, or export with --platform onnxruntime_onnx "
                  f"--trt-accelerator fp16 to let the server build its engines (cached)")
    else:
        data = source.read_bytes()
    labels_text = None
    if labels is not None:
        labels_text = os.path.join(args.output, name, "labels.txt")
        _write_labels(labels_text, labels)
    written = write_repository(args.output, name, data, config, options)
    print(f"wrote {plain(written.folder)}: {plain(source.name)} as {options.platform}, max batch "
          f"{options.max_batch}, {options.instances} instance(s){built}")
    for path in (written.config, written.model, labels_text):
        if path:
            print(f"  {plain(path)}")
    if checked is not None:
        from importlib.metadata import version

        print(f"config.pbtxt parses with Triton's model configuration schema (tritonclient {version('tritonclient')})")
    return 0


def _write_labels(path: str, labels: list[str]) -> None:
    from ..files import atomic_open, write_errors

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with write_errors(path), atomic_open(path, "w") as f:
        f.write("".join(label + "\n" for label in labels))


def register(sub) -> None:
    p = sub.add_parser("export", help="export a model for a serving stack (triton)")
    targets = p.add_subparsers(dest="target", metavar="TARGET")
    targets.required = True
    t = targets.add_parser("triton", help="write a Triton Inference Server model repository")
    t.add_argument("model", help="a .net source file or a compiled .onnx model")
    t.add_argument("--network", metavar="NAME", help="the network to use when a .net file holds several")
    t.add_argument("--arg", action="append", metavar="NAME=VALUE", help="override a network parameter (repeatable)")
    t.add_argument("--seed", type=int, default=0, help="weight-initialisation seed for .net models (default 0)")
    add_weight_options(t)
    t.add_argument("-o", "--output", required=True, metavar="REPO", help="the model repository folder (created)")
    t.add_argument("--name", help="the model's name in the repository (default: the network's name for a .net, "
                                  "the file's name for an .onnx)")
    t.add_argument("--platform", default="onnxruntime_onnx", choices=("onnxruntime_onnx", "tensorrt_plan"),
                   help="Triton backend: ONNX Runtime (model.onnx) or TensorRT (model.plan, built here)")
    t.add_argument("--max-batch", type=int, default=8, metavar="B",
                   help="max_batch_size: the largest batch Triton forms (default 8; 0: the model's full shapes, "
                        "no batching by Triton)")
    t.add_argument("--instances", type=int, default=1, metavar="N", help="model instances (default 1)")
    t.add_argument("--kind", default="auto", choices=("auto", "cpu", "gpu"),
                   help="where instances run (default auto: GPUs when the server has them)")
    t.add_argument("--no-dynamic-batching", action="store_true", help="no dynamic batcher")
    t.add_argument("--batch-delay-us", type=int, default=100, metavar="US",
                   help="dynamic batching: the longest a request waits for others (default 100 microseconds)")
    t.add_argument("--preferred-batch", metavar="B[,B...]", help="dynamic batching: preferred batch sizes")
    t.add_argument("--trt-accelerator", choices=("fp32", "fp16"),
                   help="onnxruntime_onnx on GPUs: run through ONNX Runtime's TensorRT accelerator at this precision, "
                        "with its engine cache enabled")
    t.add_argument("--trt-cache-path", metavar="DIR",
                   help="where that accelerator caches engines on the server (default /tmp/triton-trt-cache/NAME)")
    t.add_argument("--labels", metavar="FILE", help="class labels (one per line) for the first output")
    t.add_argument("--version", type=int, default=1, metavar="N", help="the model version folder (default 1)")
    t.set_defaults(func=cmd_export_triton)

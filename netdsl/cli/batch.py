"""`netdsl batch`: score a folder, glob, list, .npy or parquet of inputs with a model on Ray Data, writing parquet.

The model is compiled once, here on the driver; Ray actors (``--actors``, each with ``--cpus-per-actor`` CPUs,
which are also ONNX Runtime's threads, and ``--gpus-per-actor`` GPUs) run it. See :mod:`netdsl.distributed`.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import UsageError
from ..text import plain
from .common import add_weight_options, compile_model, sigterm_as_interrupt


def cmd_batch(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..session import model_source
    from .run import read_labels

    if args.actors < 1:
        raise UsageError("--actors must be at least 1")
    if args.cpus_per_actor <= 0:
        raise UsageError("--cpus-per-actor must be positive")
    if args.gpus_per_actor is not None and args.gpus_per_actor < 0:
        raise UsageError("--gpus-per-actor must not be negative")
    if args.batch < 1:
        raise UsageError("--batch must be at least 1")
    if args.topk is not None and args.topk < 1:
        raise UsageError("--topk must be at least 1")
    gpus = args.gpus_per_actor
    if gpus is None:
        gpus = 0.0 if args.device == "cpu" else 1.0
    elif gpus > 0 and args.device == "cpu":
        raise UsageError("--gpus-per-actor needs --device cuda or tensorrt")
    elif gpus == 0 and args.device != "cpu":
        raise UsageError(f"--device {plain(args.device, 40)} needs --gpus-per-actor above 0")
    if any(os.path.realpath(args.output) == os.path.realpath(p)
           for p in (args.model, args.input, args.weights, args.labels) if p):
        raise UsageError(f"--output {plain(args.output, 200)}: that is an input of the command")
    distributed.check_destination(args.output)
    labels = read_labels(args.labels)
    inputs = distributed.list_inputs(args.input)
    model, _, options = compile_model(args)  # a .net compiled once, here
    source = model_source(model)
    topk = 0 if args.raw else (args.topk or 5)
    distributed.check_batch_model(source, topk)
    started = distributed.connect(args.ray)
    sigterm_as_interrupt()  # Ray replaced the command's handler
    try:
        result = distributed.run_batch(source, inputs, args.output, distributed.BatchOptions(
            actors=args.actors, cpus=args.cpus_per_actor, gpus=gpus, batch=args.batch,
            topk=topk, labels=labels, engine=args.engine, device=args.device,
            opt_level=args.opt_level, precision=options["dtype"]))
    finally:
        if started:
            distributed.ray_module().shutdown()
    rate = result.rows / result.seconds if result.seconds > 0 else 0.0
    print(f"netdsl batch: {result.rows} inputs ({result.rows - result.errors} scored, {result.errors} unreadable: "
          f"see the `error` column) in {result.seconds:.1f} s, {rate:.1f} inputs/s with {args.actors} actor(s); "
          f"wrote {plain(args.output, 200)}", file=sys.stderr)
    if result.duplicates or (result.expected is not None and result.expected != result.rows):
        print(f"netdsl: error: the output holds {result.rows} rows ({result.duplicates} repeated) for "
              f"{result.expected} inputs", file=sys.stderr)
        return 1
    return 0


def register(sub) -> None:
    p = sub.add_parser("batch", help="score many inputs on Ray Data (a local Ray instance or a cluster) into parquet")
    p.add_argument("model", help="a .net source file (compiled once, here) or a compiled .onnx model")
    p.add_argument("--input", required=True, metavar="SRC",
                   help="a folder of images (searched recursively), a glob (** recurses), a text file listing "
                        "image paths, an .npy array, or parquet (a `path` column, and arrays under the input's "
                        "name or else image paths)")
    p.add_argument("--output", required=True, metavar="DEST",
                   help="a folder of parquet files: one row per input (path, error, top-k or raw outputs)")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="join a Ray cluster: auto (the one `ray start --head` started here) or ray://host:port; "
                        "default: start a local Ray instance sized to this machine")
    p.add_argument("--actors", type=int, default=1, metavar="N", help="model actors (default 1)")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, metavar="C",
                   help="CPUs Ray reserves for each actor, and its inference threads (default 1)")
    p.add_argument("--gpus-per-actor", type=float, metavar="G",
                   help="GPUs for each actor, e.g. 0.5 to share one between two (default: 1 with --device cuda or "
                        "tensorrt, else 0)")
    p.add_argument("--batch", type=int, default=32, metavar="B", help="inputs per model call (default 32)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--topk", type=int, metavar="K", help="write each input's K best classes (default 5)")
    what.add_argument("--raw", action="store_true", help="write every output (flattened) instead of top-k")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line (adds a `label` column)")
    p.add_argument("--network", metavar="NAME", help="the network to use when a .net file holds several")
    p.add_argument("--arg", action="append", metavar="NAME=VALUE", help="override a network parameter (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="weight-initialisation seed for .net models (default 0)")
    p.add_argument("--engine", default="ort", help="execution engine: ort (ONNX Runtime) or trt (TensorRT)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or tensorrt (ONNX Runtime's TensorRT provider)")
    p.add_argument("--opt-level", default="all", choices=("disable", "basic", "extended", "all"),
                   help="ONNX Runtime graph optimisation level (default all)")
    add_weight_options(p)
    p.set_defaults(func=cmd_batch)

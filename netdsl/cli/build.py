"""`netdsl build`: build (or fetch from the cache) a TensorRT engine and write its plan file.

With TensorRT for RTX this needs no GPU: the engine is portable and specialised on first use.
Datacenter TensorRT builds for the GPU present.
"""

from __future__ import annotations

import argparse

from ..errors import UsageError
from ..text import plain
from .common import add_model_options, check_outputs, compile_model, default_output, safe_file_name


def cmd_build(args: argparse.Namespace) -> int:
    import time

    from ..engines import EngineOptions
    from ..engines.trt import build, parse_profile
    from ..files import output_directory, write_bytes
    from ..session import model_source

    if args.engine != "trt":
        raise UsageError("netdsl build makes TensorRT engines: --engine trt")
    profile = parse_profile(args.batch, args.opt_batch)
    if args.output:
        output_directory(args.output)  # before compiling and building, not after
        check_outputs(args, {"-o": args.output})
    start = time.perf_counter()
    model, weights, compile_options = compile_model(args)
    source = model_source(model, seed=args.seed, weights=weights, compile_options=compile_options)
    compile_seconds = time.perf_counter() - start
    options = EngineOptions(precision=compile_options["dtype"], batch_range=(profile.min, profile.opt, profile.max),
                            cache_dir=args.cache_dir, progress=True)
    plan = build(source, options)
    # the default is named after the file the user gave (a .net: its network, an identifier), never after a
    # name inside a model, which could be a path ("../victim/prod")
    out = args.output or (default_output(args.model, ".plan") if args.model.endswith(".onnx")
                          else safe_file_name(source.name) + ".plan")
    write_bytes(out, plan.data)
    how = "from the cache" if plan.cached else f"built in {plan.build_seconds:.1f} s"
    print(f"wrote {plain(out)}: {source.name}, {options.precision}, batch {profile}, {plan.trt}, target {plan.target} "
          f"({how}; compile {compile_seconds:.2f} s)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("build", help="build a TensorRT engine (cached) and write its .plan file")
    add_model_options(p, engine=False)
    p.add_argument("--engine", default="trt", help="trt (the only engine that builds plans)")
    p.add_argument("--batch", metavar="MIN..MAX", help="dynamic batch range of the engine (default 1..32)")
    p.add_argument("--opt-batch", type=int, metavar="N", help="batch size TensorRT tunes for (default MAX)")
    p.add_argument("--cache-dir", metavar="DIR", help="engine cache (default $NETDSL_CACHE_DIR or ~/.cache/netdsl)")
    p.add_argument("-o", "--output", metavar="PATH",
                   help="plan file to write (default: <network>.plan for a .net file, the .onnx file's name with "
                        ".plan for a model; in the current folder)")
    p.set_defaults(func=cmd_build)

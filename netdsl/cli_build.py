"""`netdsl build`: build (or fetch from the cache) a TensorRT engine and write its plan file."""

from __future__ import annotations

import argparse

from .errors import UsageError


def cmd_build(args: argparse.Namespace) -> int:
    from .cli_runtime import open_session
    from .engines.trt import parse_profile
    from .files import write_bytes

    if args.engine != "trt":
        raise UsageError("netdsl build makes TensorRT engines: --engine trt")
    profile = parse_profile(args.batch, args.opt_batch)
    session = open_session(args, engine="trt", device="cuda",
                           batch_range=(profile.min, profile.opt, profile.max), precision=args.dtype,
                           cache_dir=args.cache_dir, progress=True)
    info = session.describe()
    out = args.output or f"{session.name}.plan"
    write_bytes(out, session.runner.plan)
    how = "from the cache" if info["cached"] else f"built in {info['build_seconds']:.1f} s"
    print(f"wrote {out}: {session.name}, {args.dtype}, batch {profile}, TensorRT {info['engine_version']} on "
          f"{info['device_name']} ({how}; compile {session.compile_seconds:.2f} s)")
    return 0


def register(sub) -> None:
    from .cli_runtime import add_model_options

    p = sub.add_parser("build", help="build a TensorRT engine (cached) and write its .plan file")
    add_model_options(p, engine=False)
    p.add_argument("--engine", default="trt", help="trt (the only engine that builds plans)")
    p.add_argument("--batch", metavar="MIN..MAX", help="dynamic batch range of the engine (default 1..32)")
    p.add_argument("--opt-batch", type=int, metavar="N", help="batch size TensorRT tunes for (default MAX)")
    p.add_argument("--cache-dir", metavar="DIR", help="engine cache (default $NETDSL_CACHE_DIR or ~/.cache/netdsl)")
    p.add_argument("-o", "--output", metavar="PATH", help="plan file to write (default <network>.plan)")
    p.set_defaults(func=cmd_build)

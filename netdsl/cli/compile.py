"""`netdsl check`, `netdsl summary` and `netdsl compile`: the commands that need no engine (they start fast)."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import UsageError
from ..text import plain
from . import EXIT_OK
from .common import (
    add_network_options,
    add_weight_options,
    compilation,
    load_network,
    print_json,
    safe_file_name,
    use_color,
)


# ----------------------------------------------------------------------------- check / summary / compile
def cmd_check(args: argparse.Namespace) -> int:
    net = load_network(args)
    s = net.summary()
    if not args.quiet:
        print(f"{plain(net.path)}: ok: network {net.name}, {len(s.layers)} layers, {s.params:,} params, "
              f"{s.macs:,} MACs (conv+fc), {len(net.warnings)} warning(s)")
    return EXIT_OK


def cmd_summary(args: argparse.Namespace) -> int:
    net = load_network(args)
    s = net.summary()
    if args.depth is not None:
        if args.depth < 1:
            raise UsageError("--depth must be at least 1")
        s = s.rolled_up(args.depth)
    if args.json:
        print_json(s.to_json())
    else:
        from ..analysis import render_table

        width = None
        try:
            width = os.get_terminal_size().columns if sys.stdout.isatty() else 140
        except OSError:
            width = 140
        sys.stdout.write(render_table(s, color=use_color(sys.stdout), width=width))
    return EXIT_OK


def cmd_compile(args: argparse.Namespace) -> int:
    out = args.output

    def check(net) -> None:
        nonlocal out
        if args.seed < 0:
            raise UsageError("--seed must be a non-negative integer")
        out = args.output or safe_file_name(net.name) + ".onnx"  # a network name is an identifier
        if os.path.isdir(out):
            raise UsageError(f"-o {out}: is a directory; give the path of the .onnx file to write")
        from ..files import refuse_overwrite

        refuse_overwrite(out, (args.file, args.weights))

    c = compilation(args, check=check, cache=False, fold_bn=args.fold_bn)  # writes the user's file only
    net = c.network
    external = {"auto": "auto", "always": True, "never": False}[args.external_data]
    files = net.save(out, opset=args.opset, seed=c.seed, weights=c.weights, external_data=external, **c.options)
    if not args.quiet:
        s = net.summary()
        print(f"wrote {plain(' and '.join(files))}: network {net.name}, opset {args.opset}, {s.params:,} params")
    return EXIT_OK


def register(sub) -> None:
    from ..lower import DEFAULT_OPSET

    p = sub.add_parser("check", help="parse and check a .net file (diagnostics only)")
    add_network_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("summary", help="layer table: shapes, params, MACs, memory, receptive field")
    add_network_options(p)
    p.add_argument("--depth", type=int, metavar="N", help="roll rows up to the first N name components")
    p.add_argument("--json", action="store_true", help="print a machine-readable JSON object")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("compile", help="compile to an ONNX model")
    add_network_options(p)
    p.add_argument("-o", "--output", metavar="PATH", help="output path (default: <network>.onnx)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--seed", type=int, default=0, help="seed of the deterministic weight initialisation")
    p.add_argument("--external-data", choices=("auto", "always", "never"), default="auto",
                   help="store weights in <output>.<hash>.data beside the model (auto: only past the 2 GB "
                        "protobuf limit)")
    p.add_argument("--fold-bn", action="store_true", help="fold each bn into the conv before it (netdsl.optimize)")
    add_weight_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=cmd_compile)

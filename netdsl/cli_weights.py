"""Weight options shared by compile/run/bench/compare, and `netdsl weights list|export`."""

from __future__ import annotations

import argparse
import json
import sys

from .errors import UsageError


def add_weight_options(p: argparse.ArgumentParser, *, dtype: bool = True) -> None:
    p.add_argument("--weights", metavar="FILE",
                   help="trained weights: .safetensors (recommended), .npz, .onnx, or PyTorch .pt/.pth")
    p.add_argument("--weights-map", action="append", metavar="RULE", default=[],
                   help="rename checkpoint keys: strip:PREFIX, REGEX=>REPLACEMENT, or drop:REGEX to leave keys out "
                        "(repeatable, applied in order)")
    p.add_argument("--allow-missing", action="store_true",
                   help="accept a checkpoint that lacks some weights (they keep their seeded initial values)")
    if dtype:
        p.add_argument("--dtype", "--precision", dest="dtype", choices=("fp32", "fp16"), default="fp32",
                       help="precision of weights and compute (default fp32); fp16 makes an fp16 model, which is "
                            "also how TensorRT engines get fp16 (TensorRT 11 is strongly typed)")
        p.add_argument("--fp32-io", action="store_true",
                       help="with --dtype fp16: keep the model's inputs and outputs fp32")


def resolve_weights(net, args: argparse.Namespace):
    """The weights the options ask for (None: the seeded initialisation). Prints warnings to stderr."""
    if getattr(args, "weights_map", None) and not args.weights:
        raise UsageError("--weights-map needs --weights")
    if not getattr(args, "weights", None):
        if getattr(args, "allow_missing", False):
            raise UsageError("--allow-missing needs --weights")
        return None
    from .checkpoint import load_weights

    result = load_weights(net.graph, args.weights, rules=tuple(args.weights_map), allow_missing=args.allow_missing,
                          seed=args.seed)
    if result.missing:
        more = len(result.missing) - 8
        print(f"netdsl: warning: {args.weights} lacks {len(result.missing)} weight(s), initialised from seed "
              f"{args.seed}: " + ", ".join(result.missing[:8]) + (f" (and {more} more)" if more > 0 else ""),
              file=sys.stderr)
    return result.weights


def dtype_options(args: argparse.Namespace) -> dict:
    dtype = getattr(args, "dtype", "fp32")
    if getattr(args, "fp32_io", False) and dtype != "fp16":
        raise UsageError("--fp32-io only applies with --dtype fp16")
    return {"dtype": dtype, "keep_io_fp32": bool(getattr(args, "fp32_io", False))}


def report_fp16(net, weights, args: argparse.Namespace) -> None:
    """With --dtype fp16: warn, at its source location, about every layer whose weights overflow or underflow
    float16 (:func:`netdsl.precision.fp16_report`)."""
    if getattr(args, "dtype", "fp32") != "fp16":
        return
    from .cli import print_diagnostics
    from .errors import Diagnostic
    from .precision import FP16_MAX, fp16_report

    values = weights if weights is not None else net.initial_weights(args.seed)
    owners = {name: node for name, _, node in net.graph.weight_specs()}
    warnings = []
    for issue in fp16_report(values):
        what = []
        if issue.overflow:
            what.append(f"{issue.overflow} value(s) overflow to inf (max |x| = {issue.max_abs:.3g} > {FP16_MAX:g})")
        if issue.underflow:
            what.append(f"{issue.underflow} of {issue.nonzero} non-zero value(s) underflow to 0 (|x| < 2^-24)")
        node = owners.get(issue.weight)
        layer = f" of {node.op.name} `{node.name}`" if node is not None else ""
        warnings.append(Diagnostic("warning", f"fp16: `{issue.weight}`{layer}: " + "; ".join(what),
                                   node.span if node is not None else None, node.trace[:1] if node else ()))
    print_diagnostics(warnings)


# ----------------------------------------------------------------------------- netdsl weights ...
def cmd_list(args: argparse.Namespace) -> int:
    from .cli import load_network

    net = load_network(args)
    rows = net.weight_table()
    if args.json:
        print(json.dumps({"network": net.name, "weights": rows}, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"weights of network {net.name}", title_justify="left")
    for col in ("name", "shape", "dtype", "kind", "source"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], "x".join(map(str, r["shape"])), r["dtype"], r["kind"], r["location"])
    Console(highlight=False, width=160 if not sys.stdout.isatty() else None).print(table)
    params = sum(1 for r in rows if r["kind"] == "param")
    print(f"{len(rows)} tensors ({params} parameters, {len(rows) - params} buffers)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .checkpoint import write_checkpoint
    from .cli import load_network
    from .files import refuse_overwrite

    refuse_overwrite(args.output, (args.file, args.weights))
    net = load_network(args)
    weights = resolve_weights(net, args)
    if weights is None:
        weights = net.initial_weights(args.seed)
    write_checkpoint(args.output, weights)
    print(f"wrote {args.output}: {len(weights)} tensors of network {net.name}")
    return 0


def register(sub) -> None:
    from .cli import add_network_options

    p = sub.add_parser("weights", help="list the weights a network expects, or export them")
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    wsub.required = True
    q = wsub.add_parser("list", help="expected weight names, shapes, dtypes and source locations")
    add_network_options(q)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_list)
    q = wsub.add_parser("export", help="write the network's weights (seeded init, or converted --weights)")
    add_network_options(q)
    q.add_argument("-o", "--output", required=True, metavar="FILE", help="output .safetensors or .npz")
    q.add_argument("--seed", type=int, default=0, help="seed of the initialisation (default 0)")
    add_weight_options(q, dtype=False)
    q.set_defaults(func=cmd_export)

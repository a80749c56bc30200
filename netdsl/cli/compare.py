"""`netdsl compare`: run one network on the same inputs on several engine:device pairs and check they agree.

    netdsl compare networks/resnet50.net --engines ort:cpu,ort:cuda,trt:cuda --atol 1e-4 --rtol 1e-3
    netdsl compare model.onnx --engines ort:cpu,ort:cpu+opt=disable,ort:cpu+fp16 --per-layer

Polygraphy-style. The first pair is the reference; every other pair is checked output by output:
an element passes when ``|a - b| <= atol + rtol * |b|`` (``b`` the reference; NaN agrees only with NaN,
an infinity only with the same infinity). Unless ``--atol``/``--rtol`` are given, the tolerances follow the
lower precision of the two pairs (:func:`netdsl.agreement.default_tolerance`; ``+fp16`` or a TensorRT
``precision=fp16``): atol relative to each tensor's largest reference magnitude, and the table says which
were applied. Exit 0 when every output of every pair passes, 1 when one
fails or an engine is unavailable.

A pair may carry ``+`` options: ``opt=LEVEL`` and ``threads=N`` (engine options), ``precision=P``
(TensorRT's build precision), and two compile-time variants of the model, ``fold-bn``
(:func:`netdsl.optimize.fold_batchnorm`) and ``fp16`` (:func:`netdsl.precision.to_fp16`, inputs and
outputs kept fp32 so every pair takes the same feeds). Two configurations of one CPU engine can so be
compared, e.g. ``ort:cpu,ort:cpu+fp16``.

``--per-layer`` also returns every named intermediate tensor (``EngineOptions.extra_outputs``) and reports,
for each pair, the first tensor in the reference's graph order that fails the tolerance, with the node
that writes it and its ``.net`` source location. Only tensors present in both models are compared (a
folded conv's own output no longer exists, for instance). The exit status still depends on the model's
outputs alone: an intermediate divergence that does not reach them is reported, not failed.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import numpy as np

from ..agreement import (
    UNIT_ROUNDOFF,
    agreement,
    default_tolerance,
    dims,
    first_divergence,
    intermediate_tensors,
    lowest_precision,
)
from ..errors import EngineError, UsageError
from ..text import plain, rich_safe
from .common import add_model_options, compilation, dtype_options, int8_model, print_json

ENGINE_OPTIONS = ("opt", "threads", "precision")
VARIANTS = ("fold-bn", "fp16")


@dataclass(frozen=True)
class Target:
    """One ``engine:device[+option...]`` entry of ``--engines``."""

    label: str
    engine: str
    device: str
    opt_level: str | None = None
    threads: int | None = None
    precision: str | None = None
    fold_bn: bool = False
    fp16: bool = False

    @property
    def numeric_precision(self) -> str:
        """The precision this pair computes in, as far as tolerances go (unknown build precisions: fp32)."""
        if self.fp16:
            return "fp16"
        return self.precision if self.precision in UNIT_ROUNDOFF else "fp32"


def parse_targets(text: str) -> list[Target]:
    """Parse ``--engines``; raises UsageError naming the bad entry."""
    from ..engines import ENGINES
    from ..engines.ort import OPT_LEVELS

    targets = []
    for label in (t.strip() for t in text.split(",")):
        if not label:
            raise UsageError(f"--engines {text!r}: empty entry; expected e.g. ort:cpu,ort:cuda")
        head, *options = label.split("+")
        engine, _, device = head.partition(":")
        if engine not in ENGINES:
            raise UsageError(f"--engines: unknown engine `{engine}` in `{label}`; choose one of: "
                             + ", ".join(ENGINES))
        device = device or ENGINES[engine][2][0]
        if device not in ENGINES[engine][2]:
            raise UsageError(f"--engines: engine `{engine}` runs on {', '.join(ENGINES[engine][2])}; "
                             f"got `{device}` in `{label}`")
        fields: dict = {}
        for opt in options:
            key, sep, value = opt.partition("=")
            if key in VARIANTS and not sep:
                fields[key.replace("-", "_")] = True
            elif key == "opt" and value in OPT_LEVELS:
                fields["opt_level"] = value
            elif key == "threads" and value.isdigit() and int(value) > 0:
                fields["threads"] = int(value)
            elif key == "precision" and value:
                fields["precision"] = value
            else:
                raise UsageError(f"--engines: bad option `+{opt}` in `{label}`; options: opt=" + "|".join(OPT_LEVELS)
                                 + ", threads=N, precision=P, fold-bn, fp16")
        if engine == "ort" and fields.get("precision", "fp32") not in ("fp32", "int8"):
            raise UsageError(f"--engines `{label}`: ONNX Runtime runs the model's own precision; "
                             f"use `+fp16` to compare an fp16 compilation of the model")
        targets.append(Target(label, engine, device, **fields))
    if len(targets) < 2:
        raise UsageError("--engines needs at least two engine:device pairs (the first is the reference)")
    return targets


def tolerance(text: str) -> float:
    """A tolerance: a finite number, zero or more (argparse type). NaN would make every comparison fail,
    an infinity every one pass."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number, zero or more; got {text!r}")
    return value


# ----------------------------------------------------------------------------- models
def base_model(args: argparse.Namespace):
    """The ONNX model every pair starts from: a .net compiled with the common options, or a .onnx file."""
    if args.model.endswith(".onnx"):
        if dtype_options(args)["dtype"] == "int8" and not args.weights:
            return int8_model(args)
        if dtype_options(args)["dtype"] != "fp32" or args.weights:
            raise UsageError("--weights and --dtype apply when compiling a .net file, not to a compiled .onnx model")
        from ..session import load_onnx

        return load_onnx(args.model)
    if dtype_options(args)["dtype"] == "int8":
        return int8_model(args)
    return compilation(args, args.model).to_onnx()


def variant(model, target: Target, calibrate="random"):
    """The model as ``target`` compiles it (fold-bn, then fp16, inputs and outputs kept fp32; precision=int8:
    quantized with ``calibrate`` data, see :mod:`netdsl.quantize`)."""
    from ..optimize import optimize
    from ..quantize import is_quantized, quantize

    if target.precision == "int8" and not is_quantized(model):
        return quantize(model, calibrate, target="trt" if target.engine == "trt" else "ort-cpu", report=False).model

    return optimize(model, fold_bn=target.fold_bn, fp16=target.fp16, keep_io_fp32=True)


def prepare(model, target: Target, args: argparse.Namespace, extra: tuple[str, ...]):
    """A Session for ``target``; an engine that cannot run says so, naming the pair."""
    from ..engines import ENGINES
    from ..session import Session

    try:
        return Session(model, engine=target.engine, device=target.device,
                       threads=target.threads or args.threads, opt_level=target.opt_level or args.opt_level,
                       precision=target.precision or "fp32", extra_outputs=extra)
    except ModuleNotFoundError as e:
        if e.name != ENGINES[target.engine][0]:
            raise
        raise EngineError(f"{target.label}: the {ENGINES[target.engine][3]} engine is not part of this netdsl "
                          "installation") from None
    except EngineError as e:
        raise EngineError(f"{target.label}: {e.diagnostics[0].message}") from None


# ----------------------------------------------------------------------------- command
def cmd_compare(args: argparse.Namespace) -> int:
    if args.batch is not None and args.batch < 1:
        raise UsageError("--batch must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    if args.save_optimized:
        raise UsageError("--save-optimized applies to one engine; use `netdsl run` for it")
    targets = parse_targets(args.engines)
    base = base_model(args)
    models = [variant(base, t, args.calibrate) for t in targets]
    sessions = [prepare(m, t, args, intermediate_tensors(m) if args.per_layer else ())
                for m, t in zip(models, targets, strict=True)]
    ref = sessions[0]
    feeds = read_inputs_for(ref, args)
    results = [s.run(feeds) for s in sessions]
    report = build_report(targets, models, sessions, feeds, results, args)
    if args.json:
        print_json(report)
    else:
        print_report(report)
    return 0 if report["pass"] else 1


def read_inputs_for(session, args: argparse.Namespace) -> dict[str, np.ndarray]:
    from .run import read_inputs

    return read_inputs(session, args.input, args.batch, args.seed)


def build_report(targets, models, sessions, feeds, results, args) -> dict:
    """The JSON report (see docs/runtime.md, "netdsl compare"); names in it are the model's own."""
    ref_model, ref_out = models[0], results[0]
    outputs = [o.name for o in ref_model.graph.output]
    order = intermediate_tensors(ref_model)
    producer = {out: node for node in ref_model.graph.node for out in node.output}
    report = {"model": sessions[0].name, "reference": targets[0].label, "atol": args.atol, "rtol": args.rtol,
              "per_layer": bool(args.per_layer),
              "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in feeds.items()},
              "input_source": "files" if args.input else f"random, seed {args.seed}",
              "engines": [], "comparisons": []}
    for t, s in zip(targets, sessions, strict=True):
        report["engines"].append({"label": t.label, "engine": t.engine, "device": t.device,
                                  "variants": [v for v in VARIANTS if getattr(t, v.replace("-", "_"))],
                                  "prepare_seconds": s.prepare_seconds, **s.describe()})
    all_pass = True
    for t, s, res in zip(targets[1:], sessions[1:], results[1:], strict=True):
        tol = default_tolerance(lowest_precision(targets[0].numeric_precision, t.numeric_precision),
                                args.atol, args.rtol)
        comp = {"engine": t.label, "reference": targets[0].label, "tolerance": tol.to_json(), "outputs": {}}
        for name in outputs:
            if name not in res:
                comp["outputs"][name] = {"pass": False, "note": f"{t.label} has no output `{name}`"}
                continue
            comp["outputs"][name] = agreement(res[name], ref_out[name], tol).to_json()
        comp["pass"] = all(o["pass"] for o in comp["outputs"].values())
        all_pass &= comp["pass"]
        if args.per_layer:
            compared, name, a = first_divergence(order, res, ref_out, tol)
            first = None
            if name is not None:
                node = producer[name]
                where = sessions[0].source.net_locations.get(name) or s.source.net_locations.get(name)
                first = {"tensor": name, "node": node.name, "op": node.op_type, "location": where, **a.to_json()}
            comp["per_layer"] = {"compared": compared, "first_divergence": first}
            silent = [lb for lb, r in ((targets[0].label, ref_out), (t.label, res)) if not any(n in r for n in order)]
            if order and silent:
                comp["per_layer"]["note"] = (f"{silent[0]} returned no intermediate tensors (its engine ignores "
                                             "EngineOptions.extra_outputs)")
        report["comparisons"].append(comp)
    report["pass"] = all_pass
    return report


def print_report(report: dict) -> None:
    """The report as text; names from the model (its name, inputs, outputs, tensors) are shown literally."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    inputs = ", ".join(f"{rich_safe(k)} {dims(v['shape'])} {v['dtype']}" for k, v in report["inputs"].items())
    console.print(f"{rich_safe(report['model'])}: inputs {inputs} ({report['input_source']}); "
                  f"reference {report['reference']}")
    for e in report["engines"]:
        console.print(f"  {rich_safe(e['label'])}: {e['engine']} {e.get('engine_version', '')} on "
                      f"{rich_safe(e.get('device_name', '?'))}, "
                      f"opt {e.get('opt_level', '-')}, {e.get('threads', '-')} threads, "
                      f"prepared in {e['prepare_seconds'] * 1000:.0f} ms")
    for comp in report["comparisons"]:
        title = f"{rich_safe(comp['engine'])} vs {rich_safe(comp['reference'])}: {_rule(comp['tolerance'])}"
        table = Table(title=title, title_justify="left")
        for col, justify in (("output", "left"), ("shape", "left"), ("max abs", "right"), ("max rel", "right"),
                             ("atol", "right"), ("mismatched", "right"), ("result", "left")):
            table.add_column(col, justify=justify)
        for name, o in comp["outputs"].items():
            if "max_abs" not in o:
                table.add_row(rich_safe(name), "", "", "", "", "", "[red]FAIL[/red] " + rich_safe(o["note"]))
                continue
            verdict = "[green]pass[/green]" if o["pass"] else "[red]FAIL[/red]"
            note = " " + rich_safe(o["note"]) if "note" in o else ""
            table.add_row(rich_safe(name), dims(o["shape"]), _fmt(o["max_abs"]), _fmt(o["max_rel"]),
                          _fmt(o["atol"]), f"{o['mismatched']}/{o['size']}", verdict + note)
        console.print(table)
        if "per_layer" in comp:
            pl = comp["per_layer"]
            first = pl["first_divergence"]
            if "note" in pl:
                console.print(f"per layer: nothing compared: {rich_safe(pl['note'])}")
            elif first is None:
                console.print(f"per layer: all {pl['compared']} intermediate tensors agree")
            else:
                message = (f"first divergence: tensor `{first['tensor']}` (node {first['node']}, {first['op']}): "
                           f"max abs {_fmt(first['max_abs'])}, max rel {_fmt(first['max_rel'])}, "
                           f"{first['mismatched']}/{first['size']} elements outside tolerance "
                           f"({pl['compared']} tensors compared)")
                console.print(_quote(first["location"], message), markup=False)
    failed = sum(not c["pass"] for c in report["comparisons"])
    if failed:
        console.print(f"[red]FAIL[/red]: {failed} of {len(report['comparisons'])} comparisons disagree")
    else:
        console.print(f"[green]PASS[/green]: all {len(report['comparisons'])} comparisons agree")


def _quote(location: str | None, message: str) -> str:
    """``message`` as a note at a ``path:line:col`` location, quoting the source line when it can be read."""
    from ..errors import Diagnostic, SourceFile, Span

    path, _, rest = (location or "").rpartition(":")
    path, _, line = path.rpartition(":")
    if not (path and line.isdigit() and rest.isdigit()):
        return plain(f"per layer: {message}" + (f" ({location})" if location else " (no .net location)"))
    span = Span(SourceFile.read(path) or path, int(line), int(rest), int(line), int(rest) + 1)
    return Diagnostic("note", message, span).render()


def _rule(tol: dict) -> str:
    """How a comparison's tolerances were chosen, in words."""
    if tol["precision"] == "explicit":
        return f"atol {tol['atol']:g}, rtol {tol['rtol']:g} (given)"
    atol = f"{tol['atol']:g}" if tol["atol"] is not None else f"{tol['atol_range']:g} x max|reference|"
    given = " (rtol given)" if tol["rtol"] != default_tolerance(tol["precision"]).rtol else ""
    return f"{tol['precision']} tolerances: atol {atol}, rtol {tol['rtol']:g}{given}"


def _fmt(x) -> str:
    return x if isinstance(x, str) else f"{x:.3g}"


def register(sub) -> None:
    p = sub.add_parser("compare", help="run a network on several engine:device pairs and compare the outputs")
    add_model_options(p, engine=False)
    p.add_argument("--engines", required=True, metavar="LIST",
                   help="comma list of engine:device[+option...], the first being the reference, e.g. "
                        "ort:cpu,ort:cuda,trt:cuda or ort:cpu,ort:cpu+opt=disable,ort:cpu+fold-bn,ort:cpu+fp16 "
                        "(options: opt=LEVEL, threads=N, precision=P, fold-bn, fp16)")
    p.add_argument("--atol", type=tolerance, help="absolute tolerance (default: by the lower precision compared, "
                   "relative to each tensor's range; fp32: 1e-4 x max|reference|, fp16: 0.01 x max|reference|)")
    p.add_argument("--rtol", type=tolerance, help="relative tolerance (default: by the lower precision compared; "
                   "fp32: 1e-3, fp16: 0.01)")
    p.add_argument("--input", action="append", metavar="NAME=FILE",
                   help="an input: .npy, .npz, an image or a folder of images (repeatable); default: random")
    p.add_argument("--batch", type=int, metavar="N", help="batch size of the random input (default 1)")
    p.add_argument("--per-layer", action="store_true",
                   help="also compare every intermediate tensor and report the first that diverges")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_compare)

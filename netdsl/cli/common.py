"""What every command shares: diagnostics printing, the network/model/weight options, ``--arg`` parsing,
loading, and the one compile sequence (load, print warnings, resolve weights, report fp16, compile)."""

from __future__ import annotations

import argparse
import json
import math
import numbers
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import Diagnostic, UsageError
from ..text import plain

if TYPE_CHECKING:  # the compiler is imported when a command runs, not when its options are declared
    import numpy as np

    from ..network import Network


# ----------------------------------------------------------------------------- signals
def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM ends the command as Ctrl-C does: temporary files are removed, exit 130


def sigterm_as_interrupt() -> None:
    """Make SIGTERM end the command as Ctrl-C does: at start, and again after a library that installs its own
    handler (Ray, when it connects). Only the main thread may set handlers; elsewhere this does nothing."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)


# ----------------------------------------------------------------------------- output
def use_color(stream) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def print_diagnostics(diags, stream=None) -> None:
    stream = stream or sys.stderr
    color = use_color(stream)
    for d in diags:
        print(d.render(color), file=stream)


def _finite(value):
    """``value`` with every non-finite number (NaN, +-inf) replaced by None, tuples as lists."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, numbers.Real) and not isinstance(value, int):  # float, numpy floats
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def json_text(value, **options) -> str:
    """``value`` as the text of a ``--json`` report: strict JSON, in which a non-finite number (NaN, an
    infinity) is written as ``null`` (JSON has no NaN or Infinity). ``options`` go to ``json.dumps``."""
    return json.dumps(_finite(value), indent=1, allow_nan=False, **options)


def print_json(value, **options) -> None:
    print(json_text(value, **options))


# ----------------------------------------------------------------------------- output paths
_UNSAFE_IN_NAMES = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(stem: str, fallback: str = "model") -> str:
    """``stem`` made a plain file name for the current folder: runs of characters other than letters, digits,
    ``.``, ``_`` and ``-`` become ``_``, leading dots go (no hidden files, no ``..``), a leading ``-`` becomes
    ``_`` (not an option when the name is reused on a command line); ``fallback`` when nothing is left."""
    name = _UNSAFE_IN_NAMES.sub("_", stem).lstrip(".")[:100]
    if name.startswith("-"):
        name = "_" + name[1:]
    return name or fallback


def default_output(given: str | os.PathLike, suffix: str) -> str:
    """The default output of a command reading the file ``given``: its stem, sanitised
    (:func:`safe_file_name`), with ``suffix``, in the current folder. Never a name taken from inside the file."""
    return safe_file_name(Path(given).stem) + suffix


def model_inputs(args: argparse.Namespace) -> list[str]:
    """Every file or folder a runtime command reads: the model, --weights, --labels and --input files."""
    paths = [args.model, getattr(args, "weights", None), getattr(args, "labels", None)]
    for spec in getattr(args, "input", None) or ():
        _, sep, value = spec.partition("=")
        for part in {spec, value} if sep else {spec}:
            paths.extend(part.split(","))
    return [p for p in paths if p]


def check_outputs(args: argparse.Namespace, outputs: dict[str, str | None]) -> None:
    """Before any work: no output (``{option: path}``) may be an input of the command (UsageError), two options
    may not name one file, and each output must be writable as far as can be told in advance (OutputError:
    a folder, a missing folder, a special file that cannot be written)."""
    given = {option: path for option, path in outputs.items() if path}
    if not given:
        return
    from ..files import OutputError, check_output, refuse_overwrite

    inputs = model_inputs(args)
    folders = [p for p in inputs if os.path.isdir(p)]  # of images: the files in them are inputs too
    for option, path in given.items():
        inside = [os.path.join(f, os.path.basename(path)) for f in folders]
        refuse_overwrite(path, inputs + [f for f in inside if os.path.isfile(f)], option)
        for other, other_path in given.items():
            if other != option and os.path.realpath(other_path) == os.path.realpath(path):
                raise UsageError(f"{option} {path}: {other} writes that file too")
        try:
            check_output(path)
        except OutputError as e:
            raise OutputError(f"{option} {e.diagnostics[0].message}") from None


# ----------------------------------------------------------------------------- options
def parse_args_kv(items: list[str] | None) -> dict[str, int | float]:
    """``--arg classes=10`` values as numbers."""
    from ..limits import MAX_LITERAL_DIGITS

    out: dict[str, int | float] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"--arg expects NAME=VALUE, got {plain(repr(item), 80)}")
        shown = plain(repr(value), 80)
        digits = value.strip().lstrip("+-").replace("_", "")
        if digits.isdigit() and digits.isascii():  # checked before int(): Python refuses over 4,300 digits
            if len(digits) > MAX_LITERAL_DIGITS:
                raise UsageError(f"--arg {name}: an integer of {len(digits):,} digits is too large "
                                 f"(at most {MAX_LITERAL_DIGITS} digits)")
        try:
            out[name] = int(value)
            continue
        except ValueError:
            pass
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"--arg {name}: {shown} is not a number") from None
        if not math.isfinite(number):
            raise UsageError(f"--arg {name}: {shown} is not a finite number")
        out[name] = number
    return out


def add_network_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a .net source file")
    p.add_argument("--network", metavar="NAME", help="the network to use when the file holds several")
    p.add_argument("--arg", action="append", metavar="NAME=VALUE",
                   help="override a network parameter, e.g. --arg classes=10 (repeatable)")


def add_model_options(p: argparse.ArgumentParser, *, engine: bool = True) -> None:
    """The options of the runtime commands (run, bench, compare, build): a .net or .onnx model, engine, weights."""
    p.add_argument("model", help="a .net source file or a compiled .onnx model")
    p.add_argument("--network", metavar="NAME", help="the network to use when a .net file holds several")
    p.add_argument("--arg", action="append", metavar="NAME=VALUE", help="override a network parameter (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="weight-initialisation seed for .net models (default 0)")
    if engine:
        p.add_argument("--engine", default="ort", help="execution engine: ort (ONNX Runtime) or trt (TensorRT)")
        p.add_argument("--device", default="cpu", help="cpu, cuda, or tensorrt (ONNX Runtime's TensorRT provider)")
    p.add_argument("--threads", type=int, metavar="N", help="intra-op threads (default: the physical cores)")
    p.add_argument("--opt-level", default="all", choices=("disable", "basic", "extended", "all"),
                   help="ONNX Runtime graph optimisation level (default all)")
    p.add_argument("--save-optimized", metavar="PATH", help="write the runtime's optimised model to PATH")
    add_weight_options(p)


def add_weight_options(p: argparse.ArgumentParser, *, dtype: bool = True) -> None:
    p.add_argument("--weights", metavar="FILE",
                   help="trained weights: .safetensors (recommended), .npz, .onnx, or PyTorch .pt/.pth")
    p.add_argument("--weights-map", action="append", metavar="RULE", default=[],
                   help="rename checkpoint keys: strip:PREFIX, REGEX=>REPLACEMENT, or drop:REGEX to leave keys out "
                        "(repeatable, applied in order)")
    p.add_argument("--allow-missing", action="store_true",
                   help="accept a checkpoint that lacks some weights (they keep their seeded initial values)")
    if dtype:
        p.add_argument("--dtype", "--precision", dest="dtype", choices=("fp32", "fp16", "int8"), default="fp32",
                       help="precision of weights and compute (default fp32); fp16 makes an fp16 model, which is "
                            "also how TensorRT engines get fp16 (TensorRT 11 is strongly typed); int8 quantizes "
                            "(netdsl quantize) with --calibrate DATA")
        p.add_argument("--calibrate", metavar="DATA", default="random",
                       help="with --precision int8: calibration data (image folder, .npy, .npz; default random)")
        p.add_argument("--fp32-io", action="store_true",
                       help="with --dtype fp16: keep the model's inputs and outputs fp32")


def dtype_options(args: argparse.Namespace) -> dict:
    dtype = getattr(args, "dtype", "fp32")
    if getattr(args, "fp32_io", False) and dtype != "fp16":
        raise UsageError("--fp32-io only applies with --dtype fp16")
    return {"dtype": dtype, "keep_io_fp32": bool(getattr(args, "fp32_io", False))}


# ----------------------------------------------------------------------------- loading and compiling
def load_network(args: argparse.Namespace, path: str | None = None, *, quiet: bool = False) -> Network:
    """Load and check the network at ``path`` (default: the FILE argument); prints its warnings to stderr."""
    from ..network import load

    # FILE is always a path, never source text
    net = load(Path(args.file if path is None else path), network=args.network, args=parse_args_kv(args.arg))
    if not quiet:
        print_diagnostics(net.warnings)
    return net


def check_weight_options(args: argparse.Namespace) -> None:
    if getattr(args, "weights_map", None) and not args.weights:
        raise UsageError("--weights-map needs --weights")
    if getattr(args, "allow_missing", False) and not getattr(args, "weights", None):
        raise UsageError("--allow-missing needs --weights")


def resolve_weights(net: Network, args: argparse.Namespace) -> dict[str, np.ndarray] | None:
    """The weights the options ask for (None: the seeded initialisation). Prints warnings to stderr."""
    check_weight_options(args)
    if not getattr(args, "weights", None):
        return None
    from ..checkpoint import load_weights

    result = load_weights(net.graph, args.weights, rules=tuple(args.weights_map), allow_missing=args.allow_missing,
                          seed=args.seed)
    if result.missing:
        more = len(result.missing) - 8
        print(f"netdsl: warning: {plain(args.weights)} lacks {len(result.missing)} weight(s), initialised from seed "
              f"{args.seed}: " + ", ".join(result.missing[:8]) + (f" (and {more} more)" if more > 0 else ""),
              file=sys.stderr)
    return result.weights


def report_fp16(net: Network, weights, args: argparse.Namespace) -> None:
    """With --dtype fp16: warn, at its source location, about every layer whose weights overflow or underflow
    float16 (:func:`netdsl.precision.fp16_report`)."""
    if getattr(args, "dtype", "fp32") != "fp16":
        return
    from ..precision import FP16_MAX, fp16_report

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


@dataclass(frozen=True)
class Compilation:
    """A checked network with the weights and compile options the command line asked for.

    ``material``: its key in the compiled-model cache (:mod:`netdsl.cache`; None: not cached).
    ``cached``: the model found there, when it was; the source and weights were then not read (``network``
    and ``weights`` are None)
    and :meth:`to_onnx` and :meth:`model_source` return the cached model, byte for byte what a compile gives.
    """

    network: Network | None  # None: taken from the cache without loading the source
    weights: dict[str, np.ndarray] | None
    options: dict  # Network.to_onnx's dtype, keep_io_fp32, fold_bn
    seed: int
    material: dict | None = None
    cached: object | None = None  # a netdsl.engines.ModelSource
    messages: str = ""  # the warnings printed while the weights were resolved (recorded with the model)

    def to_onnx(self):
        if self.cached is not None:
            import onnx

            return onnx.load_from_string(self.cached.read_bytes())
        proto = self.network.to_onnx(seed=self.seed, weights=self.weights, **self.options)
        if self.material is not None:
            self._store(proto)
        return proto

    def model_source(self):
        """The compiled model for an engine (:class:`netdsl.engines.ModelSource`), cached by source."""
        if self.cached is not None:
            return self.cached
        return self._store(self.network.to_onnx(seed=self.seed, weights=self.weights, **self.options))

    def _store(self, proto):
        from ..cache import ModelCache
        from ..session import _from_proto

        data = proto.SerializeToString()
        source = _from_proto(proto, self.network.name, data=data)
        if self.material is not None:
            ModelCache().put(self.material, data, source, self.messages, files=self.network.files,
                             source_sha256=self.network.graph.source_hash)
        return source


class _Recorder:
    """stderr, also kept as text: the warnings of a compile, recorded with the cached model."""

    def __init__(self, stream):
        self.stream, self.parts = stream, []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()


def model_material(args: argparse.Namespace, path: str, options: dict) -> dict | None:
    """The compiled-model cache key of the .net at ``path`` as the options compile it, taken before it is
    loaded; None when it is not cached (NETDSL_CACHE=off, an unreadable file, weights in an .onnx file,
    whose tensors may live in other files)."""
    from .. import cache

    if not cache.enabled():
        return None
    weights = getattr(args, "weights", None)
    if weights and weights.endswith(".onnx"):
        return None
    main = os.path.realpath(path)
    main_sha256 = cache.file_sha256_or_none(main)
    weights_sha256 = cache.file_sha256_or_none(weights) if weights else None
    if main_sha256 is None or (weights and weights_sha256 is None):
        return None  # loading reports the problem
    from ..lower import DEFAULT_OPSET

    return cache.model_material(main=main, main_sha256=main_sha256, path=path, network=args.network,
                                args=parse_args_kv(args.arg), seed=args.seed, opset=DEFAULT_OPSET,
                                weights_sha256=weights_sha256,
                                weights_rules=tuple(getattr(args, "weights_map", None) or ()),
                                allow_missing=bool(getattr(args, "allow_missing", False)), **options)


def compilation(args: argparse.Namespace, path: str | None = None, *, check=None, cache: bool = True,
                **options) -> Compilation:
    """The one compile sequence of the command line: load the network (printing its warnings), run the
    command's own ``check(net)``, resolve --weights, report fp16 range problems. ``options`` add to
    --dtype/--fp32-io's (:func:`dtype_options`). With ``cache`` the compiled-model cache is consulted
    first: on a hit nothing is loaded or read (``network`` and ``weights`` are None) and the warnings
    recorded with the model are printed again."""
    path = args.file if path is None else path
    options = {**dtype_options(args), **options}
    check_weight_options(args)
    material = model_material(args, path, options) if cache else None
    if material is not None:
        from ..cache import ModelCache, replay

        hit = ModelCache().get(material)
        if hit is not None:
            replay(hit[1])
            return Compilation(None, None, options, args.seed, material, hit[0], hit[1])
    recorder = _Recorder(sys.stderr)
    sys.stderr = recorder
    try:
        net = load_network(args, path)
        if check is not None:
            check(net)
        weights = resolve_weights(net, args)
        report_fp16(net, weights, args)
    finally:
        sys.stderr = recorder.stream
    return Compilation(net, weights, options, args.seed, material, messages="".join(recorder.parts))


def compile_model(args: argparse.Namespace) -> tuple[object, object, dict]:
    """(model, weights, compile options) from the runtime options: a .net compiled (or taken from the
    compiled-model cache) to a ModelSource, or an ONNX model."""
    if dtype_options(args)["dtype"] == "int8":  # quantized here (an int8 .onnx is used as it is)
        return int8_model(args), None, dtype_options(args)
    if not args.model.endswith(".onnx"):
        extra = {"keep_io_fp32": True} if dtype_options(args)["dtype"] == "fp16" else {}
        # with fp16, images and .npy files arrive as fp32; casts sit in the model
        c = compilation(args, args.model, **extra)
        return c.model_source(), None, c.options
    options = dtype_options(args)
    if args.weights:
        raise UsageError("--weights applies when compiling a .net file, not to a compiled .onnx model")
    if options["dtype"] == "fp16":  # an fp32 .onnx (e.g. from torch.onnx.export) made fp16 here
        from ..optimize import optimize
        from ..session import load_onnx

        options["keep_io_fp32"] = True
        return optimize(load_onnx(args.model), fp16=True, keep_io_fp32=True), None, options
    return args.model, None, options


def int8_model(args: argparse.Namespace):
    """The model of a runtime command given ``--precision int8``: an int8 .onnx as it is, else the fp32 model
    quantized for the command's engine (``trt``: the trt target; :mod:`netdsl.quantize`) with ``--calibrate``
    data (a note on stderr when it is random)."""
    from ..quantize import RANDOM_NOTE, is_quantized, quantize
    from ..session import load_onnx

    if args.model.endswith(".onnx"):
        if args.weights:
            raise UsageError("--weights applies when compiling a .net file, not to a compiled .onnx model")
        model = load_onnx(args.model)
        if is_quantized(model):
            return model
    else:
        model = compilation(args, args.model, dtype="fp32").to_onnx()
    calibrate = getattr(args, "calibrate", None) or "random"
    if calibrate == "random":
        print(f"netdsl: note: --precision int8 calibrated on {RANDOM_NOTE}; give --calibrate DATA", file=sys.stderr)
    target = "trt" if getattr(args, "engine", "ort") == "trt" else "ort-cpu"
    return quantize(model, calibrate, target=target, seed=args.seed, report=False).model


def open_session(args: argparse.Namespace, engine: str | None = None, device: str | None = None, **extra):
    """A Session from the runtime options (compiles a .net in memory)."""
    from ..session import Session

    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    check_outputs(args, {"--save-optimized": args.save_optimized, "--save": getattr(args, "save", None)})
    start = time.perf_counter()
    model, weights, compile_options = compile_model(args)
    compiled = time.perf_counter() - start
    extra.setdefault("precision", compile_options["dtype"])
    session = Session(model, engine=engine or args.engine, device=device or args.device, threads=args.threads,
                   opt_level=args.opt_level, save_optimized=args.save_optimized, seed=args.seed, weights=weights,
                   compile_options=compile_options, **extra)
    session.compile_seconds += compiled  # loading, checking and compiling (or taking it from the cache)
    return session
